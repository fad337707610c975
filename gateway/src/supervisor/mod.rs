//! Worker processes: spawning them, waiting for them to be ready, replacing the dead and the
//! worn, stopping them.
//!
//! Lifecycle of one worker slot:
//!
//! ```text
//!            ┌────────────────────────── backoff ◄── exited (crash, SIGKILL, timeout kill) ──┐
//!            ▼                                                                               │
//!   spawn ──► starting ──Ready──► serving ─────────────────────────────────────────────────────┤
//!                │                   │  max_requests / max_rss / worker_lifetime             │
//!                │                   ▼                                                       │
//!                │            start a replacement ──Ready──► replacement serves; the old one │
//!                │                   │                        leaves rotation, gets Stop,    │
//!                │                   │ (fails: the old one    finishes what it holds, exits  │
//!                │                   │  keeps serving, retry later)                          │
//!                ├── Fatal / exit ──► at start-up: the app fails to start, sluice exits 1    │
//!                │                    later: logged with the traceback, backoff ─────────────┘
//!                └── stop (SIGTERM, reload, SIGTTOU) ──► out of rotation ──► Stop ──► exit
//!                                                        (SIGKILL after graceful_timeout)
//! ```
//!
//! The backoff after a crash doubles from [`BACKOFF_START`] to [`BACKOFF_MAX`]; a worker that
//! served for [`STABLE_AFTER`] resets it, so a killed healthy worker comes back at once.
//!
//! This file runs the slots; `process` is one worker process (spawn, ready, signals, reaping,
//! stop) and `run_dir` the private directory of sockets and the worker module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod process;
mod run_dir;

pub(crate) use process::StartError;
use process::{rss_bytes, spawn_process, stop_process, wait_exit, wait_ready, Process};
pub(crate) use run_dir::RunDir;

use crate::app::AppState;
use crate::config::AppConfig;
use crate::metrics::{Metrics, RestartReason};
use crate::pool::{self, Worker, Workers};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Crashes in a row after which an app is reported as crash-looping.
const CRASH_LOOP: u32 = 5;
/// How often a serving worker is checked against max_rss and worker_lifetime.
const LIMITS_CHECK: Duration = Duration::from_secs(1);
/// After a replacement failed to start, how long the worn worker keeps serving before another try.
const REPLACEMENT_RETRY: Duration = Duration::from_secs(5);

/// A running app: its request-path state and its worker slots.
pub(crate) struct AppHandle {
    pub(crate) state: Arc<AppState>,
    slots: Mutex<Vec<SlotHandle>>,
    /// Slots taken away by SIGTTOU, still stopping their worker.
    leaving: Mutex<Vec<JoinHandle<()>>>,
    rundir: Arc<RunDir>,
    index: usize,
    next_slot: AtomicUsize,
}

struct SlotHandle {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl AppHandle {
    /// Stops every worker: each gets `Stop` with `grace` to finish what it holds (then SIGKILL),
    /// and this waits for all of them.
    pub(crate) async fn stop(self, grace: Duration) {
        self.state
            .stop_grace_ms
            .store(millis(grace), Ordering::Relaxed);
        self.state.pool.close();
        let slots = std::mem::take(&mut *lock(&self.slots));
        for slot in &slots {
            slot.stop.cancel();
        }
        for slot in slots {
            let _ = slot.task.await;
        }
        let leaving = std::mem::take(&mut *lock(&self.leaving));
        for task in leaving {
            let _ = task.await;
        }
    }

    /// One more worker (SIGTTIN); it joins the rotation when ready.
    pub(crate) fn add_worker(&self) {
        let mut slots = lock(&self.slots);
        let count = slots.len() + 1;
        self.state.pool.resize(count * self.state.config.threads);
        self.state.target_workers.store(count, Ordering::Relaxed);
        slots.push(self.spawn_slot(None));
        tracing::info!(app = %self.state.config.name, workers = count, "adding a worker");
    }

    /// One worker fewer (SIGTTOU), never fewer than one; the one removed finishes what it holds.
    pub(crate) fn remove_worker(&self) {
        let mut slots = lock(&self.slots);
        if slots.len() <= 1 {
            tracing::info!(app = %self.state.config.name, "SIGTTOU: keeping the last worker");
            return;
        }
        let slot = slots.pop().expect("more than one");
        slot.stop.cancel();
        lock(&self.leaving).push(slot.task);
        let count = slots.len();
        self.state.pool.resize(count * self.state.config.threads);
        self.state.target_workers.store(count, Ordering::Relaxed);
        tracing::info!(app = %self.state.config.name, workers = count, "removing a worker");
    }

