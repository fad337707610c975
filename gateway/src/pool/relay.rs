//! A request queued behind another on the same worker connection (pipelining, depth 2).
//!
//! A worker thread reads its connection's requests in order and starts the next only after it
//! has written the end of the one before. When every connection of an app is busy, a request
//! may go out on one of them behind the request in flight there, instead of waiting in the pool
//! for one to come back. The thread then finds it waiting as it finishes, instead of going to
//! sleep until the gateway has read the answer and sent the next: on 2 CPUs that sleep and its
//! wake-up were most of a hello request's cost on both sides.
//!
//! The request behind (the successor) is written at once but read only when the one in front
//! (the holder) is done with the connection: the holder's `forward::Lease` hands the connection
//! over through the relay with what the successor must do first ([`After`]).
//!
//! Whether the successor runs is decided once, for both sides, by a compare-and-swap on a word
//! of the memory the connection shares with its worker (`sluice_proto::shared::queue`): the
//! worker claims the request before starting it, and the gateway may take it back before that.
//! Taking it back is what keeps a request from waiting behind a slow one: a successor still
//! waiting once the holder has been out for [`FAST`] takes its request back and waits in the
//! pool for the first free thread instead, as it would have without queueing. It is also what
//! makes a failure exact: when the holder's exchange breaks (its client left, its worker died or
//! was killed), a successor that can take its request back never reached Python and is sent
//! again elsewhere; one that cannot was started, and reads its own answer (or fails with its
//! worker) like any request.
//!
//! Queueing happens only when no connection of the app is free, only on connections that share
//! memory, only behind a request that went out less than [`FAST`] ago, and only for apps whose
//! requests take less than that on average (from going out to their end): for slower apps the
//! sleep it saves is nothing beside the request, and the successor would mostly be taken back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::Object;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::pool::shared::Region;
use crate::pool::{Manager, Worker};

/// Queueing behind is for apps whose requests take less than this on average, and only behind
/// a request that went out less than this long ago; a successor still waiting when the request
/// in front has been out this long takes its request back.
pub(crate) const FAST: Duration = Duration::from_millis(5);
/// The weight of the newest request in the average: 1/16.
const AVERAGE_SHIFT: u32 = 4;

/// What the next holder of a connection handed over must do before reading its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// The answer before it was read to the end.
    Nothing,
    /// Read and drop what is left of the answer before it.
    Skip,
    /// The stream may be out of step: give up on it.
    Fail,
}

/// A connection handed to the request queued behind.
pub(crate) struct Handoff {
    pub(crate) conn: Object<Manager>,
    pub(crate) after: After,
}

/// What the request queued behind hears from the one in front.
pub(crate) enum Relayed {
    /// The connection is its now.
    Handoff(Handoff),
    /// The request in front took it back (see `forward::Lease::stop_relay`): it never runs, and
    /// is to be sent elsewhere.
    TakenBack,
}

/// The sending side of [`Relayed`], with the number of the request queued.
pub(crate) type Successor = (oneshot::Sender<Relayed>, u32);

enum Slot {
    /// Nobody queued behind yet.
    Open,
    /// A request is queued behind (or being written): the connection goes to it.
    Queued(Successor),
    /// The holder is done with the connection.
    Closed,
}

/// The place behind one request in flight.
pub(crate) struct Relay {
    pub(crate) stream: Arc<UnixStream>,
    pub(crate) shared: Arc<Region>,
    pub(crate) worker: Arc<Worker>,
    /// When the request in front went out.
    pub(crate) sent_at: Instant,
    slot: Mutex<Slot>,
}

impl Relay {
    /// Takes the request queued here back from this connection, unless the worker has started
    /// it or the request in front is already handing the connection over. The request in front
    /// then keeps the connection, and the worker drops the request unanswered.
    pub(crate) fn take_back(&self) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*slot, Slot::Queued((_, number)) if self.shared.cancel(number)) {
            // Dropping the sender: the request in front finds nobody behind it.
            *slot = Slot::Closed;
            return true;
        }
        false
    }
}

/// One app's requests in flight that a request may queue behind.
pub(crate) struct Relays {
    open: Mutex<Vec<Arc<Relay>>>,
    /// Signalled (one waiter at a time, the longest waiting first) when a place opens.
    opened: tokio::sync::Notify,
    /// The moving average of the app's requests, from going out to their end, in nanoseconds.
    average: AtomicU64,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").finish_non_exhaustive()
    }
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

impl Relays {
    /// Whether requests of this app may queue behind each other now.
    pub(crate) fn allowed(&self) -> bool {
        self.average.load(Ordering::Relaxed) < FAST.as_nanos() as u64
    }

    /// Counts a request that took `took` from going out to its end. (Two requests ending at
    /// once may lose one of their updates: an average does not need them all.)
    pub(crate) fn note(&self, took: Duration) {
        let took = took.as_nanos().min(u128::from(u64::MAX >> 1)) as u64;
        let average = self.average.load(Ordering::Relaxed);
        let next = if took >= average {
            average + ((took - average) >> AVERAGE_SHIFT)
        } else {
            average - ((average - took) >> AVERAGE_SHIFT)
        };
        self.average.store(next, Ordering::Relaxed);
    }

    /// Opens the place behind a request that has just gone out on `stream`.
    pub(crate) fn open(
        &self,
        stream: &Arc<UnixStream>,
        shared: &Arc<Region>,
        worker: &Arc<Worker>,
    ) -> Arc<Relay> {
        let relay = Arc::new(Relay {
            stream: stream.clone(),
            shared: shared.clone(),
            worker: worker.clone(),
            sent_at: Instant::now(),
            slot: Mutex::new(Slot::Open),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(relay.clone());
        self.opened.notify_one();
        relay
    }

    /// Closes `relay` (its holder is done with the connection, or will not let anyone wait for
    /// it) and gives the request queued behind, if any.
    pub(crate) fn close(&self, relay: &Arc<Relay>) -> Option<Successor> {
        self.unlist(relay);
        let mut slot = relay.slot.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *slot, Slot::Closed) {
            Slot::Queued(successor) => Some(successor),
            Slot::Open | Slot::Closed => None,
        }
    }

    /// Completes when a place may have opened.
    pub(crate) fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.opened.notified()
    }

    fn unlist(&self, relay: &Arc<Relay>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = open.iter().position(|r| Arc::ptr_eq(r, relay)) {
            open.swap_remove(at);
        }
    }

    /// Takes the place behind the oldest request in flight that is still young, on a worker in
    /// rotation, and numbers the request to queue there (see [`Region::queue_next`]); the
    /// receiver gets the connection when that request is done with it.
    pub(crate) fn queue_behind(&self) -> Option<(Arc<Relay>, u32, oneshot::Receiver<Relayed>)> {
        let relay = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.iter()
                .filter(|r| r.sent_at.elapsed() < FAST && r.worker.is_alive())
                .min_by_key(|r| r.sent_at)?
                .clone()
        };
        self.unlist(&relay);
        let mut slot = relay.slot.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*slot, Slot::Open) {
            return None;
        }
        let number = relay.shared.queue_next()?;
        let (tx, rx) = oneshot::channel();
        *slot = Slot::Queued((tx, number));
        drop(slot);
        Some((relay, number, rx))
    }
}
