//! The request path on the gateway side: buffer the body (so a slow upload never holds a Python
//! thread), borrow a worker connection, send the framed request, and turn the framed response
//! back into HTTP.
//!
//! A response that arrives whole in the first read goes out as one body and its connection goes
//! straight back to the pool. Anything longer is pumped by a task through a channel bounded in
//! bytes (`response_buffer`): the worker is read as fast as it writes, up to that many bytes ahead
//! of the client, so a slow reader frees the Python thread as soon as the rest of the response
//! fits. A client that leaves closes the worker connection, which ends the app's iteration (and
//! calls its `close()`).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use deadpool::managed::{Object, PoolError};
use http::{header, HeaderName, HeaderValue, StatusCode, Version};
use http_body::{Body as _, Frame as BodyFrame};
use sluice_proto::{
    decode, encode_request_head, encode_shared_body, frame_header, shared::SHARED_BODY_BYTES,
    Frame, HttpVersion, Kind, RequestMeta, ResponseHead, COALESCE_BYTES, MAX_CHUNK_BYTES,
};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

use crate::app::{AppState, Route};
use crate::context::ConnInfo;
use crate::context::RequestContext;
use crate::edge::framing::request_target;
use crate::error::GatewayError;
use crate::pool::large_bodies;
use crate::pool::relay::{self, After, Handoff, Relay, Relayed, Successor};
use crate::pool::shared::Region;
use crate::pool::{Kill, Manager, WorkerConn};

/// Counts a request as busy in Python for as long as it lives.
struct Busy(Arc<AppState>);

impl Busy {
    fn new(app: &Arc<AppState>) -> Busy {
        app.busy.fetch_add(1, Ordering::Relaxed);
        Busy(app.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

type Conn = Object<Manager>;

/// A worker connection lent to one request, with the place behind that request where another
/// may queue (see `relay`). However it ends (released, retired, or dropped with its request's
/// future when the client leaves), a request queued behind gets the connection.
pub(crate) struct Lease {
    conn: Option<Conn>,
    relay: Option<Arc<Relay>>,
    /// The request queued behind, once the relay is closed (see [`Lease::stop_relay`]).
    successor: Option<Successor>,
    /// When its request went out or, queued behind another, when that one was done.
    since: Instant,
}

impl std::ops::Deref for Lease {
    type Target = WorkerConn;

    fn deref(&self) -> &WorkerConn {
        self.conn.as_ref().expect("held until the lease ends")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut WorkerConn {
        self.conn.as_mut().expect("held until the lease ends")
    }
}

impl Lease {
    fn new(conn: Conn) -> Lease {
        Lease {
            conn: Some(conn),
            relay: None,
            successor: None,
            since: Instant::now(),
        }
    }

    /// Lets another request queue behind this one, whose own request has gone out whole.
    fn open_relay(&mut self) {
        let relays = &self.workers.relays;
        if let Some(shared) = self.shared.as_ref().filter(|_| relays.allowed()) {
            self.relay = Some(relays.open(&self.stream, shared, &self.worker));
        }
    }

    /// Lets nobody more queue behind this request, whose answer goes on beyond its first read
    /// (a large or streamed body, which a slow client may hold up), and sends a request already
    /// queued behind elsewhere unless the worker has started it.
    fn stop_relay(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        let Some((tx, number)) = self.workers.relays.close(&relay) else {
            return;
        };
        if relay.shared.cancel(number) {
            let _ = tx.send(Relayed::TakenBack);
        } else {
            self.successor = Some((tx, number));
        }
    }

    /// Ends the loan: the connection goes to the request queued behind, if any, with what it
    /// must do first; else back to the pool if `after` says the exchange ended in step, and
    /// closed if not (the worker sees the close, stops the app's iteration, frees the thread).
    fn finish(&mut self, after: After) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.workers.relays.note(self.since.elapsed());
        let relay = self.relay.take();
        if let Some((tx, _)) = self
            .successor
            .take()
            .or_else(|| relay.and_then(|r| conn.workers.relays.close(&r)))
        {
            conn.broken = true;
            match tx.send(Relayed::Handoff(Handoff { conn, after })) {
                Ok(()) => return,
                // The request behind has gone (its client left) and its answer would come
                // next, unread.
                Err(Relayed::Handoff(back)) => conn = back.conn,
                Err(Relayed::TakenBack) => unreachable!("sent a handoff"),
            }
        } else if after == After::Nothing && conn.worker.is_alive() {
            conn.broken = false;
            return;
        }
        // Out of step, or its worker has left rotation (being replaced or stopped): closing it
        // is what lets that worker finish.
        conn.broken = true;
        drop(Object::take(conn));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped mid-exchange with its request's future: the rest of the answer is unread.
        self.finish(After::Skip);
    }
}

/// Ends a loan whose exchange is complete.
fn release(mut conn: Lease) {
    conn.finish(After::Nothing);
}

/// Ends a loan before its answer did, with the stream still in step: closed, unless a request
/// queued behind takes it over.
fn retire(mut conn: Lease) {
    conn.finish(After::Skip);
}

/// Ends a loan whose stream may be out of step with the worker.
fn retire_out_of_step(mut conn: Lease) {
    conn.finish(After::Fail);
}

pub(crate) async fn forward(route: &Route, request: Request) -> Response {
    let context = request
        .extensions()
        .get::<Arc<RequestContext>>()
        .cloned()
        .expect("server::handle observes every request first");
    match forward_inner(route, request, &context).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(request_id = context.id_str(), "{err}");
            err.into_response()
        }
    }
}

async fn forward_inner(
    route: &Route,
    request: Request,
    context: &Arc<RequestContext>,
) -> Result<Response, GatewayError> {
    let request_id = context.id_str();
    let app = route.load_full();
    let (mut parts, body) = request.into_parts();
    let info = parts
        .extensions
        .get::<ConnInfo>()
        .copied()
        .expect("the server inserts ConnInfo");
    let max_body = app.config.max_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(GatewayError::BodyTooLarge);
    }
    let has_body = declared.is_some() || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let (chunks, body_len) = read_body(body, max_body, app.config.edge.min_body_rate).await?;
    // The body may have taken a while: serve it with whatever generation of the app is current.
    let app = route.load_full();

