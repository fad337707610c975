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
//! Only a process's reaper task waits on it or signals it, so a signal never reaches a recycled
//! pid. The backoff after a crash doubles from [`BACKOFF_START`] to [`BACKOFF_MAX`]; a worker that
//! served for [`STABLE_AFTER`] resets it, so a killed healthy worker comes back at once.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_proto::{decode, encode_stop, Frame, VERSION};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::config::AppConfig;
use crate::metrics::{Metrics, RestartReason};
use crate::pool::{self, Kill, Worker, Workers};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Crashes in a row after which an app is reported as crash-looping.
const CRASH_LOOP: u32 = 5;
/// What a worker gets beyond the graceful timeout to exit after `Stop`, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Between SIGUSR1 (traceback dump) and SIGKILL for a worker whose request timed out.
const DUMP_GRACE: Duration = Duration::from_millis(500);
/// How often a serving worker is checked against max_rss and worker_lifetime.
const LIMITS_CHECK: Duration = Duration::from_secs(1);
/// After a replacement failed to start, how long the worn worker keeps serving before another try.
const REPLACEMENT_RETRY: Duration = Duration::from_secs(5);

/// Runs in the worker's interpreter: put sluice's module on the path just long enough to import it.
const BOOTSTRAP: &str = "import sys\n\
d = sys.argv.pop(1)\n\
c = sys.argv.pop(1)\n\
sys.path.insert(0, d)\n\
import sluice_worker\n\
sys.path.remove(d)\n\
sys.exit(sluice_worker.main(c))\n";

/// The file the worker module is built as, beside the `sluice` binary.
const MODULE_FILE: &str = "libsluice_worker.so";

/// sluice's private directory: worker sockets and the worker module. 0700, removed on exit.
pub(crate) struct RunDir {
    dir: tempfile::TempDir,
    module_dir: PathBuf,
}

