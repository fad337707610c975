//! The no-Python reference of `bench/run`: a bare axum server answering `Hello, World!` (13 bytes)
//! on every path, on a multi-threaded tokio runtime with 2 worker threads.
//!
//! Usage: `sluice-bench-hello [ADDR]` (default `127.0.0.1:8000`). It stops on SIGTERM or SIGINT
//! through the default signal actions; it holds no state worth draining.

use std::net::SocketAddr;

use axum::Router;

/// The same thread budget as the Python servers' two worker processes.
const RUNTIME_WORKER_THREADS: usize = 2;
const DEFAULT_ADDR: &str = "127.0.0.1:8000";

fn app() -> Router {
    Router::new().fallback(|| async { "Hello, World!" })
}

fn main() -> std::io::Result<()> {
    let arg = std::env::args().nth(1);
    let addr: SocketAddr = arg
        .as_deref()
        .unwrap_or(DEFAULT_ADDR)
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad address: {e}"),
            )
        })?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKER_THREADS)
        .enable_all()
        .build()?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("listening addr={}", listener.local_addr()?);
            axum::serve(listener, app()).await
        })
}
