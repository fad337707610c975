//! One accepted client connection, from its first byte to its close: which HTTP version it
//! speaks, hyper's HTTP/1.1 or HTTP/2 server over it, and how it ends.
//!
//! - Over TLS, ALPN decides (`h2` or `http/1.1`; a client that offers neither gets the bind's
//!   default). In clear text the first bytes decide: the HTTP/2 connection preface means h2c with
//!   prior knowledge, anything else HTTP/1.1. `http: 1` or `http: 2` fixes the version instead.
//! - HTTP/1.1 runs behind the byte-level screen (`framing`) and the head and keep-alive clocks
//!   (`timeouts`). HTTP/2 needs neither: its framing is binary and checked by the h2 crate, whose
//!   limits and counters bound the known floods (rapid reset, CONTINUATION, SETTINGS, PING, HPACK
//!   bombs) and answer them with GOAWAY. An HTTP/2 connection with no stream for `keepalive` is
//!   closed with a GOAWAY, as an idle HTTP/1.1 connection is closed.
//! - When its bind closes (reload, stop), a connection is drained: HTTP/1.1 finishes the request
//!   in flight and closes, HTTP/2 sends GOAWAY and finishes the streams it has.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::Route;
use crate::config::{EdgeConfig, HttpVersions};
use crate::context::ConnInfo;
use crate::edge::delegate::replay;
use crate::edge::framing::{Limits, Screen, Screened};
use crate::edge::timeouts::{ClockedIo, EndsPhase, Timeouts};
use crate::pipeline::handle;

/// hyper's own cap on header fields when none is configured; it answers 431 beyond it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP/2 send buffer of a stream, beyond what its flow-control window lets out: small, so
/// that a client that stops reading holds about `response_buffer` of memory per stream, as on
/// HTTP/1.1, not that plus hyper's default of 400 KiB.
const H2_MAX_SEND_BUF_BYTES: usize = 64 * 1024;

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// A connection's edge settings, read from its app when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    timeouts: Timeouts,
    limits: Limits,
    http: HttpVersions,
    h2_max_concurrent_streams: u32,
}

impl From<&EdgeConfig> for Edge {
    fn from(edge: &EdgeConfig) -> Edge {
        Edge {
            timeouts: Timeouts {
                header: edge.header_timeout,
                keepalive: edge.keepalive,
            },
            limits: Limits::from(edge),
            http: edge.http,
            h2_max_concurrent_streams: edge.h2_max_concurrent_streams,
        }
    }
}

impl Edge {
    /// How long a new connection has before it must have sent something useful (its TLS
    /// handshake, its first head).
    pub(crate) fn header_timeout(&self) -> Duration {
        self.timeouts.header
    }
}

/// The connections of one bind: a signal that tells them to drain, and a count of those still
/// open.
#[derive(Default)]
pub(crate) struct Connections {
    draining: CancellationToken,
    open: TaskTracker,
}

impl Connections {
    /// Runs `connection` as a task of its own, counted until it ends.
    pub(crate) fn spawn<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.open.spawn(connection);
    }

    fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Tells every connection to finish what it holds and close; waits up to `wait` for them.
    pub(crate) async fn drain(&self, wait: Duration) {
        self.draining.cancel();
        self.open.close();
        let _ = tokio::time::timeout(wait, self.open.wait()).await;
    }
}