    if parts.version == Version::HTTP_2 {
        as_http1_fields(&mut parts);
    }
    let meta = RequestMeta {
        request_id: request_id.as_bytes(),
        method: parts.method.as_str().as_bytes(),
        target: request_target(&parts.extensions, &parts.uri),
        version: match parts.version {
            Version::HTTP_10 | Version::HTTP_09 => HttpVersion::Http10,
            Version::HTTP_2 | Version::HTTP_3 => HttpVersion::Http2,
            _ => HttpVersion::Http11,
        },
        scheme: context.scheme,
        peer: context.client,
        local: info.local,
        body_len,
        has_body,
        queued: 0,
    };
    if let Some(host) = &context.host {
        // The host a trusted proxy was asked for is the one the app should build URLs with.
        parts.headers.insert(header::HOST, host.clone());
    }
    let headers = || {
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };

    let queued_at = Instant::now();
    let (app, mut conn) = deliver(route, app, &meta, headers, &chunks).await?;
    drop(chunks);
    conn.worker.note_request();
    let sent_at = Instant::now();
    context.timing.set_queued(sent_at - queued_at);
    let busy = Busy::new(&app);

    let deadline = Instant::now() + app.config.timeout;
    let head = match timeout_at(deadline, read_frame(&mut conn)).await {
        Err(_) => {
            tracing::error!(app = %app.config.name, request_id, pid = conn.worker.pid,
                "request ran past the {:?} timeout; killing its worker", app.config.timeout);
            conn.worker.kill(Kill::DumpThenKill);
            retire(conn);
            return Err(GatewayError::UpstreamTimeout);
        }
        Ok(Ok(Some(Frame::ResponseHead(head)))) => head,
        Ok(Ok(Some(Frame::Error(_, message)))) => {
            release(conn);
            context.timing.set_python(sent_at.elapsed());
            tracing::error!(app = %app.config.name, request_id,
                "app failed before responding: {} (traceback in the app's log above)", String::from_utf8_lossy(&message));
            return Err(GatewayError::AppFailed);
        }
        Ok(outcome) => {
            let pid = conn.worker.pid;
            let (why, in_step) = match outcome {
                Ok(None) => ("closed the connection".to_string(), true),
                Ok(Some(frame)) => (format!("sent {frame:?} instead of a response head"), false),
                Err(err) => (err.to_string(), closed(&err)),
            };
            tracing::error!(app = %app.config.name, request_id, pid, "worker {why} before answering");
            if in_step {
                retire(conn);
            } else {
                retire_out_of_step(conn);
            }
            return Err(GatewayError::WorkerGone);
        }
    };
    respond(&app, conn, head, context, sent_at, busy)
}

