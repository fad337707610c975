//! A worker connection lent to one request ([`Lease`]), and the request that may queue behind
//! it on the same connection (pipelining, depth 2). All of pipelining is here.
//!
//! A worker thread reads its connection's requests in order and starts the next only after it
//! has written the end of the one before. When every connection of an app is busy, a request
//! may go out on one of them behind the request in flight there, instead of waiting in the pool
//! for one to come back. The thread then finds it waiting as it finishes, instead of going to
//! sleep until the gateway has read the answer and sent the next: on 2 CPUs that sleep and its
//! wake-up were most of a hello request's cost on both sides.
//!
//! The request behind is written at once but reads its answer only when the request in front
//! (the holder of the lease) is done with the connection: the holder's lease hands the
//! connection over, saying in what [`StreamState`] it leaves the stream.
//!
//! Whether the request behind runs is decided once, for both sides, by a compare-and-swap on a
//! word of the memory the connection shares with its worker (`sluice_proto::shared::queue`): the
//! worker claims the request before starting it, and the gateway may take it back before that.
//! Taking it back is what keeps a request from waiting behind a slow one: a request still
//! waiting once the holder has been out for [`SHORT_REQUEST`] takes itself back and waits in the
//! pool for the first free thread instead, as it would have without queueing. It is also what
//! makes a failure exact: when the holder's exchange breaks (its client left, its worker died or
//! was killed), a request behind that can be taken back never reached Python and is sent again
//! elsewhere; one that cannot was started, and reads its own answer (or fails with its worker)
//! like any request.
//!
//! Queueing happens only when no connection of the app is free, only on connections that share
//! memory, only behind a request that went out less than [`SHORT_REQUEST`] ago, and only for
//! apps whose requests take less than that on average (from going out to their end): for slower
//! apps the sleep it saves is nothing beside the request, and the request behind would mostly be
//! taken back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deadpool::managed::Object;
use sluice_proto::RequestMeta;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::conn::{Manager, WorkerConn};
use super::exchange::{skip_answer, write_request};
use super::shared::Region;
use super::workers::Worker;
use crate::error::GatewayError;

/// Queueing behind is for apps whose requests take less than this on average, and only behind
/// a request that went out less than this long ago; a request behind still waiting when the
/// request in front has been out this long takes itself back.
const SHORT_REQUEST: Duration = Duration::from_millis(5);
/// The weight of the newest request in the average: 1/16.
const AVERAGE_SHIFT: u32 = 4;

type Conn = Object<Manager>;

/// The state in which a holder leaves the stream for the request queued behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// The answer in front was read to its end: the next frame is the request behind's.
    InStep,
    /// The answer in front was cut short (its client left): the rest of it comes first, to be
    /// read and dropped.
    AnswerLeft,
    /// The stream may be out of step with the worker (a frame half read, garbage, a timeout):
    /// nobody can use it.
    OutOfStep,
}

/// What the request queued behind hears from the holder.
enum Relayed {
    /// The connection is its now.
    Handoff(Conn, StreamState),
    /// It was taken back from the connection (see [`Lease::no_more_behind`]): it never runs,
    /// and is to be sent elsewhere.
    TakenBack,
}

/// A request queued behind a holder: how to tell it, and its number in the queue word.
struct QueuedRequest {
    tell: oneshot::Sender<Relayed>,
    number: u32,
}

/// Who is behind the request in flight on one connection.
enum Behind {
    /// Nobody yet: the place is open.
    Nobody,
    /// A request is queued (or being written): the connection goes to it.
    Queued(QueuedRequest),
    /// The holder is done with the connection, or lets nobody queue behind it.
    Closed,
}

/// The place behind one request in flight.
pub(crate) struct PlaceBehind {
    stream: Arc<UnixStream>,
    shared: Arc<Region>,
    worker: Arc<Worker>,
    /// When the request in front went out.
    sent_at: Instant,
    behind: Mutex<Behind>,
}

