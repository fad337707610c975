//! The live workers of one app as the pool sees them: who is in rotation, how many of each
//! one's threads have a connection, how many requests each has served, and how each is to be
//! killed (by its reaper, see `supervisor`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How a worker is to be ended by its reaper (the only task that may signal or reap it, so a
/// signal can never reach a recycled pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// A request ran past its timeout: SIGUSR1 first (faulthandler writes every thread's Python
    /// traceback to the log, showing where it was stuck), SIGKILL after a short grace.
    DumpThenKill,
    /// It would not stop: SIGKILL now.
    Now,
}

/// A worker process as the pool sees it.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) pid: u32,
    pub(crate) socket: PathBuf,
    pub(crate) threads: usize,
    pub(crate) started: std::time::Instant,
    /// In rotation: set once it is ready, cleared when it is retired or gone.
    pub(crate) alive: AtomicBool,
    conns: AtomicUsize,
    served: AtomicU64,
    /// Requests after which it is replaced (max_requests plus its jitter), if any.
    retire_after: Option<u64>,
    /// Signalled when `retire_after` is reached.
    pub(crate) retire: Notify,
    kill: tokio::sync::mpsc::UnboundedSender<Kill>,
    /// Killed because a request ran past its timeout (for the restart reason).
    timed_out: AtomicBool,
}

impl Worker {
    pub(crate) fn new(
        pid: u32,
        socket: PathBuf,
        threads: usize,
        retire_after: Option<u64>,
        kill: tokio::sync::mpsc::UnboundedSender<Kill>,
    ) -> Worker {
        Worker {
            pid,
            socket,
            threads,
            started: std::time::Instant::now(),
            alive: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            retire_after,
            retire: Notify::new(),
            kill,
            timed_out: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn retire_after(&self) -> Option<u64> {
        self.retire_after
    }

    /// Counts a request handed to this worker; the one that reaches `retire_after` asks the
    /// supervisor for a replacement.
    pub(crate) fn note_request(&self) {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if Some(served) == self.retire_after {
            self.retire.notify_one();
        }
    }

    /// Takes it out of rotation and has its reaper end it; the supervisor replaces it.
    pub(crate) fn kill(&self, how: Kill) {
        if how == Kill::DumpThenKill {
            self.timed_out.store(true, Ordering::Relaxed);
        }
        self.alive.store(false, Ordering::Release);
        let _ = self.kill.send(how);
    }
}

/// The live workers of one app.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
    /// Signalled when a worker joins or a connection frees up a thread.
    pub(super) changed: Notify,
}

impl Workers {
    /// Puts a ready worker in rotation.
    pub(crate) fn add(&self, worker: Arc<Worker>) {
        worker.alive.store(true, Ordering::Release);
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(worker);
        self.changed.notify_waiters();
    }

    /// Takes a worker out of rotation: no new connections go to it, and its pooled ones are
    /// closed as they come back (see `lease`) or come up for reuse.
    pub(crate) fn remove(&self, pid: u32) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = list.iter().position(|w| w.pid == pid) {
            list.remove(at).alive.store(false, Ordering::Release);
        }
    }

    /// Workers in rotation now.
    pub(crate) fn alive_count(&self) -> usize {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().filter(|w| w.is_alive()).count()
    }

    /// Reserves a thread on the least loaded worker that has a free one, for a new connection.
    pub(super) fn reserve(&self) -> Option<Arc<Worker>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let worker = list
            .iter()
            .filter(|w| w.is_alive() && w.conns.load(Ordering::Relaxed) < w.threads)
            .min_by_key(|w| w.conns.load(Ordering::Relaxed))?;
        worker.conns.fetch_add(1, Ordering::Relaxed);
        Some(worker.clone())
    }

    /// Gives back a thread reserved for a connection.
    pub(super) fn release(&self, worker: &Worker) {
        worker.conns.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}