/// An HTTP/2 request's fields as a WSGI app expects HTTP/1.1's (RFC 9113 §8.3.1): a Host from
/// `:authority` when there is none. (HTTP/2's separate cookie fields need nothing here: the
/// worker joins repeated cookies with `; `.)
fn as_http1_fields(parts: &mut http::request::Parts) {
    if !parts.headers.contains_key(header::HOST) {
        let authority = parts.uri.authority().map(|a| a.as_str());
        if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            parts.headers.insert(header::HOST, host);
        }
    }
}

/// How long a request body may lag behind `min_body_rate` before it is cut off: the credit a
/// client has for a slow start (TCP's, a phone waking its radio) or a pause.
const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// Collects the whole request body, no more than `max_body` bytes, as the chunks it came in.
///
/// With a `min_rate` (bytes per second; 0 is none), the body must keep up with that rate from
/// the moment its head was read, less a [`BODY_RATE_GRACE`]: by `t` seconds in it must have
/// sent `min_rate × (t − grace)` bytes, so its average rate tends to `min_rate`. A body that
/// falls behind gets 408 and the connection is closed; none of it reaches Python.
async fn read_body(
    mut body: Body,
    max_body: u64,
    min_rate: u64,
) -> Result<(Vec<Bytes>, u64), GatewayError> {
    let began = Instant::now();
    let mut chunks = Vec::new();
    let mut total = 0u64;
    // Armed only when the body makes us wait, so a body that is already here (or none at all)
    // never touches the timer.
    let mut late: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let frame = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Ok(frame));
            }
            if min_rate == 0 {
                return Poll::Pending;
            }
            let due = began
                + BODY_RATE_GRACE
                + Duration::from_millis(total.saturating_mul(1000) / min_rate);
            let timer = late.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            timer
                .as_mut()
                .poll(cx)
                .map(|()| Err(GatewayError::BodyTooSlow))
        })
        .await?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|_| GatewayError::BadBody)?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > max_body {
                return Err(GatewayError::BodyTooLarge);
            }
            if !data.is_empty() {
                chunks.push(data);
            }
        }
    }
    Ok((chunks, total))
}

