//! Getting a request to a Python thread: a free worker connection from the pool, or the place
//! behind a request in flight (see `pool::lease`), whichever comes first, and the request
//! written there.

use std::sync::Arc;

use bytes::Bytes;
use deadpool::managed::{Object, PoolError};
use sluice_proto::{RequestMeta, COALESCE_BYTES};
use tokio::time::{timeout_at, Instant};

use crate::app::{AppState, Route};
use crate::error::GatewayError;
use crate::pool::{write_request, Lease, Manager, QueueOutcome, Reservation};

/// What a request waiting for a Python thread got first.
enum Waited {
    /// A connection from the pool (or why none came).
    Pool(
        Result<
            Result<Object<Manager>, PoolError<std::convert::Infallible>>,
            tokio::time::error::Elapsed,
        >,
    ),
    /// The place behind a request that has just gone out.
    Behind(Reservation),
}

/// Sends the request on a pooled connection, or queued behind a request in flight. A write
/// that finds a pooled connection dead (its worker left while it sat idle) means nothing
/// reached Python, so another connection is tried, within the queue timeout and never more
/// often than the pool has connections. Returns the app generation that took it (a reload
/// may have replaced the one asked) and the lease to read the answer from.
pub(super) async fn deliver<'h, H, I>(
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
    // Decided once, before the first try.
    let may_queue = may_queue_behind(&app, meta);
    while attempts > 0 {
        let got = match wait(&app, may_queue, deadline).await {
            Waited::Behind(reservation) => {
                let (name, timeout) = (&app.config.name, app.config.timeout);
                match reservation
                    .queue(meta, headers(), chunks, name, timeout)
                    .await
                {
                    QueueOutcome::Ready(lease) => {
                        app.metrics.queued_behind.inc();
                        return Ok((app, lease));
                    }
                    QueueOutcome::SendElsewhere => continue,
                    QueueOutcome::Failed(err) => return Err(err),
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
        if let Some(lease) = send(&app, conn, meta, headers(), chunks).await {
            return Ok((app, lease));
        }
    }
    Err(GatewayError::WorkerGone)
}

/// Takes a free connection first; else, if it `may_queue`, goes straight behind a request in
/// flight, but only when nobody waits for a connection: those who do come first
/// ([`wait_for_place`]).
async fn wait(app: &AppState, may_queue: bool, deadline: Instant) -> Waited {
    let status = app.pool.status();
    if may_queue && status.available == 0 {
        if status.waiting == 0 {
            if let Some(reservation) = app.relays.reserve() {
                return Waited::Behind(reservation);
            }
        }
        return wait_for_place(app, deadline).await;
    }
    Waited::Pool(timeout_at(deadline, app.pool.get()).await)
}

/// Writes the request on a connection from the pool; `None` if the connection was dead.
async fn send<'h>(
    app: &AppState,
    conn: Object<Manager>,
    meta: &RequestMeta<'_>,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    chunks: &[Bytes],
) -> Option<Lease> {
    let mut lease = Lease::new(conn, &app.relays);
    let mut buf = std::mem::take(&mut lease.write_buf);
    let shared = lease.shared.clone();
    let written = write_request(
        &lease.stream,
        &mut buf,
        shared.as_deref(),
        meta,
        headers,
        chunks,
    )
    .await;
    lease.write_buf = buf;
    match written {
        Ok(()) => {
            lease.sent();
            Some(lease)
        }
        Err(err) => {
            tracing::debug!(app = %app.config.name, pid = lease.worker.pid, "stale worker connection: {err}");
            lease.end_out_of_step();
            None
        }
    }
}

/// Whether this request may queue behind another in flight (see `pool::lease`): only for a body
/// small enough to travel in the request's own frames (the memory a connection shares may still
/// hold the body of the request in front), and only in an app fast enough for it.
fn may_queue_behind(app: &AppState, meta: &RequestMeta<'_>) -> bool {
    meta.body_len <= COALESCE_BYTES as u64 && app.relays.allowed()
}

/// Waits for a pooled connection or for the place behind a request going out, whichever comes
/// first. Both queues are first come, first served, and every waiter is in both, so a request
/// that arrives later never overtakes one that waits.
async fn wait_for_place(app: &AppState, deadline: Instant) -> Waited {
    let get = timeout_at(deadline, app.pool.get());
    tokio::pin!(get);
    loop {
        let opened = app.relays.opened();
        tokio::select! {
            biased;
            got = &mut get => return Waited::Pool(got),
            () = opened => {
                if app.pool.status().available == 0 {
                    if let Some(reservation) = app.relays.reserve() {
                        return Waited::Behind(reservation);
                    }
                }
            }
        }
    }
}
