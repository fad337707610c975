//! sluice's gateway: the `sluice` command. It takes HTTP connections, buffers request bodies,
//! and forwards framed requests over Unix sockets to the Python worker processes it supervises.
//!
//! Layout:
//! - [`config`]: the YAML route table and the one-app command line, both as a [`Config`].
//! - `server`: accept loops and HTTP/1.1 connections per bind.
//! - `forward`: the request path (body buffering, the worker exchange, streaming responses).
//! - `pool`: each app's live workers and its pool of worker connections (the queue).
//! - `supervisor`: worker processes: spawn, ready, respawn, stop; the lifecycle diagram.
//! - `error`: request errors and the one place they become responses.
//! - `shutdown`: which signal stops the gateway, and how.

pub mod config;
mod error;
mod forward;
mod pool;
mod server;
mod shutdown;
mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{AppConfig, Config, ConfigError};
pub use shutdown::Stop;

/// Serves `config` until a stop signal; returns once every worker has stopped.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let rundir = Arc::new(supervisor::RunDir::prepare()?);

    // Bind first: a taken port fails in milliseconds, before any Python starts.
    let mut listeners: Vec<Vec<TcpListener>> = Vec::new();
    for app in &config.apps {
        let mut bound = Vec::new();
        for addr in &app.binds {
            bound.push(
                bind(*addr)
                    .with_context(|| format!("app {}: cannot listen on {addr}", app.name))?,
            );
        }
        listeners.push(bound);
    }

    let stop = tokio::spawn(shutdown::wait_for_stop());
    let starting = futures_join_all(
        config
            .apps
            .iter()
            .enumerate()
            .map(|(index, app)| supervisor::start_app(app.clone(), index, rundir.clone())),
    );
    let results = tokio::select! {
        results = starting => results,
        _ = wait_stop_signal(stop) => {
            anyhow::bail!("stopped by a signal during start-up");
        }
    };
    let mut apps = Vec::new();
    let mut failure = None;
    for (app, result) in config.apps.iter().zip(results) {
        match result {
            Ok(handle) => apps.push(handle),
            Err(err) => {
                failure = failure.or(Some(anyhow::anyhow!(
                    "app {} failed to start: {err}",
                    app.name
                )))
            }
        }
    }
    if let Some(err) = failure {
        for app in apps {
            app.stop().await;
        }
        return Err(err);
    }

    let graceful = Arc::new(GracefulShutdown::new());
    let accepting = CancellationToken::new();
    let mut loops = Vec::new();
    for (app, bound) in apps.iter().zip(listeners) {
        let router = server::app_router(app.state.clone());
        for listener in bound {
            let addr = listener.local_addr()?;
            tracing::info!(app = %app.state.config.name, addr = %addr, "listening");
            loops.push(tokio::spawn(server::accept_loop(
                listener,
                app.state.config.name.clone(),
                router.clone(),
                graceful.clone(),
                accepting.clone(),
            )));
        }
    }

    let how = shutdown::wait_for_stop().await?;
    tracing::info!("stopping ({how:?})");
    accepting.cancel();
    for accept_loop in loops {
        let _ = accept_loop.await;
    }
    let graceful =
        Arc::try_unwrap(graceful).map_err(|_| anyhow::anyhow!("accept loops still running"))?;
    let wait = match how {
        Stop::Graceful => apps
            .iter()
            .map(|a| a.state.config.graceful_timeout)
            .max()
            .unwrap_or_default(),
        Stop::Immediate => Duration::ZERO,
    };
    if tokio::time::timeout(wait, graceful.shutdown())
        .await
        .is_err()
        && !wait.is_zero()
    {
        tracing::warn!("in-flight requests still running after {wait:?}; stopping anyway");
    }
    for app in apps {
        app.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_stop_signal(handle: tokio::task::JoinHandle<std::io::Result<Stop>>) {
    let _ = handle.await;
}

/// Awaits every future concurrently, keeping order (no extra crate for one call).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("start-up task panicked"));
    }
    out
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