/// Sends the request on a pooled connection. A write that finds the connection dead (its worker
/// left while it sat idle) means nothing reached Python, so another connection is tried, within
/// the queue timeout and never more often than the pool has connections.
async fn deliver<'h, H, I>(
    route: &Route,
    mut app: Arc<AppState>,
    meta: &RequestMeta<'_>,
    headers: H,
    chunks: &[Bytes],
) -> Result<(Arc<AppState>, Lease), GatewayError>
where
    H: Fn() -> I,
    I: Iterator<Item = (&'h [u8], &'h [u8])>,
{
    let deadline = Instant::now() + app.config.queue_timeout;
    let mut attempts = app.pool.status().max_size + 1;
    // Queued behind another request at most once: one taken back waits in the pool.
    let may_queue = may_queue_behind(&app, meta);
    while attempts > 0 {
        // A free connection first; else straight behind a request in flight, but only when
        // nobody waits for a connection: those who do come first (`wait_for_place`).
        let status = app.pool.status();
        let direct = if may_queue && status.available == 0 && status.waiting == 0 {
            app.workers.relays.queue_behind()
        } else {
            None
        };
        let got = match direct {
            Some(place) => Waited::Behind(place),
            None if may_queue && status.available == 0 => wait_for_place(&app, deadline).await,
            None => Waited::Pool(timeout_at(deadline, app.pool.get()).await),
        };
        let got = match got {
            Waited::Behind((relay, number, handoff)) => {
                match queue_behind(&relay, number, handoff, meta, headers(), chunks, &app).await {
                    Behind::Ready(conn) => {
                        app.metrics.queued_behind.inc();
                        return Ok((app, conn));
                    }
                    Behind::Again => continue,
                    Behind::Failed(err) => return Err(err),
                }
            }
            Waited::Pool(got) => got,
        };
        let conn = match got {
            Ok(Ok(conn)) => conn,
            // A reload retired this generation between the lookup and now: take the new one.
            Ok(Err(PoolError::Closed)) => {
                let current = route.load_full();
                if Arc::ptr_eq(&current, &app) {
                    return Err(GatewayError::WorkerGone);
                }
                app = current;
                continue;
            }
            Ok(Err(err)) => {
                tracing::warn!(app = %app.config.name, "no worker connection: {err}");
                return Err(GatewayError::WorkerGone);
            }
            Err(_) => return Err(GatewayError::QueueTimeout),
        };
        attempts -= 1;
        let mut conn = Lease::new(conn);
        // Until the answer has been read to its end: a connection dropped before then (its
        // client left) is closed, never pooled with that answer still to come.
        conn.broken = true;
        let mut buf = std::mem::take(&mut conn.write_buf);
        let shared = conn.shared.clone();
        let written = write_request(
            &conn.stream,
            &mut buf,
            shared.as_deref(),
            meta,
            headers(),
            chunks,
        )
        .await;
        conn.write_buf = buf;
        match written {
            Ok(()) => {
                conn.since = Instant::now();
                conn.open_relay();
                return Ok((app, conn));
            }
            Err(err) => {
                tracing::debug!(app = %app.config.name, pid = conn.worker.pid, "stale worker connection: {err}");
                retire_out_of_step(conn);
            }
        }
    }
    Err(GatewayError::WorkerGone)
}

/// Whether this request may queue behind another in flight (see `relay`): only for a body
/// small enough to travel in the request's own frames (the memory a connection shares may still
/// hold the body of the request in front), and only in an app fast enough for it.
fn may_queue_behind(app: &AppState, meta: &RequestMeta<'_>) -> bool {
    meta.body_len <= COALESCE_BYTES as u64 && app.workers.relays.allowed()
}

type Place = (Arc<Relay>, u32, oneshot::Receiver<Relayed>);

/// What a request waiting for a Python thread got first.
enum Waited {
    /// A connection from the pool (or why none came).
    Pool(Result<Result<Conn, PoolError<std::convert::Infallible>>, tokio::time::error::Elapsed>),
    /// The place behind a request that has just gone out.
    Behind(Place),
}

/// Waits for a pooled connection or for the place behind a request going out, whichever comes
/// first. Both queues are first come, first served, and every waiter is in both, so a request
/// that arrives later never overtakes one that waits.
async fn wait_for_place(app: &AppState, deadline: Instant) -> Waited {
    let get = timeout_at(deadline, app.pool.get());
    tokio::pin!(get);
    loop {
        let opened = app.workers.relays.opened();
        tokio::select! {
            biased;
            got = &mut get => return Waited::Pool(got),
            () = opened => {
                if app.pool.status().available == 0 {
                    if let Some(place) = app.workers.relays.queue_behind() {
                        return Waited::Behind(place);
                    }
                }
            }
        }
    }
}

