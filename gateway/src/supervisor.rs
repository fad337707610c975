//! Worker processes: spawning them, waiting for them to be ready, replacing the dead, stopping them.
//!
//! Lifecycle of one worker slot:
//!
//! ```text
//!   spawn ──► starting ──Ready──► serving ──exit──► backoff ──► spawn
//!                │                   │
//!                ├─Fatal/exit──► (at start-up: the app fails to start, sluice exits non-zero)
//!                │               (later: logged with the traceback, backoff, spawn)
//!                └───────────── stop ──► Stop frame ──► exit (SIGKILL after the grace period)
//! ```
//!
//! The backoff after a crash doubles from [`BACKOFF_START`] to [`BACKOFF_MAX`]; a worker that
//! served for [`STABLE_AFTER`] resets it, so a killed healthy worker comes back at once.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_proto::{decode, encode_control, Frame, Kind};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AppConfig;
use crate::forward::AppState;
use crate::pool::{self, Worker, Workers};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Crashes in a row after which an app is reported as crash-looping.
const CRASH_LOOP: u32 = 5;
/// What a worker gets beyond the graceful timeout to exit after `Stop`, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

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
        let dir = tempfile::Builder::new().prefix("sluice-").tempdir()?;
        // tempdir() creates it 0700: only this user can reach the worker sockets.
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

/// A running app: its request-path state and its slot tasks.
pub(crate) struct AppHandle {
    pub(crate) state: Arc<AppState>,
    slots: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl AppHandle {
    /// Stops every worker (each gets `Stop`, then SIGKILL after the grace period) and waits.
    pub(crate) async fn stop(self) {
        self.state.pool.close();
        self.stop.cancel();
        for slot in self.slots {
            let _ = slot.await;
        }
    }
}

/// Starts an app's workers and returns once all are ready, or with the first one's start error.
pub(crate) async fn start_app(
    config: AppConfig,
    index: usize,
    rundir: Arc<RunDir>,
) -> Result<AppHandle, StartError> {
    let workers = Arc::new(Workers::default());
    let pool = pool::build(workers.clone(), config.workers * config.threads);
    let state = Arc::new(AppState {
        config,
        pool,
        workers,
    });
    let stop = CancellationToken::new();
    let mut slots = Vec::new();
    let mut ready = Vec::new();
    for slot in 0..state.config.workers {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let ctx = SlotContext {
            state: state.clone(),
            rundir: rundir.clone(),
            tag: format!("a{index}w{slot}"),
        };
        slots.push(tokio::spawn(run_slot(ctx, tx, stop.clone())));
    }
    let handle = AppHandle { state, slots, stop };
    for rx in ready {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                handle.stop().await;
                return Err(err);
            }
            Err(_) => {
                handle.stop().await;
                return Err(StartError::Exited {
                    status: "unknown".into(),
                });
            }
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

struct WorkerProcess {
    child: Child,
    pid: u32,
    control: UnixStream,
    socket: PathBuf,
}

async fn run_slot(
    ctx: SlotContext,
    first: oneshot::Sender<Result<(), StartError>>,
    stop: CancellationToken,
) {
    let mut first = Some(first);
    let name = ctx.state.config.name.clone();
    let mut crashes = 0u32;
    let mut generation = 0u64;
    loop {
        generation += 1;
        let mut process = match spawn_worker(&ctx, generation) {
            Ok(process) => process,
            Err(err) => {
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Err(err));
                        return;
                    }
                    None => tracing::error!(app = %name, "{err}"),
                }
                crashes += 1;
                if !backoff(&name, crashes, &stop).await {
                    return;
                }
                continue;
            }
        };
        let pid = process.pid;
        let ready = tokio::select! {
            ready = wait_ready(&mut process) => ready,
            _ = stop.cancelled() => {
                stop_worker(process, Duration::ZERO).await;
                return;
            }
        };
        match ready {
            Ok(python) => {
                let worker = Arc::new(Worker::new(
                    pid,
                    process.socket.clone(),
                    ctx.state.config.threads,
                ));
                ctx.state.workers.add(worker);
                tracing::info!(app = %name, pid, python = %python, threads = ctx.state.config.threads, "worker ready");
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                let since = Instant::now();
                tokio::select! {
                    status = process.child.wait() => {
                        ctx.state.workers.remove(pid);
                        let _ = std::fs::remove_file(&process.socket);
                        tracing::warn!(app = %name, pid, "worker exited ({}); starting a replacement", describe(status));
                        crashes = if since.elapsed() >= STABLE_AFTER { 0 } else { crashes + 1 };
                    }
                    _ = stop.cancelled() => {
                        ctx.state.workers.remove(pid);
                        stop_worker(process, ctx.state.config.graceful_timeout).await;
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = std::fs::remove_file(&process.socket);
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Err(err));
                        return;
                    }
                    None => {
                        tracing::error!(app = %name, pid, "replacement worker failed to start: {err}")
                    }
                }
                crashes += 1;
            }
        }
        if crashes > 0 && !backoff(&name, crashes, &stop).await {
            return;
        }
    }
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

fn spawn_worker(ctx: &SlotContext, generation: u64) -> Result<WorkerProcess, StartError> {
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
        "workers": config.workers,
        "chdir": config.chdir,
        "graceful_timeout_ms": config.graceful_timeout.as_millis() as u64,
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
        // Its own process group: a Ctrl-C at the terminal reaches the gateway, which stops
        // the workers in order, instead of every process at once.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made.
    unsafe {
        command.pre_exec(move || {
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
    ours.set_nonblocking(true).map_err(spawn_error)?;
    let control = UnixStream::from_std(ours).map_err(spawn_error)?;
    Ok(WorkerProcess {
        child,
        pid,
        control,
        socket,
    })
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
async fn wait_ready(process: &mut WorkerProcess) -> Result<String, StartError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match decode(&mut buf) {
            Ok(Some(Frame::Ready(payload))) => {
                let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                return Ok(info["python"].as_str().unwrap_or("?").to_owned());
            }
            Ok(Some(Frame::Fatal(payload))) => {
                let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                let _ = process.child.wait().await;
                return Err(StartError::Fatal {
                    error: info["error"]
                        .as_str()
                        .unwrap_or("the worker failed")
                        .to_owned(),
                    traceback: info["traceback"].as_str().unwrap_or_default().to_owned(),
                });
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(err) => {
                let _ = process.child.start_kill();
                return Err(StartError::Fatal {
                    error: format!("bad control frame from the worker: {err}"),
                    traceback: String::new(),
                });
            }
        }
        match process.control.read_buf(&mut buf).await {
            Ok(n) if n > 0 => continue,
            _ => {
                let status = process.child.wait().await;
                return Err(StartError::Exited {
                    status: describe(status),
                });
            }
        }
    }
}

/// `Stop`, then up to `graceful` + [`STOP_GRACE`] for in-flight requests, then SIGKILL.
async fn stop_worker(mut process: WorkerProcess, graceful: Duration) {
    let mut frame = BytesMut::new();
    encode_control(&mut frame, Kind::Stop, b"");
    let _ = process.control.write_all(&frame).await;
    if tokio::time::timeout(graceful + STOP_GRACE, process.child.wait())
        .await
        .is_err()
    {
        tracing::warn!(pid = process.pid, "worker did not stop in time; killing it");
        let _ = process.child.kill().await;
    }
    let _ = std::fs::remove_file(&process.socket);
}
