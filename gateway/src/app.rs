//! One app as the gateway runs it: its configuration, its workers and their pool, its
//! metrics, and the [`Route`] through which a bind finds the generation serving now.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::AppConfig;
use crate::metrics::AppMetrics;
use crate::pool::{Pool, Relays, Workers};

/// What a bind serves now. A reload stores the new app generation here; requests look it up
/// after their body is read, so a slow upload that began before a reload goes to the new workers.
pub(crate) type Route = arc_swap::ArcSwap<AppState>;

/// One app as the request path sees it.
pub(crate) struct AppState {
    pub(crate) config: AppConfig,
    /// Worker processes wanted now (the configured count, changed by SIGTTIN/SIGTTOU).
    pub(crate) target_workers: AtomicUsize,
    /// The grace a stopping worker gets: graceful_timeout, or what is left of the gateway's
    /// shutdown deadline.
    pub(crate) stop_grace_ms: AtomicU64,
    pub(crate) pool: Pool,
    pub(crate) workers: Arc<Workers>,
    /// Its requests in flight that another may queue behind (see `pool::lease`).
    pub(crate) relays: Arc<Relays>,
    pub(crate) metrics: Arc<AppMetrics>,
    /// Requests in Python now: handed to a worker and not yet fully answered.
    pub(crate) busy: AtomicUsize,
}

impl AppState {
    pub(crate) fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request as busy in Python for as long as it lives.
pub(crate) struct Busy(Arc<AppState>);

impl Busy {
    pub(crate) fn new(app: &Arc<AppState>) -> Busy {
        app.busy.fetch_add(1, Ordering::Relaxed);
        Busy(app.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