/// How queueing behind another request went.
enum Behind {
    /// Sent, and the connection is ours: the answer to read next is this request's.
    Ready(Lease),
    /// Taken back before it reached Python: send it elsewhere.
    Again,
    Failed(GatewayError),
}

/// Writes the request, numbered `number`, behind the one in flight on `relay`'s connection,
/// then waits for that one to be done with the connection, or takes the request back (see
/// `relay`).
async fn queue_behind<'h>(
    relay: &Relay,
    number: u32,
    handoff: oneshot::Receiver<Relayed>,
    meta: &RequestMeta<'_>,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    chunks: &[Bytes],
    app: &AppState,
) -> Behind {
    let meta = RequestMeta {
        queued: number,
        ..*meta
    };
    let mut buf = BytesMut::new();
    if let Err(err) = write_request(&relay.stream, &mut buf, None, &meta, headers, chunks).await {
        // The request in front closes the connection, finding nobody to hand it to; should it
        // be handing it over already, the connection is dropped with the receiver, closed.
        tracing::debug!(pid = relay.worker.pid, "stale worker connection: {err}");
        relay.take_back();
        return Behind::Again;
    }
    let escape = Instant::from_std(relay.sent_at + relay::FAST);
    tokio::pin!(handoff);
    let mut waiting_behind = true;
    let mut started_by = Instant::now() + app.config.timeout;
    let handoff = loop {
        tokio::select! {
            biased;
            handoff = &mut handoff => break handoff,
            () = tokio::time::sleep_until(escape), if waiting_behind => {
                if relay.take_back() {
                    return Behind::Again;
                }
                // Started, or about to be: the request in front is done, though its answer
                // may still be on its way to a slow client. Its own timeout runs from now.
                waiting_behind = false;
                started_by = Instant::now() + app.config.timeout;
            }
            () = tokio::time::sleep_until(started_by), if !waiting_behind => {
                // Its answer is stuck behind the one in front: dropping the receiver makes the
                // request in front close the connection when it is done.
                tracing::error!(app = %app.config.name, pid = relay.worker.pid,
                    "a request queued behind another got no connection within the {:?} timeout", app.config.timeout);
                return Behind::Failed(GatewayError::UpstreamTimeout);
            }
        }
    };
    let Handoff { conn, after } = match handoff {
        Ok(Relayed::Handoff(handoff)) => handoff,
        Ok(Relayed::TakenBack) => return Behind::Again,
        Err(_) => return Behind::Failed(GatewayError::WorkerGone),
    };
    let mut conn = Lease::new(conn);
    let shared = conn
        .shared
        .clone()
        .expect("relays are for connections that share memory");
    match after {
        // Its worker is leaving rotation: rather than start there, go elsewhere if it still can.
        After::Nothing if !conn.worker.is_alive() && shared.cancel(number) => {
            retire_out_of_step(conn);
            return Behind::Again;
        }
        After::Nothing => shared.settle(number),
        // The exchange in front broke. Taken back, this request never reached Python: the
        // connection closes (which also ends what is left of the answer in front), and the
        // request goes elsewhere.
        After::Skip | After::Fail if shared.cancel(number) => {
            retire_out_of_step(conn);
            return Behind::Again;
        }
        // Started: the worker has finished the answer in front, and this one comes after it.
        After::Skip => match skip_answer(&mut conn).await {
            Ok(true) => {}
            Ok(false) => {
                retire(conn);
                return Behind::Failed(GatewayError::WorkerGone);
            }
            Err(err) => {
                tracing::error!(pid = conn.worker.pid, "worker sent garbage: {err}");
                retire_out_of_step(conn);
                return Behind::Failed(GatewayError::WorkerGone);
            }
        },
        After::Fail => {
            retire_out_of_step(conn);
            return Behind::Failed(GatewayError::WorkerGone);
        }
    }
    conn.since = Instant::now();
    conn.open_relay();
    Behind::Ready(conn)
}

