//! One worker process: spawning it with its configuration and control socket, reading its
//! start-up answer, signalling and reaping it, stopping it.
//!
//! Only a process's reaper task waits on it or signals it, so a signal never reaches a recycled
//! pid.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_proto::control::{payload_version, Fatal, Ready, WorkerConfig};
use sluice_proto::{decode, encode_stop, Frame, VERSION};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::run_dir::RunDir;
use crate::app::AppState;
use crate::pool::{self, Kill, Worker};

/// What a worker gets beyond the graceful timeout to exit after `Stop`, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Between SIGUSR1 (traceback dump) and SIGKILL for a worker whose request timed out.
const DUMP_GRACE: Duration = Duration::from_millis(500);

/// Runs in the worker's interpreter: put sluice's module on the path just long enough to import it.
const BOOTSTRAP: &str = "import sys\n\
d = sys.argv.pop(1)\n\
c = sys.argv.pop(1)\n\
sys.path.insert(0, d)\n\
import sluice_worker\n\
sys.path.remove(d)\n\
sys.exit(sluice_worker.main(c))\n";

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

/// A spawned worker process. Its reaper owns the `Child`.
pub(super) struct Process {
    pub(super) worker: Arc<Worker>,
    control: UnixStream,
    exited: watch::Receiver<Option<String>>,
}

impl Process {
    /// Waits for the process to end; returns how it ended.
    pub(super) async fn exited(&mut self) -> String {
        wait_exit(&mut self.exited).await
    }

    /// How the process ended, once it has: for waiting on while `self` is used elsewhere.
    pub(super) fn exit_watch(&self) -> watch::Receiver<Option<String>> {
        self.exited.clone()
    }

    /// SIGKILL, and wait until it is gone.
    pub(super) async fn kill(&mut self) {
        self.worker.kill(Kill::Now);
        self.exited().await;
    }
}

pub(super) async fn wait_exit(exited: &mut watch::Receiver<Option<String>>) -> String {
    match exited.wait_for(Option::is_some).await {
        Ok(status) => status.clone().unwrap_or_default(),
        Err(_) => "unknown".into(),
    }
}

/// Starts a worker of the app listening on `socket`, with a reaper task and its output logged.
pub(super) fn spawn_process(
    state: &Arc<AppState>,
    rundir: &RunDir,
    socket: PathBuf,
) -> Result<Process, StartError> {
    let config = &state.config;
    let spawn_error = |source| StartError::Spawn {
        python: config.python.display().to_string(),
        source,
    };
    let worker_config = WorkerConfig {
        app: config.app.clone(),
        chdir: config
            .chdir
            .as_deref()
            .map(utf8)
            .transpose()
            .map_err(spawn_error)?,
        name: config.name.clone(),
        socket: utf8(&socket).map_err(spawn_error)?,
        threads: config.threads,
        workers: state
            .target_workers
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
    let theirs = OwnedFd::from(theirs);
    let mut command = worker_command(
        &config.python,
        rundir.module_dir(),
        &worker_config,
        theirs.as_raw_fd(),
    );
    let mut child = command.spawn().map_err(spawn_error)?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    log_output(&mut child, &config.name, pid);
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
    tokio::spawn(reap(child, worker.clone(), state.clone(), kill_rx, exit_tx));
    ours.set_nonblocking(true).map_err(spawn_error)?;
    let control = UnixStream::from_std(ours).map_err(spawn_error)?;
    Ok(Process {
        worker,
        control,
        exited: exit_rx,
    })
}

/// The interpreter running the bootstrap with the module's directory and the worker's
/// configuration, in a session of its own, with `control_fd` as its fd 3.
fn worker_command(
    python: &Path,
    module_dir: &Path,
    config: &WorkerConfig,
    control_fd: RawFd,
) -> Command {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(BOOTSTRAP)
        .arg(module_dir)
        .arg(config.to_json())
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
            if control_fd == 3 {
                if libc::fcntl(control_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(control_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Every line the app prints goes to sluice's log, tagged with the app and the worker.
fn log_output(child: &mut Child, app: &str, pid: u32) {
    let app: Arc<str> = app.into();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(log_lines(stdout, app.clone(), pid, "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(stderr, app, pid, "stderr"));
    }
}

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

/// Resident memory of a process, from /proc (Linux).
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Waits for `Ready` (returns the Python version) or the reason there will be none.
pub(super) async fn wait_ready(process: &mut Process) -> Result<String, StartError> {
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
    // Checked first: a module from another build may mean something else by everything else.
    let proto = payload_version(&payload);
    if proto != Some(u64::from(VERSION)) && (ready || proto.is_some()) {
        let theirs = proto.map_or("(unknown)".to_string(), |p| p.to_string());
        let error = format!(
            "the worker module speaks protocol {theirs} and this sluice {VERSION}: they come \
             from different builds; rebuild both with cargo build --release"
        );
        return Err(fail_start(process, error).await);
    }
    if ready {
        let ready = serde_json::from_slice::<Ready>(&payload);
        return Ok(ready.map_or_else(|_| "?".to_owned(), |ready| ready.python));
    }
    process.exited().await;
    let Fatal {
        error, traceback, ..
    } = Fatal::read_leniently(&payload);
    Err(StartError::Fatal { error, traceback })
}

/// Ends a worker that will not be used and says why.
async fn fail_start(process: &mut Process, error: String) -> StartError {
    process.kill().await;
    StartError::Fatal {
        error,
        traceback: String::new(),
    }
}

/// Out of rotation, `Stop` with `grace` for the requests it holds, then (after [`STOP_GRACE`]
/// more, for the process to exit) SIGKILL.
pub(super) async fn stop_process(mut process: Process, state: Arc<AppState>, grace: Duration) {
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
        process.kill().await;
    }
}

/// A path as the worker's configuration carries it: JSON text, so UTF-8.
fn utf8(path: &Path) -> std::io::Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the path {} is not UTF-8", path.display()),
        )
    })
}
