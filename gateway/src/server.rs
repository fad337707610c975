//! Accepting connections on each bind and serving HTTP/1.1 on them with the app's router.
//! A failing connection is logged inside its own task and never ends the accept loop.

use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::any;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::compress::compress;
use crate::forward::{forward, ConnInfo, Route};
use crate::static_files::serve_static;

/// The router of one app; built without a socket so tests could drive it directly. Static
/// files are answered before the forwarder; compression wraps both.
pub(crate) fn app_router(route: Arc<Route>) -> Router {
    Router::new()
        .fallback(any(forward))
        .layer(from_fn_with_state(route.clone(), serve_static))
        .layer(from_fn_with_state(route.clone(), compress))
        .with_state(route)
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    graceful: Arc<GracefulShutdown>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE: pause briefly rather than spin, then go on accepting.
                    tracing::warn!(addr = ?local, "accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            local: stream.local_addr().ok().or(local).unwrap_or(peer),
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(info);
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, "connection ended: {err}");
            }
        });
    }
}