/// Reads and drops what is left of an answer nobody wants. `Ok(true)` once it has ended,
/// `Ok(false)` if the connection closed first.
async fn skip_answer(conn: &mut WorkerConn) -> std::io::Result<bool> {
    loop {
        match read_frame(conn).await {
            Ok(Some(Frame::ResponseEnd | Frame::Error(..))) => return Ok(true),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(err) if closed(&err) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

/// A worker that dies with a request unread in its socket resets the connection instead of
/// closing it.
fn closed(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::ConnectionReset
}

/// Frames one request into `buf` and writes it to `stream`, its body through `shared` memory
/// if given and the body fits there.
async fn write_request<'h>(
    stream: &UnixStream,
    buf: &mut BytesMut,
    shared: Option<&Region>,
    meta: &RequestMeta<'_>,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    buf.clear();
    // Never from a client's bytes: limit_request_field_size is capped under the u16 of a name,
    // and a head is at most MAX_HEAD_BYTES, far inside a frame.
    encode_request_head(buf, meta, headers)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    let body_len = meta.body_len as usize;
    let result = async {
        if let Some(shared) =
            shared.filter(|_| body_len > COALESCE_BYTES && body_len <= SHARED_BODY_BYTES)
        {
            // Through the memory this connection shares with its worker (see `shared`).
            let len = shared.put_request_body(chunks);
            encode_shared_body(buf, len);
            return write_all(stream, buf).await;
        }
        for chunk in chunks {
            for piece in chunk.chunks(MAX_CHUNK_BYTES) {
                buf.put_slice(&frame_header(Kind::RequestBody, piece.len()));
                if piece.len() <= COALESCE_BYTES {
                    buf.put_slice(piece);
                } else {
                    write_all(stream, buf).await?;
                    buf.clear();
                    write_all(stream, piece).await?;
                }
            }
        }
        write_all(stream, buf).await
    }
    .await;
    buf.clear();
    result
}

async fn write_all(stream: &UnixStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The response chunk a worker put in one of the connection's shared cells.
fn shared_chunk(conn: &WorkerConn, cell: u32, len: u32) -> std::io::Result<Bytes> {
    match &conn.shared {
        Some(region) => region.response_chunk(cell, len),
        None => Err(std::io::Error::other(
            "worker used shared memory this connection does not have",
        )),
    }
}

async fn read_frame(conn: &mut WorkerConn) -> std::io::Result<Option<Frame>> {
    loop {
        if let Some(len) = large_bodies::large_body_ahead(&conn.read_buf) {
            let body = large_bodies::read_large_body(&conn.stream, &mut conn.read_buf, len).await?;
            return Ok(body.map(Frame::ResponseBody));
        }
        match decode(&mut conn.read_buf).map_err(std::io::Error::other)? {
            Some(Frame::ResponseBodyShared { cell, len }) => {
                return shared_chunk(conn, cell, len).map(|chunk| Some(Frame::ResponseBody(chunk)))
            }
            Some(frame) => return Ok(Some(frame)),
            None => {}
        }
        conn.read_buf.reserve(64 * 1024);
        let read = loop {
            match conn.stream.try_read_buf(&mut conn.read_buf) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.stream.readable().await?
                }
                read => break read?,
            }
        };
        if read == 0 {
            return Ok(None);
        }
    }
}

fn respond(
    app: &AppState,
    mut conn: Lease,
    head: ResponseHead,
    context: &Arc<RequestContext>,
    sent_at: Instant,
    busy: Busy,
) -> Result<Response, GatewayError> {
    let request_id = context.id_str();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::from_u16(head.status).map_err(|_| {
        tracing::error!(app = %app.config.name, request_id, "app sent status {}", head.status);
        GatewayError::AppFailed
    })?;
    if response.status().canonical_reason().map(str::as_bytes) != Some(&head.reason[..])
        && !head.reason.is_empty()
    {
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.clone()) {
            response.extensions_mut().insert(reason);
        }
    }
    let headers = response.headers_mut();
    headers.reserve(head.headers.len());
    for (name, value) in head.headers {
        // The worker checked both already; a failure here is a bug, not the app's fault.
        match (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                tracing::error!(app = %app.config.name, request_id, "unusable response header {:?}", String::from_utf8_lossy(&name));
                retire(conn);
                return Err(GatewayError::AppFailed);
            }
        }
    }

    // Whatever the first reads brought in beyond the head: often the whole body and its end.
    let mut early = Vec::new();
    // A frame other than body or end that the first reads brought (an error frame): decoding
    // took it off the buffer, so the pump must be handed it, not left to wait for another.
    let mut next = None;
    // A large body frame still arriving is the pump's to read (into a pooled buffer).
    while large_bodies::large_body_ahead(&conn.read_buf).is_none() {
        match decode(&mut conn.read_buf) {
            Ok(Some(Frame::ResponseBody(chunk))) => early.push(chunk),
            Ok(Some(Frame::ResponseBodyShared { cell, len })) => {
                match shared_chunk(&conn, cell, len) {
                    Ok(chunk) => early.push(chunk),
                    Err(err) => {
                        tracing::error!(app = %app.config.name, request_id, "{err}");
                        retire_out_of_step(conn);
                        return Err(GatewayError::AppFailed);
                    }
                }
            }
            Ok(Some(Frame::ResponseEnd)) => {
                *response.body_mut() = match early.len() {
                    0 => Body::empty(),
                    1 => Body::from(early.pop().expect("one chunk")),
                    // As they are: chunks may be large, and those in shared cells are never
                    // copied.
                    _ => Body::new(WholeBody(early.into())),
                };
                release(conn);
                context.timing.set_python(sent_at.elapsed());
                return Ok(response);
            }
            Ok(None) => break,
            // An error frame right behind the head: the pump reports it.
            Ok(Some(frame)) => {
                next = Some(frame);
                break;
            }
            // Garbage: still in the buffer, where the pump's first decode finds it again.
            Err(_) => break,
        }
    }
    conn.stop_relay();
    let (tx, body) = body_channel(app.config.edge.response_buffer);
    let name = app.config.name.clone();
    let idle = app.config.timeout;
    let context = context.clone();
    tokio::spawn(async move {
        for chunk in early {
            if tx.send(chunk).await.is_err() {
                retire(conn);
                return;
            }
        }
        pump(conn, next, &tx, &name, context.id_str(), idle).await;
        // Before `tx` goes: the client's body ends (and the access log is written) only then.
        context.timing.set_python(sent_at.elapsed());
        drop(busy);
        drop(tx);
    });
    *response.body_mut() = Body::new(body);
    Ok(response)
}

