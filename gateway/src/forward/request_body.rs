//! Request body intake: the whole body read and held by the gateway before any worker is
//! involved, so a slow upload never holds a Python thread; too large is 413, too slow 408.

use std::future::Future as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::Body as _;
use tokio::time::Instant;

use crate::error::GatewayError;

/// How long a request body may lag behind `min_body_rate` before it is cut off: the credit a
/// client has for a slow start (TCP's, a phone waking its radio) or a pause.
const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// Collects the whole request body, no more than `max_body` bytes, as the chunks it came in.
///
/// With a `min_rate` (bytes per second; 0 is none), the body must keep up with that rate from
/// the moment its head was read, less a [`BODY_RATE_GRACE`]: by `t` seconds in it must have
/// sent `min_rate × (t − grace)` bytes, so its average rate tends to `min_rate`. A body that
/// falls behind gets 408 and the connection is closed; none of it reaches Python.
pub(super) async fn read_body(
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