    fn spawn_slot(&self, first: Option<oneshot::Sender<Result<(), StartError>>>) -> SlotHandle {
        let stop = CancellationToken::new();
        let ctx = SlotContext {
            state: self.state.clone(),
            rundir: self.rundir.clone(),
            tag: format!(
                "a{}w{}",
                self.index,
                self.next_slot.fetch_add(1, Ordering::Relaxed)
            ),
            started: AtomicU64::new(0),
        };
        SlotHandle {
            task: tokio::spawn(run_slot(ctx, first, stop.clone())),
            stop,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts an app's workers and returns once all are ready, or with the first one's start error.
/// `index` keeps socket names apart between apps and between reload generations.
pub(crate) async fn start_app(
    config: AppConfig,
    index: usize,
    rundir: Arc<RunDir>,
    metrics: Arc<Metrics>,
) -> Result<AppHandle, StartError> {
    let workers = Arc::new(Workers::default());
    let pool = pool::build(workers.clone(), config.workers * config.threads);
    let count = config.workers;
    let state = Arc::new(AppState {
        target_workers: AtomicUsize::new(count),
        stop_grace_ms: AtomicU64::new(millis(config.graceful_timeout)),
        metrics: metrics.for_app(&config.name),
        busy: AtomicUsize::new(0),
        config,
        pool,
        workers,
        relays: Default::default(),
    });
    let handle = AppHandle {
        state,
        slots: Mutex::new(Vec::new()),
        leaving: Mutex::new(Vec::new()),
        rundir,
        index,
        next_slot: AtomicUsize::new(0),
    };
    let mut ready = Vec::new();
    for _ in 0..count {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let slot = handle.spawn_slot(Some(tx));
        lock(&handle.slots).push(slot);
    }
    for rx in ready {
        let outcome = rx.await.unwrap_or_else(|_| {
            Err(StartError::Exited {
                status: "unknown".into(),
            })
        });
        if let Err(err) = outcome {
            handle.stop(Duration::ZERO).await;
            return Err(err);
        }
    }
    Ok(handle)
}

struct SlotContext {
    state: Arc<AppState>,
    rundir: Arc<RunDir>,
    /// Short and unique per slot: socket paths must stay under 108 bytes.
    tag: String,
    /// Workers the slot has started, numbering their sockets.
    started: AtomicU64,
}

impl SlotContext {
    /// The socket for the slot's next worker; never one used before.
    fn next_socket(&self) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let started = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.rundir
            .path()
            .join(format!("{}w{started}-{seq}.sock", self.tag))
    }
}

async fn run_slot(
    ctx: SlotContext,
    mut first: Option<oneshot::Sender<Result<(), StartError>>>,
    stop: CancellationToken,
) {
    let name = ctx.state.config.name.clone();
    let mut crashes = 0u32;
    loop {
        let process = match start(&ctx, &stop).await {
            None => return,
            Some(Ok(process)) => process,
            Some(Err(err)) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(err));
                    return;
                }
                tracing::error!(app = %name, "a replacement worker failed to start: {err}");
                crashes += 1;
                if !backoff(&name, crashes, &stop).await {
                    return;
                }
                continue;
            }
        };
        ctx.state.workers.add(process.worker.clone());
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        let Some((gone, status)) = serve(&ctx, process, &stop).await else {
            return;
        };
        let lived = gone.worker.started.elapsed();
        ctx.state.metrics.restarted(if gone.worker.timed_out() {
            RestartReason::Timeout
        } else {
            RestartReason::Crash
        });
        tracing::warn!(app = %name, pid = gone.worker.pid, "worker exited ({status}); starting a replacement");
        crashes = if lived >= STABLE_AFTER {
            0
        } else {
            crashes + 1
        };
        if crashes > 0 && !backoff(&name, crashes, &stop).await {
            return;
        }
    }
}