/// Serves one connection to its end. `first`: bytes already read from it (past a PROXY
/// header), read again first; `alpn`: what TLS agreed (`None` in clear text).
pub(crate) async fn serve<T>(
    stream: T,
    first: Bytes,
    alpn: Option<Vec<u8>>,
    info: ConnInfo,
    edge: Edge,
    route: Arc<Route>,
    connections: &Connections,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let draining = connections.draining();
    let peer = info.peer;
    let protocol = match (edge.http, alpn.as_deref()) {
        (HttpVersions::Http2, _) | (HttpVersions::Auto, Some(b"h2")) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let (stream, protocol) = if alpn.is_none() && edge.http == HttpVersions::Auto {
        match tokio::time::timeout(edge.timeouts.header, sniff(first, stream)).await {
            Ok(Ok(sniffed)) => sniffed,
            Ok(Err(err)) => {
                tracing::debug!(?peer, "connection ended: {err}");
                return;
            }
            // Silent since accept: nothing to answer.
            Err(_) => return,
        }
    } else {
        (Rewind::new(first, stream), protocol)
    };
    let ended = match protocol {
        Protocol::Http1 => drive(serve_http1(stream, info, edge, route), draining, None).await,
        Protocol::Http2 => {
            let activity = Arc::new(Activity::default());
            let connection = serve_http2(stream, info, edge, route, activity.clone());
            let idle = Some((activity, edge.timeouts.keepalive));
            drive(connection, draining, idle).await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(?peer, "connection ended: {err}");
    }
}

/// Reads until the first bytes (`first` already read, then the stream's) tell an HTTP/2
/// preface from anything else; they are replayed to whichever server takes the connection.
async fn sniff<T: AsyncRead + Unpin>(
    first: Bytes,
    mut stream: T,
) -> io::Result<(Rewind<T>, Protocol)> {
    let mut seen = first.to_vec();
    // Decided once the bytes stop matching the preface, or have matched all of it.
    let protocol = loop {
        let shared = seen.len().min(H2_PREFACE.len());
        if seen[..shared] != H2_PREFACE[..shared] {
            break Protocol::Http1;
        }
        if shared == H2_PREFACE.len() {
            break Protocol::Http2;
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        let n = stream
            .read(&mut buf[..H2_PREFACE.len() - seen.len()])
            .await?;
        if n == 0 {
            break Protocol::Http1;
        }
        seen.extend_from_slice(&buf[..n]);
    };
    Ok((Rewind::new(Bytes::from(seen), stream), protocol))
}

/// HTTP/1.1 behind the byte-level screen and the head and keep-alive clocks, [`handle`] for
/// each request.
fn serve_http1<T>(stream: T, info: ConnInfo, edge: Edge, route: Arc<Route>) -> impl Drainable
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let screen = Arc::new(Screen::default());
    let io = ClockedIo::new(
        Screened::new(stream, edge.limits, screen.clone()),
        edge.timeouts,
    );
    let phase = io.phase();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
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
        // A client may shut its side after a whole request (`nc -N`, scripted clients, some
        // health checkers) and still wants the answer, as gunicorn and nginx give it. A request
        // cut short by the shutdown still fails as an incomplete body.
        .half_close(true)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
}

/// HTTP/2, [`handle`] for each stream. The h2 crate keeps hyper's defaults against floods
/// (at most 20 streams reset by the client before it answers, 1,024 streams reset for errors,
/// a CONTINUATION sequence no longer than the header list limit): past them, GOAWAY.
fn serve_http2<T>(
    stream: T,
    info: ConnInfo,
    edge: Edge,
    route: Arc<Route>,
    activity: Arc<Activity>,
) -> impl Drainable
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(info);
        let route = route.clone();
        // Counted as abandoned unless it gets as far as its answer.
        let stream = Stream::begin(activity.clone());
        async move {
            let mut stream = stream;
            // hyper polls a stream's service once before it looks for the client's
            // RST_STREAM; yielding first lets it see one that came with the request (rapid
            // reset) before any of the request's work is done: a worker connection taken,
            // made, or written to.
            tokio::task::yield_now().await;
            // Boxed once it is known to be wanted: hyper spawns each stream's future, and the
            // whole request path inline would be copied into every task, reset ones included.
            let response = Box::pin(handle(route, request)).await;
            stream.answered = true;
            Ok::<_, Infallible>(response.map(|body| stream.lasts_as_long_as(body)))
        }
    });
    // A header list as large as HTTP/1.1 allows (every field at its largest), up to
    // H2_MAX_HEADER_LIST_BYTES: beyond it the h2 crate answers 431 without decoding the rest.
    let header_list =
        (edge.limits.fields.saturating_mul(edge.limits.field_size)).min(H2_MAX_HEADER_LIST_BYTES);
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(edge.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX))
        .max_send_buf_size(H2_MAX_SEND_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service)
}

/// The largest header list an HTTP/2 request may decode to: 32 KiB, what nginx reads for a
/// request head by default (4 buffers of 8 KiB), twice hyper's default. Lower than HTTP/1.1's
/// ceiling (`MAX_HEAD_BYTES`) because HPACK makes a big list cheap to send and dear to decode:
/// a CONTINUATION flood costs the server about this much decoding per connection before it is
/// cut off (measured: at 64 KiB such a flood took ordinary clients to 0.80 of their
/// throughput, at 32 KiB see `tests/tests/http2_floods.rs`).
const H2_MAX_HEADER_LIST_BYTES: usize = 32 * 1024;

/// Streams a client may abandon (reset, or leave, before their answer) on one HTTP/2
/// connection before it is told to go away: the rapid-reset attack (CVE-2023-44487) costs a
/// server a request set-up per stream for a few bytes each. Beyond the h2 crate's own count,
/// which only sees streams reset before they were handed over; browsers abandon a handful.
const H2_MAX_ABANDONED_STREAMS: usize = 200;

/// How long a connection told to go away has to finish before it is closed regardless: its
/// client may have stopped reading (a PING or SETTINGS flood that never reads the answers).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// The two kinds of hyper connection, as [`drive`] stops them.
pub(crate) trait Drainable: Future<Output = Result<(), hyper::Error>> + Send {
    /// Finish what is in flight, take nothing new, then end.
    fn drain(self: Pin<&mut Self>);
}