impl PlaceBehind {
    /// Takes the request queued here back from this connection, unless the worker has started
    /// it or the holder is already handing the connection over. The holder then keeps the
    /// connection, and the worker drops the request unanswered.
    fn take_back(&self) -> bool {
        let mut behind = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*behind, Behind::Queued(queued) if self.shared.cancel(queued.number)) {
            // Dropping the sender: the holder finds nobody behind it.
            *behind = Behind::Closed;
            return true;
        }
        false
    }
}

/// One app's requests in flight that a request may queue behind.
pub(crate) struct Relays {
    open: Mutex<Vec<Arc<PlaceBehind>>>,
    /// Signalled (one waiter at a time, the longest waiting first) when a place opens.
    opened: tokio::sync::Notify,
    /// The moving average of the app's requests, from going out to their end, in nanoseconds.
    average: AtomicU64,
}

impl Default for Relays {
    fn default() -> Relays {
        Relays {
            open: Mutex::new(Vec::new()),
            opened: tokio::sync::Notify::new(),
            average: AtomicU64::new(0),
        }
    }
}

/// A place behind a request in flight, taken by one request: its number there, and where it
/// hears from the holder.
pub(crate) struct Reservation {
    relays: Arc<Relays>,
    place: Arc<PlaceBehind>,
    number: u32,
    hear: oneshot::Receiver<Relayed>,
}

/// How queueing behind another request went.
pub(crate) enum QueueOutcome {
    /// Sent, and the connection is its: the answer to read next is this request's.
    Ready(Lease),
    /// Taken back before it reached Python: send it elsewhere.
    SendElsewhere,
    Failed(GatewayError),
}

impl Relays {
    /// Whether requests of this app may queue behind each other now.
    pub(crate) fn allowed(&self) -> bool {
        self.average.load(Ordering::Relaxed) < SHORT_REQUEST.as_nanos() as u64
    }

    /// Counts a request that took `took` from going out to its end. (Two requests ending at
    /// once may lose one of their updates: an average does not need them all.)
    fn note(&self, took: Duration) {
        let took = took.as_nanos().min(u128::from(u64::MAX >> 1)) as u64;
        let average = self.average.load(Ordering::Relaxed);
        let next = if took >= average {
            average + ((took - average) >> AVERAGE_SHIFT)
        } else {
            average - ((average - took) >> AVERAGE_SHIFT)
        };
        self.average.store(next, Ordering::Relaxed);
    }

    /// Opens the place behind a request that has just gone out on `conn`.
    fn open(&self, conn: &WorkerConn, shared: &Arc<Region>) -> Arc<PlaceBehind> {
        let place = Arc::new(PlaceBehind {
            stream: conn.stream.clone(),
            shared: shared.clone(),
            worker: conn.worker.clone(),
            sent_at: Instant::now(),
            behind: Mutex::new(Behind::Nobody),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(place.clone());
        self.opened.notify_one();
        place
    }

    /// Closes `place` (its holder is done with the connection, or will not let anyone wait for
    /// it) and gives the request queued there, if any.
    fn close(&self, place: &Arc<PlaceBehind>) -> Option<QueuedRequest> {
        self.unlist(place);
        let mut behind = place.behind.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *behind, Behind::Closed) {
            Behind::Queued(queued) => Some(queued),
            Behind::Nobody | Behind::Closed => None,
        }
    }

    /// Completes when a place may have opened.
    pub(crate) fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.opened.notified()
    }

    fn unlist(&self, place: &Arc<PlaceBehind>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = open.iter().position(|p| Arc::ptr_eq(p, place)) {
            open.swap_remove(at);
        }
    }

    /// Takes the place behind the oldest request in flight that is still young, on a worker in
    /// rotation, and numbers the request to queue there (see [`Region::queue_next`]).
    pub(crate) fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        let place = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.iter()
                .filter(|p| p.sent_at.elapsed() < SHORT_REQUEST && p.worker.is_alive())
                .min_by_key(|p| p.sent_at)?
                .clone()
        };
        self.take(place)
    }

    /// Takes `place` for a request to queue there, if nobody has.
    fn take(self: &Arc<Self>, place: Arc<PlaceBehind>) -> Option<Reservation> {
        self.unlist(&place);
        let mut behind = place.behind.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*behind, Behind::Nobody) {
            return None;
        }
        let number = place.shared.queue_next()?;
        let (tell, hear) = oneshot::channel();
        *behind = Behind::Queued(QueuedRequest { tell, number });
        drop(behind);
        Some(Reservation {
            relays: self.clone(),
            place,
            number,
            hear,
        })
    }
}

