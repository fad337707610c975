//! The request path on the gateway side, in the order a request takes it:
//!
//! 1. `request_body`: buffer the body, so a slow upload never holds a Python thread;
//! 2. `checkout`: get a Python thread (a pooled worker connection, or the place behind a
//!    request in flight) and send the framed request there;
//! 3. here: wait for the response head, within the app's timeout;
//! 4. `response`: turn the framed response back into HTTP, its body through `body`.
//!
//! A response that arrives whole in the first read goes out as one body and its connection goes
//! straight back to the pool. Anything longer is pumped by a task through a channel bounded in
//! bytes (`response_buffer`): the worker is read as fast as it writes, up to that many bytes ahead
//! of the client, so a slow reader frees the Python thread as soon as the rest of the response
//! fits. A client that leaves closes the worker connection, which ends the app's iteration (and
//! calls its `close()`).

mod body;
mod checkout;
mod request_body;
mod response;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, Version};
use sluice_proto::{Frame, HttpVersion, RequestMeta, ResponseHead};
use tokio::time::{timeout_at, Instant};

use crate::app::{AppState, Busy, Route};
use crate::context::{ConnInfo, RequestContext};
use crate::edge::framing::request_target;
use crate::error::GatewayError;
use crate::pool::{closed, read_frame, Kill, Lease};

pub(crate) async fn forward(route: &Route, request: Request) -> Response {
    let context = request
        .extensions()
        .get::<Arc<RequestContext>>()
        .cloned()
        .expect("pipeline::handle observes every request first");
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
    let (mut parts, body) = request.into_parts();
    let (max_body, min_rate) = {
        let config = &route.load().config;
        (config.max_body, config.edge.min_body_rate)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(GatewayError::BodyTooLarge);
    }
    let has_body = declared.is_some() || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let (chunks, body_len) = request_body::read_body(body, max_body, min_rate).await?;
    // The body may have taken a while: serve it with whatever generation of the app is current.
    let app = route.load_full();

    if parts.version == Version::HTTP_2 {
        as_http1_fields(&mut parts);
    }
    if let Some(host) = &context.host {
        // The host a trusted proxy was asked for is the one the app should build URLs with.
        parts.headers.insert(header::HOST, host.clone());
    }
    let meta = request_meta(&parts, context, body_len, has_body);
    let headers = || {
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };
    exchange(route, app, &meta, headers, chunks, context).await
}

/// What the worker's frame says of the request besides its fields.
fn request_meta<'a>(
    parts: &'a http::request::Parts,
    context: &'a RequestContext,
    body_len: u64,
    has_body: bool,
) -> RequestMeta<'a> {
    let info = parts
        .extensions
        .get::<ConnInfo>()
        .copied()
        .expect("the server inserts ConnInfo");
    RequestMeta {
        request_id: context.id_str().as_bytes(),
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
    }
}

/// Sends the request to a Python thread, waits for its response head, and answers with it.
async fn exchange<'h, H, I>(
    route: &Route,
    app: Arc<AppState>,
    meta: &RequestMeta<'_>,
    headers: H,
    chunks: Vec<Bytes>,
    context: &Arc<RequestContext>,
) -> Result<Response, GatewayError>
where
    H: Fn() -> I,
    I: Iterator<Item = (&'h [u8], &'h [u8])>,
{
    let queued_at = Instant::now();
    let (app, mut conn) = checkout::deliver(route, app, meta, headers, &chunks).await?;
    drop(chunks);
    conn.worker.note_request();
    let sent_at = Instant::now();
    context.timing.set_queued(sent_at - queued_at);
    let busy = Busy::new(&app);
    let head = match response_head(&app, &mut conn, context.id_str()).await {
        Ok(head) => head,
        Err((err, how)) => {
            if matches!(err, GatewayError::AppFailed) {
                context.timing.set_python(sent_at.elapsed());
            }
            how(conn);
            return Err(err);
        }
    };
    response::respond(&app, conn, head, context, sent_at, busy)
}

/// How a lease ends when its exchange failed before a response head.
type EndLease = fn(Lease);

/// Reads the response head within the app's timeout. A request that runs past it gets its
/// worker killed (with a dump of every thread's traceback first).
async fn response_head(
    app: &AppState,
    conn: &mut Lease,
    request_id: &str,
) -> Result<ResponseHead, (GatewayError, EndLease)> {
    let name = &app.config.name;
    let pid = conn.worker.pid;
    let deadline = Instant::now() + app.config.timeout;
    let outcome = match timeout_at(deadline, read_frame(conn)).await {
        Err(_) => {
            tracing::error!(app = %name, request_id, pid,
                "request ran past the {:?} timeout; killing its worker", app.config.timeout);
            conn.worker.kill(Kill::DumpThenKill);
            return Err((GatewayError::UpstreamTimeout, Lease::end_early));
        }
        Ok(outcome) => outcome,
    };
    let (why, in_step) = match outcome {
        Ok(Some(Frame::ResponseHead(head))) => return Ok(head),
        Ok(Some(Frame::Error(_, message))) => {
            tracing::error!(app = %name, request_id,
                "app failed before responding: {} (traceback in the app's log above)", String::from_utf8_lossy(&message));
            return Err((GatewayError::AppFailed, Lease::end_in_step));
        }
        Ok(None) => ("closed the connection".to_string(), true),
        Ok(Some(frame)) => (format!("sent {frame:?} instead of a response head"), false),
        Err(err) => (err.to_string(), closed(&err)),
    };
    tracing::error!(app = %name, request_id, pid, "worker {why} before answering");
    let end: EndLease = if in_step {
        Lease::end_early
    } else {
        Lease::end_out_of_step
    };
    Err((GatewayError::WorkerGone, end))
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