impl<I, B, S> Drainable for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Self: Send,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, B, S, E> Drainable for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    Self: Send,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection until it ends; drains it when its bind closes, or (HTTP/2) once it has
/// had no stream for the idle time given.
async fn drive<C: Drainable>(
    connection: C,
    draining: CancellationToken,
    idle: Option<(Arc<Activity>, Duration)>,
) -> Result<(), hyper::Error> {
    let mut connection = std::pin::pin!(connection);
    let Some((activity, keepalive)) = idle else {
        // HTTP/1.1 keeps its own idle clock (`timeouts`): only a drain can end it from here.
        tokio::select! {
            ended = connection.as_mut() => return ended,
            _ = draining.cancelled() => {}
        }
        connection.as_mut().drain();
        return connection.await;
    };
    // While streams are open the next look is a keep-alive from now; once none is, a
    // keep-alive from when the last one ended.
    let idle_until = || match activity.open() {
        0 => activity.idle_since() + keepalive,
        _ => Instant::now() + keepalive,
    };
    // Drained with its bind: what is in flight may finish (the bind waits graceful_timeout).
    // Idle or abusive: it has nothing worth waiting for, beyond a short grace.
    let grace = loop {
        tokio::select! {
            ended = connection.as_mut() => return ended,
            _ = draining.cancelled() => break None,
            () = activity.abuse.notified() => {
                tracing::debug!("HTTP/2 client abandoned {H2_MAX_ABANDONED_STREAMS} streams; going away");
                break Some(GOAWAY_GRACE);
            }
            _ = tokio::time::sleep_until(idle_until()) => {
                if activity.open() == 0 && Instant::now() >= activity.idle_since() + keepalive {
                    break Some(GOAWAY_GRACE);
                }
            }
        }
    };
    connection.as_mut().drain();
    let Some(grace) = grace else {
        return connection.await;
    };
    match tokio::time::timeout(grace, connection.as_mut()).await {
        Ok(ended) => ended,
        // Dropped: the socket closes under whatever is still in flight.
        Err(_) => Ok(()),
    }
}

/// The streams of an HTTP/2 connection: how many are open, since when none is, and how many
/// the client abandoned.
struct Activity {
    open: AtomicUsize,
    abandoned: AtomicUsize,
    /// Woken once `abandoned` passes [`H2_MAX_ABANDONED_STREAMS`].
    abuse: tokio::sync::Notify,
    /// When the last stream ended (or the connection began), in ms after `origin`.
    idle_since_ms: AtomicU64,
    origin: Instant,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            abuse: tokio::sync::Notify::new(),
            idle_since_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

impl Activity {
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// One open HTTP/2 stream, counted from its request until its response body is done with.
struct Stream {
    activity: Arc<Activity>,
    /// The app or the gateway has answered it.
    answered: bool,
}

impl Stream {
    fn begin(activity: Arc<Activity>) -> Stream {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Stream {
            activity,
            answered: false,
        }
    }

    fn lasts_as_long_as(self, body: Body) -> Body {
        Body::new(StreamBody {
            inner: body,
            _stream: self,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let activity = &self.activity;
        if !self.answered
            && activity.abandoned.fetch_add(1, Ordering::AcqRel) + 1 == H2_MAX_ABANDONED_STREAMS
        {
            activity.abuse.notify_one();
        }
        let ms = activity.origin.elapsed().as_millis();
        activity
            .idle_since_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its stream counted until hyper drops it.
struct StreamBody {
    inner: Body,
    _stream: Stream,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose first bytes, already read, are read again.
pub(crate) struct Rewind<T> {
    first: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(first: Bytes, inner: T) -> Rewind<T> {
        Rewind { first, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if replay(&mut this.first, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    crate::edge::delegate::delegate_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(input: &'static [u8]) -> (Protocol, Vec<u8>) {
        let (mut stream, protocol) = sniff(Bytes::new(), input).await.unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        (protocol, all)
    }

    #[tokio::test]
    async fn the_preface_means_http2_and_every_byte_is_replayed() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04";
        assert_eq!(sniffed(h2).await, (Protocol::Http2, h2.to_vec()));
        for h1 in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/1.1\r\n\r\n",
            b"P",
            b"",
        ] {
            assert_eq!(sniffed(h1).await, (Protocol::Http1, h1.to_vec()), "{h1:?}");
        }
    }

    #[tokio::test]
    async fn bytes_read_before_count_and_are_replayed_first() {
        let (mut stream, protocol) = sniff(
            Bytes::from_static(b"PRI * HTTP/2"),
            &b".0\r\n\r\nSM\r\n\r\nX"[..],
        )
        .await
        .unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nX");
        let (_, protocol) = sniff(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), &b""[..])
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Http1);
    }

    #[tokio::test]
    async fn a_preface_in_pieces_is_still_recognised() {
        let (client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            for piece in H2_PREFACE.chunks(5) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let (_, protocol) = sniff(Bytes::new(), server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        drop(writer.await.unwrap());
    }
}