impl RunDir {
    pub(crate) fn prepare() -> anyhow::Result<RunDir> {
        let module = find_module()?;
        // Created 0700 (not via the umask): only this user can reach the worker sockets.
        let dir = tempfile::Builder::new()
            .prefix("sluice-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let module_dir = dir.path().join("py");
        std::fs::create_dir(&module_dir)?;
        // Copied, not linked: a rebuild while sluice runs must not change what new workers load.
        // `.abi3.so` is a suffix every CPython 3 accepts for a stable-ABI module.
        std::fs::copy(&module, module_dir.join("sluice_worker.abi3.so"))
            .map_err(|e| anyhow::anyhow!("copying the worker module {}: {e}", module.display()))?;
        Ok(RunDir { dir, module_dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn find_module() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_WORKER_MODULE") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(MODULE_FILE);
    if beside.is_file() {
        return Ok(beside);
    }
    anyhow::bail!(
        "the worker module {MODULE_FILE} is not beside {} (cargo build --release builds both; \
         or set SLUICE_WORKER_MODULE)",
        exe.display()
    )
}

/// Why a worker did not become ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot start {python}: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("{error}\n{traceback}")]
    Fatal { error: String, traceback: String },
    #[error("the worker exited ({status}) before it was ready; its output is above")]
    Exited { status: String },
}

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
}

/// A spawned worker process. Its reaper owns the `Child`.
struct Process {
    worker: Arc<Worker>,
    control: UnixStream,
    exited: watch::Receiver<Option<String>>,
}

impl Process {
    /// Waits for the process to end; returns how it ended.
    async fn exited(&mut self) -> String {
        wait_exit(&mut self.exited).await
    }
}

async fn wait_exit(exited: &mut watch::Receiver<Option<String>>) -> String {
    match exited.wait_for(Option::is_some).await {
        Ok(status) => status.clone().unwrap_or_default(),
        Err(_) => "unknown".into(),
    }
}

async fn run_slot(
    ctx: SlotContext,
    mut first: Option<oneshot::Sender<Result<(), StartError>>>,
    stop: CancellationToken,
) {
    let name = ctx.state.config.name.clone();
    let graceful = ctx.state.config.graceful_timeout;
    let mut crashes = 0u32;
    let mut generation = 0u64;
    loop {
        generation += 1;
        let mut current = match start(&ctx, &stop, generation).await {
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
        ctx.state.workers.add(current.worker.clone());
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }

        // Serving: until the worker exits, the slot is stopped, or it is worn out.
        let mut limits = tokio::time::interval(LIMITS_CHECK);
        limits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hold_replacement_until: Option<Instant> = None;
        let status = loop {
            let worker = current.worker.clone();
            let mut exited = current.exited.clone();
            let reason = tokio::select! {
                status = wait_exit(&mut exited) => break status,
                _ = stop.cancelled() => {
                    stop_process(current, ctx.state.clone(), ctx.state.stop_grace()).await;
                    return;
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
            tracing::info!(app = %name, pid = worker.pid, served = worker.served(), reason = reason.as_str(), "replacing worker");
            ctx.state.metrics.restarted(reason);
            generation += 1;
            match start(&ctx, &stop, generation).await {
                None => {
                    stop_process(current, ctx.state.clone(), ctx.state.stop_grace()).await;
                    return;
                }
                Some(Err(err)) => {
                    tracing::error!(app = %name, pid = worker.pid,
                        "its replacement failed to start, so it keeps serving: {err}");
                    hold_replacement_until = Some(Instant::now() + REPLACEMENT_RETRY);
                }
                Some(Ok(next)) => {
                    // The replacement is ready before the old one leaves rotation.
                    ctx.state.workers.add(next.worker.clone());
                    let old = std::mem::replace(&mut current, next);
                    tokio::spawn(stop_process(old, ctx.state.clone(), graceful));
                    limits.reset();
                }
            }
        };
        let lived = current.worker.started.elapsed();
        ctx.state.metrics.restarted(if current.worker.timed_out() {
            RestartReason::Timeout
        } else {
            RestartReason::Crash
        });
        tracing::warn!(app = %name, pid = current.worker.pid, "worker exited ({status}); starting a replacement");
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

/// Resident memory of a process, from /proc (Linux).
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Spawns a worker and waits until it is ready. `None`: the slot was stopped meanwhile.
async fn start(
    ctx: &SlotContext,
    stop: &CancellationToken,
    generation: u64,
) -> Option<Result<Process, StartError>> {
    let mut process = match spawn_process(ctx, generation) {
        Ok(process) => process,
        Err(err) => return Some(Err(err)),
    };
    let ready = tokio::select! {
        ready = wait_ready(&mut process) => ready,
        _ = stop.cancelled() => {
            process.worker.kill(Kill::Now);
            process.exited().await;
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

fn describe(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => status.to_string(),
        },
        Err(err) => format!("wait failed: {err}"),
    }
}

/// A pseudo-random number in `0..=max` for max_requests_jitter (no crate for one number).
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(max);
    hasher.finish() % (max + 1)
}

fn spawn_process(ctx: &SlotContext, generation: u64) -> Result<Process, StartError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let config = &ctx.state.config;
    let socket = ctx.rundir.path().join(format!(
        "{}g{generation}-{}.sock",
        ctx.tag,
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let worker_config = serde_json::json!({
        "name": config.name,
        "app": config.app,
        "socket": socket,
        "threads": config.threads,
        "workers": ctx.state.target_workers.load(Ordering::Relaxed),
        "chdir": config.chdir,
    });
    let spawn_error = |source| StartError::Spawn {
        python: config.python.display().to_string(),
        source,
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
    let theirs = OwnedFd::from(theirs);
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&config.python);
    command
        .arg("-c")
        .arg(BOOTSTRAP)
        .arg(&ctx.rundir.module_dir)
        .arg(worker_config.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, dup2, fcntl) are
    // made.
    unsafe {
        command.pre_exec(move || {
            // Its own session, and so its own process group: a Ctrl-C at the terminal reaches
            // the gateway, which stops the workers in order, instead of every process at once.
            // And its own scheduling autogroup where the kernel groups by session (most
            // distributions, outside cgroup-managed services): sharing one with its workers,
            // the gateway's runtime thread got the CPU share of one task among all their
            // Python threads (bench hello, sluice started with setsid as bench/run does:
            // 52-55k req/s with one shared session, 78-79k with a session per worker).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker inherits SCHED_BATCH from the gateway (see `batch_scheduling` in main).
            // The control socket becomes fd 3 in the worker; dup2 clears close-on-exec, and when
            // it already is fd 3 the flag is cleared by hand.
            if fd == 3 {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    let name: Arc<str> = config.name.as_str().into();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(log_lines(stdout, name.clone(), pid, "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(stderr, name, pid, "stderr"));
    }
    let (kill_tx, kill_rx) = mpsc::unbounded_channel();
    let retire_after = config
        .max_requests
        .map(|n| n + jitter(config.max_requests_jitter));
    let worker = Arc::new(Worker::new(
        pid,
        socket,
        config.threads,
        retire_after,
        kill_tx,
    ));
    let (exit_tx, exit_rx) = watch::channel(None);
    tokio::spawn(reap(
        child,
        worker.clone(),
        ctx.state.clone(),
        kill_rx,
        exit_tx,
    ));
    ours.set_nonblocking(true).map_err(spawn_error)?;
    let control = UnixStream::from_std(ours).map_err(spawn_error)?;
    Ok(Process {
        worker,
        control,
        exited: exit_rx,
    })
}

/// Owns the child: waits for it, signals it when asked, and takes it out of rotation once it is
/// gone.
async fn reap(
    mut child: Child,
    worker: Arc<Worker>,
    state: Arc<AppState>,
    mut kill: mpsc::UnboundedReceiver<Kill>,
    exited: watch::Sender<Option<String>>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(how) = kill.recv() => {
                if how == Kill::DumpThenKill {
                    // SAFETY: kill(2) on our child, which only this task reaps and has not yet,
                    // so the pid cannot belong to anything else.
                    unsafe { libc::kill(worker.pid as libc::pid_t, libc::SIGUSR1) };
                    if let Ok(status) = tokio::time::timeout(DUMP_GRACE, child.wait()).await {
                        break status;
                    }
                }
                let _ = child.start_kill();
            }
        }
    };
    state.workers.remove(worker.pid);
    pool::prune(&state.pool);
    let _ = std::fs::remove_file(&worker.socket);
    let _ = exited.send(Some(describe(status)));
}

/// Every line the app prints goes to sluice's log, tagged with the app and the worker.
async fn log_lines(
    stream: impl AsyncRead + Unpin,
    app: Arc<str>,
    pid: u32,
    stream_name: &'static str,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(target: "sluice::app", app = %app, pid, stream = %stream_name, "{text}");
            }
        }
    }
}

/// Waits for `Ready` (returns the Python version) or the reason there will be none.
async fn wait_ready(process: &mut Process) -> Result<String, StartError> {
    let mut buf = BytesMut::with_capacity(4096);
    let (ready, payload) = loop {
        match decode(&mut buf) {
            Ok(Some(Frame::Ready(payload))) => break (true, payload),
            Ok(Some(Frame::Fatal(payload))) => break (false, payload),
            Ok(Some(_)) => continue,
            Ok(None) => match process.control.read_buf(&mut buf).await {
                Ok(n) if n > 0 => continue,
                _ => {
                    let status = process.exited().await;
                    return Err(StartError::Exited { status });
                }
            },
            Err(err) => {
                return Err(fail_start(
                    process,
                    format!("bad control frame from the worker: {err}"),
                )
                .await)
            }
        }
    };
    let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    // Checked first: a module from another build may mean something else by everything else.
    let proto = info["proto"].as_u64();
    if proto != Some(u64::from(VERSION)) && (ready || proto.is_some()) {
        let theirs = proto.map_or("(unknown)".to_string(), |p| p.to_string());
        let error = format!(
            "the worker module speaks protocol {theirs} and this sluice {VERSION}: they come \
             from different builds; rebuild both with cargo build --release"
        );
        return Err(fail_start(process, error).await);
    }
    if ready {
        return Ok(info["python"].as_str().unwrap_or("?").to_owned());
    }
    process.exited().await;
    Err(StartError::Fatal {
        error: info["error"]
            .as_str()
            .unwrap_or("the worker failed")
            .to_owned(),
        traceback: info["traceback"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Ends a worker that will not be used and says why.
async fn fail_start(process: &mut Process, error: String) -> StartError {
    process.worker.kill(Kill::Now);
    process.exited().await;
    StartError::Fatal {
        error,
        traceback: String::new(),
    }
}

/// Out of rotation, `Stop` with `grace` for the requests it holds, then (after [`STOP_GRACE`]
/// more, for the process to exit) SIGKILL.
async fn stop_process(mut process: Process, state: Arc<AppState>, grace: Duration) {
    let pid = process.worker.pid;
    state.workers.remove(pid);
    pool::prune(&state.pool);
    let mut frame = BytesMut::new();
    encode_stop(
        &mut frame,
        u32::try_from(grace.as_millis()).unwrap_or(u32::MAX),
    );
    let _ = process.control.write_all(&frame).await;
    if tokio::time::timeout(grace + STOP_GRACE, process.exited())
        .await
        .is_err()
    {
        tracing::warn!(app = %state.config.name, pid, "worker did not stop in time; killing it");
        process.worker.kill(Kill::Now);
        process.exited().await;
    }
}
