//! How many client connections the gateway holds at once (`max_connections`, across every
//! bind), and the open-file limit that lets it hold that many.
//!
//! At the cap the accept loops stop calling `accept`: further connections wait in the kernel's
//! listen backlog and are served, in order, as open ones close. Accepting them only to drop
//! them would turn a burst into errors; leaving them queued turns it into latency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;

/// The gateway-wide count of open client connections and its cap; one shared by every accept
/// loop. The cap can change on reload; connections open beyond a lowered cap are not closed,
/// new ones simply wait until the count is under it again.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    open: AtomicUsize,
    max: AtomicUsize,
    /// Woken when a connection closes or the cap changes.
    changed: Notify,
}

/// One admitted connection; dropping it (when the connection ends) makes room for the next.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    limit: Arc<ConnectionLimit>,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            changed: Notify::new(),
        })
    }

    /// Waits until the gateway holds fewer connections than its cap, and takes a place.
    pub(crate) async fn admit(self: &Arc<Self>) -> ConnectionPermit {
        loop {
            // Registered before the check, so a close between the check and the wait still
            // wakes this loop.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(permit) = self.try_admit() {
                return permit;
            }
            changed.await;
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let max = self.max.load(Ordering::Acquire);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionPermit {
                limit: self.clone(),
            })
    }

    pub(crate) fn set_max(&self, max: usize) {
        if self.max.swap(max, Ordering::AcqRel) != max {
            self.changed.notify_waiters();
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let was = self.limit.open.fetch_sub(1, Ordering::AcqRel);
        // Nobody waits below the cap, so only a close at the cap needs to wake the accept loops.
        if was >= self.limit.max.load(Ordering::Acquire) {
            self.limit.changed.notify_waiters();
        }
    }
}

/// Descriptors the gateway needs besides client connections: listeners, worker sockets and
/// pipes (twice over during a reload, when two generations run side by side), files being
/// served, the runtime's own.
fn reserved_files(config: &Config) -> u64 {
    let per_generation: u64 = config
        .apps
        .iter()
        .map(|app| (app.workers * (app.threads + 4) + app.binds.len()) as u64)
        .sum();
    1024 + 2 * per_generation
}

/// Raises the soft open-file limit towards the hard one so `max_connections` can be reached
/// (as nginx's `worker_rlimit_nofile` does); says so in the log when the hard limit is too low.
// `rlim_t` is u64 on Linux but not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn raise_open_file_limit(config: &Config) {
    let wanted = config.max_connections as u64 + reserved_files(config);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    if soft >= wanted {
        return;
    }
    let target = wanted.min(hard);
    if target > soft {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                soft,
                hard,
                "max_connections {} needs about {wanted} open files, and raising the limit failed: {}",
                config.max_connections,
                std::io::Error::last_os_error()
            );
            return;
        }
        tracing::info!("raised the open-file limit from {soft} to {target}");
    }
    if target < wanted {
        tracing::warn!(
            hard,
            "max_connections {} needs about {wanted} open files but the hard limit is {hard}; \
             about {} connections can be held (raise it with `ulimit -Hn` or systemd's LimitNOFILE=)",
            config.max_connections,
            target.saturating_sub(reserved_files(config))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn admits_up_to_the_cap_then_waits_for_a_close() {
        let limit = ConnectionLimit::new(2);
        let a = limit.admit().await;
        let _b = limit.admit().await;
        assert_eq!(limit.open(), 2);
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.admit().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted once a connection closed")
            .unwrap();
        assert_eq!(limit.open(), 2);
    }

    #[tokio::test]
    async fn a_raised_cap_admits_the_waiting_and_a_lowered_one_holds_new_ones_back() {
        let limit = ConnectionLimit::new(1);
        let first = limit.admit().await;
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.admit().await }
        });
        tokio::task::yield_now().await;
        limit.set_max(2);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted once the cap was raised")
            .unwrap();
        limit.set_max(1);
        drop(first);
        // Still one open against a cap of one: no room until the second closes too.
        assert!(limit.try_admit().is_none());
        drop(second);
        assert!(limit.try_admit().is_some());
    }
}
