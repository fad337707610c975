//! Accepting connections on each bind and serving HTTP/1.1 on them with the app's router.
//! A failing connection is logged inside its own task and never ends the accept loop.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::forward::{forward, ConnInfo, Route};
use crate::framing::{Limits, Screen, Screened};
use crate::strict::StrictLayer;

/// hyper's own cap on header fields when none is configured; it answers 431 beyond it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The router of one app; built without a socket so tests could drive it directly.
pub(crate) fn app_router(route: Arc<Route>) -> Router {
    Router::new()
        .fallback(any(forward))
        .with_state(route)
        // Last, so that it wraps every route: no handler sees a request the checks refuse.
        .layer(StrictLayer)
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    route: Arc<Route>,
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
        // The limits of the app served now: a reload changes them for new connections.
        let limits = Limits::from(&route.load().config.edge);
        let screen = Arc::new(Screen::default());
        let stream = Screened::new(stream, limits, screen.clone());
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(info);
            request.extensions_mut().insert(screen.clone());
            router.clone().oneshot(request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The screen counts fields too, but hyper must not refuse first at its own default.
        // Left alone below that: an explicit cap moves hyper's header array to the heap.
        if limits.fields > HYPER_DEFAULT_MAX_HEADERS {
            builder.max_headers(limits.fields);
        }
        let connection = builder
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