/// Moves body frames from the worker to the client's body channel until the end frame,
/// starting with `next` if the caller already decoded one.
async fn pump(
    mut conn: Lease,
    mut next: Option<Frame>,
    tx: &BodySender,
    app: &str,
    request_id: &str,
    idle: Duration,
) {
    loop {
        let read = match next.take() {
            Some(frame) => Ok(Ok(Some(frame))),
            None => timeout(idle, read_frame(&mut conn)).await,
        };
        let frame = match read {
            Ok(Ok(Some(frame))) => frame,
            Ok(outcome) => {
                let (why, in_step) = match outcome {
                    Err(err) => (err.to_string(), closed(&err)),
                    _ => ("closed the connection".into(), true),
                };
                tracing::error!(
                    app,
                    request_id,
                    pid = conn.worker.pid,
                    "worker {why} in the middle of a response; cutting it off"
                );
                tx.fail("worker gone");
                if in_step {
                    retire(conn);
                } else {
                    retire_out_of_step(conn);
                }
                return;
            }
            Err(_) => {
                tracing::error!(
                    app,
                    request_id,
                    pid = conn.worker.pid,
                    "response stalled past the {idle:?} timeout; killing its worker"
                );
                conn.worker.kill(Kill::DumpThenKill);
                tx.fail("timeout");
                // Possibly inside a frame.
                retire_out_of_step(conn);
                return;
            }
        };
        match frame {
            Frame::ResponseBody(chunk) => {
                if tx.send(chunk).await.is_err() {
                    // The client left: closing the worker connection stops the app's iteration.
                    retire(conn);
                    return;
                }
            }
            Frame::ResponseEnd => {
                release(conn);
                return;
            }
            Frame::Error(_, message) => {
                tracing::error!(
                    app,
                    request_id,
                    "app failed after its response began: {}; cutting it off",
                    String::from_utf8_lossy(&message)
                );
                tx.fail("app failed");
                release(conn);
                return;
            }
            other => {
                tracing::error!(
                    app,
                    request_id,
                    "worker sent {other:?} inside a response body"
                );
                tx.fail("protocol error");
                retire_out_of_step(conn);
                return;
            }
        }
    }
}