/// A worker connection lent to one request, with the place behind that request where another
/// may queue. However it ends (in step, early, out of step, or dropped with its request's
/// future when the client leaves), a request queued behind gets the connection.
pub(crate) struct Lease {
    conn: Option<Conn>,
    relays: Arc<Relays>,
    place: Option<Arc<PlaceBehind>>,
    /// The request queued behind, once the place is closed (see [`Lease::no_more_behind`]).
    queued: Option<QueuedRequest>,
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
    /// Lends `conn` for an exchange about to begin: until its answer has been read to the end,
    /// a connection dropped (its client left) is closed, never pooled with that answer to come.
    pub(crate) fn new(mut conn: Conn, relays: &Arc<Relays>) -> Lease {
        conn.reusable = false;
        Lease {
            conn: Some(conn),
            relays: relays.clone(),
            place: None,
            queued: None,
            since: Instant::now(),
        }
    }

    /// Its request has gone out whole: lets another request queue behind it.
    pub(crate) fn sent(&mut self) {
        self.since = Instant::now();
        if let Some(shared) = self.shared.clone().filter(|_| self.relays.allowed()) {
            self.place = Some(self.relays.open(self, &shared));
        }
    }

    /// Lets nobody more queue behind this request, whose answer goes on beyond its first read
    /// (a large or streamed body, which a slow client may hold up), and sends a request already
    /// queued behind elsewhere unless the worker has started it.
    pub(crate) fn no_more_behind(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        let Some(queued) = self.relays.close(&place) else {
            return;
        };
        if place.shared.cancel(queued.number) {
            let _ = queued.tell.send(Relayed::TakenBack);
        } else {
            self.queued = Some(queued);
        }
    }

    /// Ends a loan whose answer was read to its end.
    pub(crate) fn end_in_step(mut self) {
        self.end(StreamState::InStep);
    }

    /// Ends a loan before its answer did, with the stream still in step: the connection is
    /// closed, unless a request queued behind takes it over.
    pub(crate) fn end_early(mut self) {
        self.end(StreamState::AnswerLeft);
    }

    /// Ends a loan whose stream may be out of step with the worker.
    pub(crate) fn end_out_of_step(mut self) {
        self.end(StreamState::OutOfStep);
    }

    /// The connection goes to the request queued behind, if any, with the state it is left in;
    /// else back to the pool if the exchange ended in step, and is closed if not (the worker
    /// sees the close, stops the app's iteration, frees the thread).
    fn end(&mut self, state: StreamState) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.relays.note(self.since.elapsed());
        let place = self.place.take();
        let queued = self
            .queued
            .take()
            .or_else(|| place.and_then(|p| self.relays.close(&p)));
        if let Some(queued) = queued {
            match queued.tell.send(Relayed::Handoff(conn, state)) {
                Ok(()) => return,
                // The request behind has gone (its client left) and its answer would come
                // next, unread.
                Err(Relayed::Handoff(back, _)) => conn = back,
                Err(Relayed::TakenBack) => unreachable!("sent a handoff"),
            }
        } else if state == StreamState::InStep && conn.worker.is_alive() {
            conn.reusable = true;
            return;
        }
        // Out of step, or its worker has left rotation (being replaced or stopped): closing it
        // is what lets that worker finish.
        close(conn);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped mid-exchange with its request's future: the rest of the answer is unread.
        self.end(StreamState::AnswerLeft);
    }
}

/// Closes a connection for good, never to be pooled again.
fn close(conn: Conn) {
    drop(Object::take(conn));
}

