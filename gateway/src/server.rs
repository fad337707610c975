//! Accepting connections on each bind and serving HTTP/1.1 on them with [`handle`].
//! A failing connection is logged inside its own task and never ends the accept loop.
//! Every bind takes its connections from the gateway-wide [`ConnectionLimit`], and each
//! connection keeps its app's header and keep-alive timeouts (see `clock`) as they were when it
//! was accepted.

use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::ConnectionLimit;
use crate::clock::{ClockedIo, EndsPhase, Timeouts};
use crate::context::Observation;
use crate::forward::{forward, AppState, ConnInfo, Route};
use crate::framing::{Limits, Screen, Screened};
use crate::tls::TlsSetting;
use crate::{compress, static_files, strict};

/// hyper's own cap on header fields when none is configured; it answers 431 beyond it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Everything an app bind does with a request, in order: observe it (id, real client, metrics
/// and access log, for refusals and static files too), refuse what the strict checks refuse,
/// then answer it (a static file, or Python), compressed when that is on and it qualifies.
///
/// Plain function calls rather than a stack of tower layers: each layer boxed and cloned on
/// every request, which measurably cost throughput on small requests.
pub(crate) async fn handle(route: Arc<Route>, mut request: Request) -> Response {
    // The edge settings of the generation serving now, looked up once; the forwarder looks
    // again after the body, which may have taken long enough for a reload.
    let app = route.load_full();
    // Admitted first: the access log wants the target as sent, which admission attaches.
    let admitted = strict::admit(&mut request);
    let observation = Observation::begin(&app, &mut request);
    let response = match admitted {
        Err(refusal) => refusal.into_response(),
        Ok(()) => match compress::wanted(&app.config.edge, request.headers()) {
            None => answer(&route, &app, request).await,
            Some(min_size) => {
                let inner = tower::service_fn(move |request: Request| {
                    let (route, app) = (route.clone(), app.clone());
                    async move { Ok::<_, Infallible>(answer(&route, &app, request).await) }
                });
                compress::compress(min_size, request, inner).await
            }
        },
    };
    observation.finish(response)
}

/// A static file when the path is under a static prefix, else the app's answer.
async fn answer(route: &Route, app: &AppState, request: Request) -> Response {
    match static_files::mount(&app.config.edge, &request) {
        Some(mount) => mount.serve(request).await,
        None => forward(route, request).await,
    }
}

/// What an app bind's accept loop shares with every connection it accepts.
pub(crate) struct BindState {
    pub(crate) route: Arc<Route>,
    pub(crate) tls: Arc<TlsSetting>,
    pub(crate) limit: Arc<ConnectionLimit>,
    pub(crate) graceful: Arc<GracefulShutdown>,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    bind: BindState,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        // At the cap, wait here without accepting: the kernel queues the newcomers.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = bind.limit.admit() => slot,
        };
        let (stream, peer) = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(err) => {
                        // Usually EMFILE: pause briefly rather than spin, then go on accepting.
                        tracing::warn!(addr = ?local, "accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = bind.tls.current();
        let info = ConnInfo {
            peer,
            local: stream.local_addr().ok().or(local).unwrap_or(peer),
            tls: tls.is_some(),
        };
        // The settings of the app served now: a reload changes them for new connections.
        let edge = {
            let app = bind.route.load();
            Edge {
                timeouts: Timeouts {
                    header: app.config.edge.header_timeout,
                    keepalive: app.config.edge.keepalive,
                },
                limits: Limits::from(&app.config.edge),
            }
        };
        let (route, graceful) = (bind.route.clone(), bind.graceful.clone());
        match tls {
            None => {
                let connection = serve(stream, info, edge, route);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(%peer, "connection ended: {err}");
                    }
                    drop(slot);
                });
            }
            // The handshake runs in the connection's own task, within the time a client has
            // for its request head, so a slow or silent client never holds up the accept loop.
            Some(config) => {
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let stream =
                        match tokio::time::timeout(edge.timeouts.header, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {err}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake not complete in time");
                                return;
                            }
                        };
                    let connection = graceful.watch(serve(stream, info, edge, route));
                    if let Err(err) = connection.await {
                        tracing::debug!(%peer, "connection ended: {err}");
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// A connection's edge settings, fixed at accept.
#[derive(Clone, Copy)]
struct Edge {
    timeouts: Timeouts,
    limits: Limits,
}

/// HTTP/1.1 on one accepted connection, plain or TLS: the byte-level screen and the header and
/// keep-alive clocks around the stream, [`handle`] for each request.
fn serve<T>(
    stream: T,
    info: ConnInfo,
    edge: Edge,
    route: Arc<Route>,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let screen = Arc::new(Screen::default());
    let io = ClockedIo::new(
        Screened::new(stream, edge.limits, screen.clone()),
        edge.timeouts,
    );
    let phase = io.phase();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(info);
        request.extensions_mut().insert(screen.clone());
        phase.serving();
        let phase = phase.clone();
        let route = route.clone();
        async move {
            let response = handle(route, request).await;
            Ok::<_, Infallible>(response.map(|body| EndsPhase::new(body, phase)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The screen counts fields too, but hyper must not refuse first at its own default.
    // Left alone below that: an explicit cap moves hyper's header array to the heap.
    if edge.limits.fields > HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(edge.limits.fields);
    }
    builder
        .timer(TokioTimer::new())
        // `ClockedIo` keeps the header and keep-alive timeouts.
        .header_read_timeout(None)
        // A client may shut its side after a whole request (`nc -N`, scripted clients,
        // some health checkers) and still wants the answer, as gunicorn and nginx give
        // it. A request cut short by the shutdown still fails as an incomplete body.
        .half_close(true)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
}

/// The admin bind's loop: plain HTTP/1.1 for a few trusted scrapers and probes, none of an app
/// bind's edge machinery.
pub(crate) async fn admin_loop(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("admin: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => if let Err(err) = result {
                    tracing::debug!(%peer, "admin connection ended: {err}");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
