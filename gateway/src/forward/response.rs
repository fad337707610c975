//! The framed answer turned back into HTTP: the response head, then the body. A body that came
//! whole with the first reads goes out as one body and its connection goes straight back; any
//! longer body is pumped by a task through a channel bounded in bytes (see `body`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use sluice_proto::{decode, Frame, ResponseHead};
use tokio::time::{timeout, Instant};

use super::body::{body_channel, BodySender, WholeBody};
use crate::app::{AppState, Busy};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::pool::{closed, large_bodies, read_frame, shared_chunk, Kill, Lease};

/// Turns the answer whose `head` has been read on `conn` into the client's response.
pub(super) fn respond(
    app: &AppState,
    mut conn: Lease,
    head: ResponseHead,
    context: &Arc<RequestContext>,
    sent_at: Instant,
    busy: Busy,
) -> Result<Response, GatewayError> {
    let request_id = context.id_str();
    // On an error the lease is dropped, which closes the connection: the answer is unread.
    let mut response = response_head(app, head, request_id)?;
    let (early, next) = match first_reads(&mut conn) {
        Ok(FirstReads::Whole(chunks)) => {
            *response.body_mut() = whole_body(chunks);
            conn.end_in_step();
            context.timing.set_python(sent_at.elapsed());
            return Ok(response);
        }
        Ok(FirstReads::More { chunks, next }) => (chunks, next),
        Err(err) => {
            tracing::error!(app = %app.config.name, request_id, "{err}");
            conn.end_out_of_step();
            return Err(GatewayError::AppFailed);
        }
    };
    conn.no_more_behind();
    let (tx, body) = body_channel(app.config.edge.response_buffer);
    let name = app.config.name.clone();
    let idle = app.config.timeout;
    let context = context.clone();
    tokio::spawn(async move {
        for chunk in early {
            if tx.send(chunk).await.is_err() {
                conn.end_early();
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

/// The response's status, reason and headers, as the app gave them.
fn response_head(
    app: &AppState,
    head: ResponseHead,
    request_id: &str,
) -> Result<Response, GatewayError> {
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
                return Err(GatewayError::AppFailed);
            }
        }
    }
    Ok(response)
}

/// What the first reads brought in beyond the head.
enum FirstReads {
    /// The whole body and its end.
    Whole(Vec<Bytes>),
    /// The start of the body, and a frame other than body or end if one came (an error frame:
    /// decoding took it off the buffer, so the pump must be handed it, not left to wait for
    /// another).
    More {
        chunks: Vec<Bytes>,
        next: Option<Frame>,
    },
}

/// Takes what the first reads brought in beyond the head: often the whole body and its end.
/// An error is a shared chunk the connection cannot have.
fn first_reads(conn: &mut Lease) -> std::io::Result<FirstReads> {
    let mut chunks = Vec::new();
    // A large body frame still arriving is the pump's to read (into a pooled buffer).
    while large_bodies::large_body_ahead(&conn.read_buf).is_none() {
        match decode(&mut conn.read_buf) {
            Ok(Some(Frame::ResponseBody(chunk))) => chunks.push(chunk),
            Ok(Some(Frame::ResponseBodyShared { cell, len })) => {
                chunks.push(shared_chunk(conn, cell, len)?);
            }
            Ok(Some(Frame::ResponseEnd)) => return Ok(FirstReads::Whole(chunks)),
            Ok(None) => break,
            // An error frame right behind the head: the pump reports it.
            Ok(Some(frame)) => {
                let next = Some(frame);
                return Ok(FirstReads::More { chunks, next });
            }
            // Garbage: still in the buffer, where the pump's first decode finds it again.
            Err(_) => break,
        }
    }
    Ok(FirstReads::More { chunks, next: None })
}

/// A body that is all here.
fn whole_body(mut chunks: Vec<Bytes>) -> Body {
    match chunks.len() {
        0 => Body::empty(),
        1 => Body::from(chunks.pop().expect("one chunk")),
        // As they are: chunks may be large, and those in shared cells are never copied.
        _ => Body::new(WholeBody(chunks.into())),
    }
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
                    conn.end_early();
                } else {
                    conn.end_out_of_step();
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
                conn.end_out_of_step();
                return;
            }
        };
        match pass_on(frame, tx, app, request_id).await {
            Passed::More => {}
            Passed::End => return conn.end_in_step(),
            Passed::ClientGone => return conn.end_early(),
            Passed::OutOfStep => return conn.end_out_of_step(),
        }
    }
}

/// What the pump does after one frame.
enum Passed {
    /// Read on.
    More,
    /// The answer has ended (completely, or with the app's error): the stream is in step.
    End,
    /// The client left: closing the worker connection stops the app's iteration.
    ClientGone,
    /// A frame that has no place in a body: the stream cannot be trusted.
    OutOfStep,
}

/// Passes one frame of the answer on to the client's body channel.
async fn pass_on(frame: Frame, tx: &BodySender, app: &str, request_id: &str) -> Passed {
    match frame {
        Frame::ResponseBody(chunk) => match tx.send(chunk).await {
            Ok(()) => Passed::More,
            Err(_) => Passed::ClientGone,
        },
        Frame::ResponseEnd => Passed::End,
        Frame::Error(_, message) => {
            tracing::error!(
                app,
                request_id,
                "app failed after its response began: {}; cutting it off",
                String::from_utf8_lossy(&message)
            );
            tx.fail("app failed");
            Passed::End
        }
        other => {
            tracing::error!(
                app,
                request_id,
                "worker sent {other:?} inside a response body"
            );
            tx.fail("protocol error");
            Passed::OutOfStep
        }
    }
}