impl Reservation {
    /// Writes the request behind the one in flight, then waits for that one to be done with the
    /// connection, or takes the request back (see the module's doc). `timeout` is the app's
    /// request timeout, `app` its name for the log.
    pub(crate) async fn queue<'h>(
        self,
        meta: &RequestMeta<'_>,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        chunks: &[Bytes],
        app: &str,
        timeout: Duration,
    ) -> QueueOutcome {
        let meta = RequestMeta {
            queued: self.number,
            ..*meta
        };
        let mut buf = BytesMut::new();
        let place = self.place.clone();
        if let Err(err) = write_request(&place.stream, &mut buf, None, &meta, headers, chunks).await
        {
            // The holder closes the connection, finding nobody to hand it to; should it be
            // handing it over already, the connection is dropped with the receiver, closed.
            tracing::debug!(pid = place.worker.pid, "stale worker connection: {err}");
            place.take_back();
            return QueueOutcome::SendElsewhere;
        }
        let number = self.number;
        let relays = self.relays.clone();
        let (conn, state) = match self.wait_for_handoff(app, timeout).await {
            Ok(handoff) => handoff,
            Err(outcome) => return outcome,
        };
        take_over(conn, state, number, &relays).await
    }

    /// Waits for the holder to hand the connection over. Takes the request back if the holder
    /// has been out for [`SHORT_REQUEST`]; once it can no longer be taken back (started, or
    /// about to be), its own `timeout` runs.
    async fn wait_for_handoff(
        self,
        app: &str,
        timeout: Duration,
    ) -> Result<(Conn, StreamState), QueueOutcome> {
        let Reservation { place, hear, .. } = self;
        let escape = place.sent_at + SHORT_REQUEST;
        tokio::pin!(hear);
        let mut waiting_behind = true;
        let mut started_by = Instant::now() + timeout;
        let heard = loop {
            tokio::select! {
                biased;
                heard = &mut hear => break heard,
                () = tokio::time::sleep_until(escape), if waiting_behind => {
                    if place.take_back() {
                        return Err(QueueOutcome::SendElsewhere);
                    }
                    // Started, or about to be: the request in front is done, though its answer
                    // may still be on its way to a slow client. Its own timeout runs from now.
                    waiting_behind = false;
                    started_by = Instant::now() + timeout;
                }
                () = tokio::time::sleep_until(started_by), if !waiting_behind => {
                    // Its answer is stuck behind the one in front: dropping the receiver makes
                    // the holder close the connection when it is done.
                    tracing::error!(app, pid = place.worker.pid,
                        "a request queued behind another got no connection within the {timeout:?} timeout");
                    return Err(QueueOutcome::Failed(GatewayError::UpstreamTimeout));
                }
            }
        };
        match heard {
            Ok(Relayed::Handoff(conn, state)) => Ok((conn, state)),
            Ok(Relayed::TakenBack) => Err(QueueOutcome::SendElsewhere),
            Err(_) => Err(QueueOutcome::Failed(GatewayError::WorkerGone)),
        }
    }
}

/// Takes over a connection handed over in `state`, for the request queued there as `number`:
/// settled to run, taken back to go elsewhere, or failed with the stream.
async fn take_over(
    mut conn: Conn,
    state: StreamState,
    number: u32,
    relays: &Arc<Relays>,
) -> QueueOutcome {
    let shared = conn
        .shared
        .clone()
        .expect("requests queue only behind connections that share memory");
    let taken_back = match state {
        // Its worker is leaving rotation: rather than start there, go elsewhere if it still can.
        StreamState::InStep if !conn.worker.is_alive() => shared.cancel(number),
        StreamState::InStep => {
            shared.settle(number);
            false
        }
        // The exchange in front broke. Taken back, this request never reached Python: the
        // connection closes (which also ends what is left of the answer in front), and the
        // request goes elsewhere.
        StreamState::AnswerLeft | StreamState::OutOfStep => shared.cancel(number),
    };
    if taken_back {
        close(conn);
        return QueueOutcome::SendElsewhere;
    }
    match state {
        StreamState::InStep => {}
        // Started: the worker has finished the answer in front, and this one comes after it.
        StreamState::AnswerLeft => match skip_answer(&mut conn).await {
            Ok(true) => {}
            Ok(false) => {
                close(conn);
                return QueueOutcome::Failed(GatewayError::WorkerGone);
            }
            Err(err) => {
                tracing::error!(pid = conn.worker.pid, "worker sent garbage: {err}");
                close(conn);
                return QueueOutcome::Failed(GatewayError::WorkerGone);
            }
        },
        StreamState::OutOfStep => {
            close(conn);
            return QueueOutcome::Failed(GatewayError::WorkerGone);
        }
    }
    let mut lease = Lease::new(conn, relays);
    lease.sent();
    QueueOutcome::Ready(lease)
}