/// Serves with `current`, replacing it whenever it is worn out, until the one serving exits
/// (returned with how it ended) or the slot is stopped (`None`; its worker is stopped too).
async fn serve(
    ctx: &SlotContext,
    mut current: Process,
    stop: &CancellationToken,
) -> Option<(Process, String)> {
    let mut limits = tokio::time::interval(LIMITS_CHECK);
    limits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hold_replacement_until: Option<Instant> = None;
    loop {
        let worker = current.worker.clone();
        let mut exited = current.exit_watch();
        let reason = tokio::select! {
            status = wait_exit(&mut exited) => return Some((current, status)),
            _ = stop.cancelled() => {
                stop_process(current, ctx.state.clone(), ctx.state.stop_grace()).await;
                return None;
            }
            _ = worker.retire.notified() => RestartReason::MaxRequests,
            _ = limits.tick() => match worn_out(&worker, &ctx.state.config) {
                Some(reason) => reason,
                None => continue,
            },
        };
        if hold_replacement_until.is_some_and(|until| Instant::now() < until) {
            continue;
        }
        match replace(ctx, current, stop, reason).await {
            Replaced::Stopped => return None,
            Replaced::Kept(old) => {
                current = old;
                hold_replacement_until = Some(Instant::now() + REPLACEMENT_RETRY);
            }
            Replaced::By(next) => {
                current = next;
                limits.reset();
            }
        }
    }
}

/// How a worn-out worker's replacement went.
enum Replaced {
    /// The replacement serves; the old worker is stopping.
    By(Process),
    /// The replacement failed to start; the old worker keeps serving.
    Kept(Process),
    /// The slot was stopped meanwhile, and the old worker with it.
    Stopped,
}

/// Starts a replacement for `current`, which leaves rotation only once the replacement is ready.
async fn replace(
    ctx: &SlotContext,
    current: Process,
    stop: &CancellationToken,
    reason: RestartReason,
) -> Replaced {
    let name = &ctx.state.config.name;
    let pid = current.worker.pid;
    tracing::info!(app = %name, pid, served = current.worker.served(), reason = reason.as_str(), "replacing worker");
    ctx.state.metrics.restarted(reason);
    match start(ctx, stop).await {
        None => {
            stop_process(current, ctx.state.clone(), ctx.state.stop_grace()).await;
            Replaced::Stopped
        }
        Some(Err(err)) => {
            tracing::error!(app = %name, pid,
                "its replacement failed to start, so it keeps serving: {err}");
            Replaced::Kept(current)
        }
        Some(Ok(next)) => {
            // The replacement is ready before the old one leaves rotation.
            ctx.state.workers.add(next.worker.clone());
            let graceful = ctx.state.config.graceful_timeout;
            tokio::spawn(stop_process(current, ctx.state.clone(), graceful));
            Replaced::By(next)
        }
    }
}

/// Which recycling limit a serving worker has reached, if any.
fn worn_out(worker: &Worker, config: &AppConfig) -> Option<RestartReason> {
    if worker
        .retire_after()
        .is_some_and(|limit| worker.served() >= limit)
    {
        return Some(RestartReason::MaxRequests);
    }
    if config
        .worker_lifetime
        .is_some_and(|age| worker.started.elapsed() >= age)
    {
        return Some(RestartReason::WorkerLifetime);
    }
    if let Some(max) = config.max_rss {
        if rss_bytes(worker.pid).is_some_and(|rss| rss > max) {
            return Some(RestartReason::MaxRss);
        }
    }
    None
}

/// Spawns a worker and waits until it is ready. `None`: the slot was stopped meanwhile.
async fn start(ctx: &SlotContext, stop: &CancellationToken) -> Option<Result<Process, StartError>> {
    let mut process = match spawn_process(&ctx.state, &ctx.rundir, ctx.next_socket()) {
        Ok(process) => process,
        Err(err) => return Some(Err(err)),
    };
    let ready = tokio::select! {
        ready = wait_ready(&mut process) => ready,
        _ = stop.cancelled() => {
            process.kill().await;
            return None;
        }
    };
    Some(ready.map(|python| {
        tracing::info!(app = %ctx.state.config.name, pid = process.worker.pid, python = %python,
            threads = ctx.state.config.threads, "worker ready");
        process
    }))
}

/// Sleeps the backoff for `crashes` crashes in a row; false if stopped meanwhile.
async fn backoff(name: &str, crashes: u32, stop: &CancellationToken) -> bool {
    let delay = BACKOFF_START
        .saturating_mul(1 << crashes.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    if crashes >= CRASH_LOOP {
        tracing::error!(app = %name, crashes, "app keeps crashing; next attempt in {delay:?}");
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}
