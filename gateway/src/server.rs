//! Accepting connections on each bind (PROXY headers and TLS handshakes included);
//! `edge::connection` serves each connection, and `pipeline` each request on it.
//! A failing connection is logged inside its own task and never ends the accept loop.
//! Every bind takes its connections from the gateway-wide [`ConnectionLimit`], and each
//! connection keeps its app's header and keep-alive timeouts (see `edge::timeouts`) as they were when it
//! was accepted.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::Route;
use crate::context::ConnInfo;
use crate::edge::admission::ConnectionLimit;
use crate::edge::connection::{self, Connections, Edge, Rewind};
use crate::edge::tls::TlsSetting;
use crate::edge::{forwarded, proxy_protocol};

/// What an app bind's accept loop shares with every connection it accepts.
pub(crate) struct BindState {
    pub(crate) route: Arc<Route>,
    pub(crate) tls: Arc<TlsSetting>,
    /// Connections start with a PROXY protocol header; a reload may change it.
    pub(crate) proxy_protocol: Arc<AtomicBool>,
    pub(crate) limit: Arc<ConnectionLimit>,
    pub(crate) connections: Arc<Connections>,
}

/// A listening socket of an app bind: TCP or Unix.
pub(crate) trait Acceptor: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection, with its peer's address and the address it reached (none on a
    /// Unix socket).
    fn accept_one(&self) -> impl Future<Output = io::Result<(Self::Stream, ConnInfo)>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;

    async fn accept_one(&self) -> io::Result<(TcpStream, ConnInfo)> {
        let (stream, peer) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().or_else(|_| self.local_addr()).ok();
        let info = ConnInfo {
            peer: Some(peer),
            local,
            tls: false,
        };
        Ok((stream, info))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;

    async fn accept_one(&self) -> io::Result<(UnixStream, ConnInfo)> {
        let (stream, _) = self.accept().await?;
        let info = ConnInfo {
            peer: None,
            local: None,
            tls: false,
        };
        Ok((stream, info))
    }
}

/// Takes a PROXY header's addresses for the connection's, when its sender is trusted as a
/// forwarding proxy is (`forwarded_allow_ips`; a Unix-socket peer counts as 127.0.0.1).
fn believe(info: &mut ConnInfo, header: proxy_protocol::Header, allow: &[ipnet::IpNet]) {
    if !forwarded::trusts_peer(allow, info.peer) {
        tracing::debug!(peer = ?info.peer, "PROXY protocol header from an untrusted peer; ignored");
        return;
    }
    if let Some(source) = header.source {
        info.peer = Some(source);
        info.local = header.destination;
    }
}

pub(crate) async fn accept_loop<L: Acceptor>(
    listener: L,
    bind: BindState,
    shutdown: CancellationToken,
) {
    loop {
        // At the cap, wait here without accepting: the kernel queues the newcomers.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = bind.limit.admit() => permit,
        };
        let Some((mut stream, mut info)) = accept_next(&listener, &shutdown).await else {
            return;
        };
        let tls = bind.tls.current();
        info.tls = tls.is_some();
        // The settings of the app served now: a reload changes them for new connections.
        let app = bind.route.load_full();
        let edge = Edge::from(&app.config.edge);
        let proxy_protocol = bind.proxy_protocol.load(Ordering::Relaxed);
        let (route, connections) = (bind.route.clone(), bind.connections.clone());
        bind.connections.spawn(async move {
            // Before TLS and before HTTP: the PROXY header is the first thing on the wire.
            let first = if proxy_protocol {
                let allow = &app.config.edge.forwarded_allow_ips;
                let Some(rest) = read_proxy_header(&mut stream, &mut info, allow, &edge).await
                else {
                    return;
                };
                rest
            } else {
                Bytes::new()
            };
            drop(app);
            let connection = Connection {
                info,
                edge,
                route,
                tls,
            };
            connection.serve(stream, first, &connections).await;
            drop(permit);
        });
    }
}

/// The next connection, or `None` once the gateway stops.
async fn accept_next<L: Acceptor>(
    listener: &L,
    shutdown: &CancellationToken,
) -> Option<(L::Stream, ConnInfo)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept_one() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(err) => {
                    // Usually EMFILE: pause briefly rather than spin, then go on accepting.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Reads the PROXY header within the time a client has for its request head, and believes
/// it if its sender is trusted. Returns what came after it in its read, to be read first;
/// `None` if there was no usable header in time (the connection is dropped).
async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    info: &mut ConnInfo,
    allow: &[ipnet::IpNet],
    edge: &Edge,
) -> Option<Bytes> {
    let peer = info.peer;
    let header = proxy_protocol::read_header(stream);
    match tokio::time::timeout(edge.header_timeout(), header).await {
        Ok(Ok((found, rest))) => {
            believe(info, found, allow);
            Some(rest)
        }
        Ok(Err(err)) => {
            tracing::debug!(?peer, "no usable PROXY protocol header: {err}");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "no PROXY protocol header in time");
            None
        }
    }
}

/// An accepted connection about to be served, with the settings it keeps for its life.
struct Connection {
    info: ConnInfo,
    edge: Edge,
    route: Arc<Route>,
    /// The bind's TLS settings when it was accepted, if it is a TLS bind.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Connection {
    /// Serves it in clear text, or over TLS once the handshake is done. The handshake runs in
    /// the connection's own task, within the time a client has for its request head, so a slow
    /// or silent client never holds up the accept loop.
    async fn serve<S>(self, stream: S, first: Bytes, connections: &Connections)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            info,
            edge,
            route,
            tls,
        } = self;
        let Some(config) = tls else {
            return connection::serve(stream, first, None, info, edge, route, connections).await;
        };
        let peer = info.peer;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = acceptor.accept(Rewind::new(first, stream));
        match tokio::time::timeout(edge.header_timeout(), handshake).await {
            Ok(Ok(stream)) => {
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let first = Bytes::new();
                connection::serve(stream, first, alpn, info, edge, route, connections).await
            }
            Ok(Err(err)) => tracing::debug!(?peer, "TLS handshake failed: {err}"),
            Err(_) => tracing::debug!(?peer, "TLS handshake not complete in time"),
        }
    }
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