#[cfg(test)]
mod tests {
    //! The lease and the request behind it over real Unix sockets, with the test playing the
    //! worker thread: hand-off in step, take-back before the worker starts a request, and a
    //! worker that dies with a request queued behind.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::BytesMut;
    use sluice_proto::{decode, encode_end, encode_response_head, Frame, HttpVersion, Scheme};
    use sluice_proto::{RequestHead, PREFACE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::pool::{build, read_frame, Pool, Workers};

    /// A worker thread's end of the one connection of a pool of one.
    struct FakeThread {
        stream: UnixStream,
        buf: BytesMut,
    }

    impl FakeThread {
        /// The next request head the gateway sent.
        async fn request(&mut self) -> RequestHead {
            loop {
                if let Some(frame) = decode(&mut self.buf).unwrap() {
                    match frame {
                        Frame::RequestHead(head) => return head,
                        other => panic!("expected a request head, got {other:?}"),
                    }
                }
                assert!(self.stream.read_buf(&mut self.buf).await.unwrap() > 0);
            }
        }

        async fn answer(&mut self, status: u16) {
            let mut out = BytesMut::new();
            encode_response_head(&mut out, status, b"", []).unwrap();
            encode_end(&mut out);
            self.stream.write_all(&out).await.unwrap();
        }
    }

    /// A pool of one connection to one worker thread, which the test plays.
    async fn pool_of_one() -> (Pool, Arc<Relays>, FakeThread) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = std::env::temp_dir().join(format!(
            "sluice-lease-test-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let workers = Arc::new(Workers::default());
        let (kill, _) = tokio::sync::mpsc::unbounded_channel();
        workers.add(Arc::new(Worker::new(1, socket.clone(), 1, None, kill)));
        let pool = build(workers, 1);
        let accept = async {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 8];
            stream.read_exact(&mut preface).await.unwrap();
            // Say the memory is shared: the gateway keeps its side, which is all that decides.
            stream.write_all(PREFACE).await.unwrap();
            stream
        };
        let (stream, conn) = tokio::join!(accept, pool.get());
        drop(conn.unwrap());
        std::fs::remove_file(socket).unwrap();
        let thread = FakeThread {
            stream,
            buf: BytesMut::new(),
        };
        (pool, Arc::new(Relays::default()), thread)
    }

    fn meta(id: &[u8]) -> RequestMeta<'_> {
        RequestMeta {
            request_id: id,
            method: b"GET",
            target: b"/",
            version: HttpVersion::Http11,
            scheme: Scheme::Http,
            peer: None,
            local: None,
            body_len: 0,
            has_body: false,
            queued: 0,
        }
    }

    /// Lends the pool's connection and sends a request on it, with the place behind open.
    async fn lend(pool: &Pool, relays: &Arc<Relays>) -> Lease {
        let mut lease = Lease::new(pool.get().await.unwrap(), relays);
        let mut buf = BytesMut::new();
        let stream = lease.stream.clone();
        write_request(
            &stream,
            &mut buf,
            None,
            &meta(b"front"),
            [].into_iter(),
            &[],
        )
        .await
        .unwrap();
        lease.sent();
        lease
    }

    /// Takes the place behind `lease`'s request (as `reserve` does, without its clock).
    fn reserve_behind(lease: &Lease, relays: &Arc<Relays>) -> Reservation {
        let place = lease.place.clone().expect("the place behind is open");
        relays.take(place).expect("nobody is behind yet")
    }

    /// What the worker does when it starts a queued request: claims it in the queue word
    /// (the worker's own move, on the gateway's mapping of the same memory).
    fn worker_starts(lease: &Lease, reservation: &Reservation) {
        assert!(lease.shared.as_ref().unwrap().claim(reservation.number));
    }

    async fn status(lease: &mut Lease) -> u16 {
        match read_frame(lease).await.unwrap() {
            Some(Frame::ResponseHead(head)) => head.status,
            other => panic!("expected a response head, got {other:?}"),
        }
    }