/// A response body channel holding at most `bound` bytes (at least one chunk, however large):
/// the pump's side and the client's side.
fn body_channel(bound: u64) -> (BodySender, ChannelBody) {
    // The semaphore counts free bytes; u32 because that is what one acquire can take.
    let bound = bound.clamp(1, u64::from(u32::MAX)) as usize;
    let budget = Arc::new(Semaphore::new(bound));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BodySender {
            tx,
            budget: budget.clone(),
            bound,
        },
        ChannelBody {
            rx,
            budget,
            bound,
            flushed: true,
            held: None,
        },
    )
}

/// A response body that is all here, in chunks: hyper writes them in one vectored write where
/// they fit, and knows the length (Content-Length) as it does for a single chunk.
struct WholeBody(std::collections::VecDeque<Bytes>);

impl http_body::Body for WholeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(BodyFrame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|chunk| chunk.len() as u64).sum())
    }
}

/// The client has gone: its body was dropped.
struct ClientGone;

/// The pump's side of a response body channel.
struct BodySender {
    tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    /// Free bytes in the channel.
    budget: Arc<Semaphore>,
    bound: usize,
}

impl BodySender {
    /// Waits until `chunk` fits in the channel's bound, then queues it.
    async fn send(&self, chunk: Bytes) -> Result<(), ClientGone> {
        let cost = chunk.len().min(self.bound) as u32;
        // Closed when the client's side is dropped, which also wakes a pump waiting here.
        self.budget
            .acquire_many(cost)
            .await
            .map_err(|_| ClientGone)?
            .forget();
        self.tx.send(Ok(chunk)).map_err(|_| ClientGone)
    }

    /// Ends the body with an error, so hyper cuts the response off rather than complete it.
    fn fail(&self, why: &str) {
        let _ = self.tx.send(Err(std::io::Error::other(why.to_owned())));
    }
}

/// A response body fed by the pump task. An `Err` item makes hyper abort the response, so the
/// client sees it cut off rather than complete.
struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
    budget: Arc<Semaphore>,
    bound: usize,
    /// No data has been handed to hyper since it last found this body pending (and so flushed).
    flushed: bool,
    /// An error held back for one round so hyper flushes the data before it (see `poll_frame`).
    held: Option<std::io::Error>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, std::io::Error>>> {
        if let Some(err) = self.held.take() {
            return Poll::Ready(Some(Err(err)));
        }
        let item = match self.rx.poll_recv(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => {
                self.flushed = true;
                return Poll::Pending;
            }
        };
        match item {
            Some(Ok(chunk)) => {
                // hyper has it now: room for the pump to read on.
                self.budget.add_permits(chunk.len().min(self.bound));
                self.flushed = false;
                Poll::Ready(Some(Ok(BodyFrame::data(chunk))))
            }
            // hyper drops what it has buffered when a body fails, so data that came just before
            // the error (often in the same read from the worker) would never reach the client:
            // look pending once, which makes hyper flush, and fail on the next poll.
            Some(Err(err)) if !self.flushed => {
                self.held = Some(err);
                self.flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => Poll::Ready(other.map(|item| item.map(BodyFrame::data))),
        }
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        self.budget.close();
    }
}