    /// Reads the close of a worker that died (a reset, with requests unread in its socket).
    async fn worker_gone(lease: &mut Lease) {
        match read_frame(lease).await {
            Ok(None) => {}
            Err(err) if crate::pool::closed(&err) => {}
            other => panic!("expected the worker gone, got {other:?}"),
        }
    }

    async fn queue(reservation: Reservation) -> QueueOutcome {
        let timeout = Duration::from_secs(30);
        let headers = [].into_iter();
        reservation
            .queue(&meta(b"behind"), headers, &[], "test", timeout)
            .await
    }

    #[tokio::test]
    async fn the_holder_hands_the_connection_over_in_step() {
        let (pool, relays, mut thread) = pool_of_one().await;
        let mut front = lend(&pool, &relays).await;
        let reservation = reserve_behind(&front, &relays);
        let number = reservation.number;
        worker_starts(&front, &reservation);
        let holder = async {
            assert_eq!(&thread.request().await.request_id[..], b"front");
            let behind = thread.request().await;
            assert_eq!(
                (&behind.request_id[..], behind.queued),
                (&b"behind"[..], number)
            );
            thread.answer(200).await;
            thread.answer(201).await;
            assert_eq!(status(&mut front).await, 200);
            assert!(matches!(
                read_frame(&mut front).await,
                Ok(Some(Frame::ResponseEnd))
            ));
            front.end_in_step();
        };
        let (outcome, ()) = tokio::join!(queue(reservation), holder);
        let QueueOutcome::Ready(mut behind) = outcome else {
            panic!("the request behind did not get the connection");
        };
        assert_eq!(status(&mut behind).await, 201);
        assert!(matches!(
            read_frame(&mut behind).await,
            Ok(Some(Frame::ResponseEnd))
        ));
        behind.end_in_step();
        assert_eq!(pool.status().available, 1, "back in the pool, in step");
    }

    #[tokio::test]
    async fn a_request_not_started_in_time_is_taken_back_and_the_holder_keeps_the_connection() {
        let (pool, relays, mut thread) = pool_of_one().await;
        let mut front = lend(&pool, &relays).await;
        let reservation = reserve_behind(&front, &relays);
        // The worker is still on the request in front: past SHORT_REQUEST the one behind goes.
        assert!(matches!(
            queue(reservation).await,
            QueueOutcome::SendElsewhere
        ));
        thread.request().await;
        thread.answer(200).await;
        assert_eq!(status(&mut front).await, 200);
        assert!(matches!(
            read_frame(&mut front).await,
            Ok(Some(Frame::ResponseEnd))
        ));
        front.end_in_step();
        assert_eq!(
            pool.status().available,
            1,
            "nobody behind: back in the pool"
        );
    }

    #[tokio::test]
    async fn a_dying_worker_sends_an_unstarted_request_elsewhere() {
        let (pool, relays, thread) = pool_of_one().await;
        let mut front = lend(&pool, &relays).await;
        let reservation = reserve_behind(&front, &relays);
        let holder = async {
            drop(thread);
            worker_gone(&mut front).await;
            front.end_early();
        };
        let (outcome, ()) = tokio::join!(queue(reservation), holder);
        assert!(matches!(outcome, QueueOutcome::SendElsewhere));
        assert_eq!(
            pool.status().size,
            0,
            "the dead connection is closed, not pooled"
        );
    }

    #[tokio::test]
    async fn a_dying_worker_fails_a_started_request() {
        let (pool, relays, thread) = pool_of_one().await;
        let mut front = lend(&pool, &relays).await;
        let reservation = reserve_behind(&front, &relays);
        worker_starts(&front, &reservation);
        let holder = async {
            drop(thread);
            worker_gone(&mut front).await;
            front.end_early();
        };
        let (outcome, ()) = tokio::join!(queue(reservation), holder);
        assert!(matches!(
            outcome,
            QueueOutcome::Failed(GatewayError::WorkerGone)
        ));
        assert_eq!(
            pool.status().size,
            0,
            "the dead connection is closed, not pooled"
        );
    }
}
