//! Driving the real `sluice` binary: finding it and the Python interpreters, spawning it with its
//! output captured and echoed, waiting for readiness from its log, signalling it, and making sure
//! nothing it started outlives the test.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::try_wait_for;

/// How long a sluice may take to become ready. Generous: workers import Python apps (Django is
/// slow to import) on a loaded 2-core CI box.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The default deadline for "this should happen soon" (a log line, a marker file, an exit).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `sluice` binary: `$SLUICE_BIN`, else next to the test executable's directory (test
/// executables live in `target/<profile>/deps/`, the binary in `target/<profile>/`).
pub fn sluice_bin() -> PathBuf {
    let path = match std::env::var_os("SLUICE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable has no grandparent directory")
                .join("sluice")
        }
    };
    assert!(
        path.is_file(),
        "sluice binary not found at {}: run `cargo build --release` first (or set SLUICE_BIN)",
        path.display()
    );
    path
}

/// `tests/apps`, the Python fixture apps.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps")
}

/// The interpreter of a venv with `tests/requirements.txt` installed (Flask, Django), from
/// `$SLUICE_TEST_PYTHON`.
pub fn python_for_frameworks() -> PathBuf {
    match std::env::var_os("SLUICE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "SLUICE_TEST_PYTHON is not set: point it at the python of a venv with \
             tests/requirements.txt installed, e.g.\n  python3 -m venv /tmp/sluice-venv && \
             /tmp/sluice-venv/bin/pip install -r tests/requirements.txt\n  \
             SLUICE_TEST_PYTHON=/tmp/sluice-venv/bin/python cargo test --release -p sluice-tests"
        ),
    }
}

/// The interpreter for stdlib-only apps: whatever `python3` is on PATH.
pub fn stdlib_python() -> PathBuf {
    PathBuf::from("python3")
}

/// Everything sluice printed, line by line, shared with the reader threads.
struct Log {
    inner: Mutex<LogInner>,
    changed: Condvar,
}

struct LogInner {
    lines: Vec<String>,
    open_streams: usize,
}

impl Log {
    fn new(streams: usize) -> Arc<Log> {
        Arc::new(Log {
            inner: Mutex::new(LogInner {
                lines: Vec::new(),
                open_streams: streams,
            }),
            changed: Condvar::new(),
        })
    }

    fn lines(&self) -> Vec<String> {
        self.inner.lock().unwrap().lines.clone()
    }

    fn open_streams(&self) -> usize {
        self.inner.lock().unwrap().open_streams
    }

    /// Block until a new line arrives, a stream closes, or `max` passes.
    fn wait_change(&self, seen: usize, max: Duration) {
        let guard = self.inner.lock().unwrap();
        let open = guard.open_streams;
        let _ = self
            .changed
            .wait_timeout_while(guard, max, |g| {
                g.lines.len() == seen && g.open_streams == open
            })
            .unwrap();
    }
}

/// Read `stream` line by line into `log`, echoing each line to the test's stderr with `prefix`
/// (libtest captures it per test and shows it when the test fails).
fn spawn_reader(stream: impl Read + Send + 'static, log: Arc<Log>, prefix: String) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    eprintln!("{prefix} {line}");
                    log.inner.lock().unwrap().lines.push(line);
                    log.changed.notify_all();
                }
            }
        }
        log.inner.lock().unwrap().open_streams -= 1;
        log.changed.notify_all();
    });
}

/// Has the child `pid` exited? Observed without reaping it, so its pid (which is also our process
/// group id) cannot be reused while we may still signal the group.
fn has_exited(pid: u32) -> bool {
    // SAFETY: waitid only writes into the zeroed siginfo we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // ECHILD: already reaped, i.e. exited.
        rc != 0 || info.si_pid() != 0
    }
}

/// The live (not zombie) children of `parent`, from `/proc/*/stat`, sorted.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // The process may be gone by now: then it is no child of anyone.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("?");
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && state != "Z" && state != "X"
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released), for a YAML file that
/// must name its port before sluice starts. Another process could take it in between; the
/// tests that need a fixed port use it for a bind added by a reload, where a port-0 bind would
/// not do.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Parse `listening app=NAME addr=IP:PORT` lines (tolerating quoted field values).
fn parse_listening(lines: &[String]) -> Vec<(String, SocketAddr)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        let value = line[at..].split_whitespace().next()?;
        Some(value.trim_matches('"').to_string())
    };
    lines
        .iter()
        .filter(|l| l.contains("listening"))
        .filter_map(|l| {
            let tail = &l[l.find("listening")?..];
            let app = field(tail, "app=")?;
            let addr = field(tail, "addr=")?.parse().ok()?;
            Some((app, addr))
        })
        .collect()
}

enum Mode {
    Serve(String),
    Run(String),
    RunFile(PathBuf),
    /// Another program that runs sluice itself (the Python API's `WSGIServer(...).start()`).
    Command(PathBuf, Vec<OsString>),
}

/// A sluice to start. `serve` runs from `tests/apps` (its `--chdir`) unless told otherwise and
/// binds `127.0.0.1:0` unless `.bind(..)` is used. Every sluice gets its own temp dir, exported
/// to the workers as `SLUICE_TEST_STATE` (marker files of the fixture apps go there).
pub struct Sluice {
    mode: Mode,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    binds: Vec<String>,
    chdir: Option<PathBuf>,
    expect_binds: Option<usize>,
    label: String,
    start_deadline: Duration,
    /// A program (and its arguments) that runs sluice: the command line follows them.
    launcher: Vec<OsString>,
}

impl Sluice {
    fn new(mode: Mode, chdir: Option<PathBuf>, label: &str) -> Sluice {
        Sluice {
            mode,
            args: Vec::new(),
            env: Vec::new(),
            binds: Vec::new(),
            chdir,
            expect_binds: None,
            label: label.to_string(),
            start_deadline: START_DEADLINE,
            launcher: Vec::new(),
        }
    }

    /// Runs sluice through `launcher` (a program and its arguments, followed by sluice's whole
    /// command line), e.g. a stand-in for systemd's socket activation.
    pub fn launched_by(mut self, launcher: &[&OsStr]) -> Sluice {
        self.launcher = launcher.iter().map(|a| a.to_os_string()).collect();
        self
    }

    /// `sluice serve APP`.
    pub fn serve(app: &str) -> Sluice {
        Sluice::new(Mode::Serve(app.to_string()), Some(apps_dir()), app)
    }

    /// `sluice run --config FILE` with `yaml` written to a temp file. Expects one `listening`
    /// line per `127.0.0.1:0` in the text unless [`Sluice::expect_binds`] says otherwise.
    pub fn run_config(yaml: &str) -> Sluice {
        Sluice::new(Mode::Run(yaml.to_string()), None, "config")
    }

    /// `sluice run --config FILE` on an existing file (for tests that need to know where the file
    /// is before writing it, e.g. for relative paths). Expects one `listening` line unless
    /// [`Sluice::expect_binds`] says otherwise.
    pub fn run_config_file(path: impl AsRef<Path>) -> Sluice {
        Sluice::new(Mode::RunFile(path.as_ref().to_owned()), None, "config")
    }

    /// `program args...`, a program that starts sluice itself (a script using the Python API),
    /// run in `dir`. Expects one `listening` line unless [`Sluice::expect_binds`] says
    /// otherwise.
    pub fn command(
        program: impl AsRef<Path>,
        args: &[&OsStr],
        dir: impl AsRef<Path>,
        label: &str,
    ) -> Sluice {
        let args = args.iter().map(|a| a.to_os_string()).collect();
        let mode = Mode::Command(program.as_ref().to_owned(), args);
        Sluice::new(mode, Some(dir.as_ref().to_owned()), label)
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Sluice {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn workers(self, n: usize) -> Sluice {
        self.arg("--workers").arg(n.to_string())
    }

    pub fn threads(self, n: usize) -> Sluice {
        self.arg("--threads").arg(n.to_string())
    }

    /// `--chdir`; `serve` defaults to `tests/apps`.
    pub fn chdir(mut self, dir: impl AsRef<Path>) -> Sluice {
        self.chdir = Some(dir.as_ref().to_owned());
        self
    }

    pub fn python(self, python: impl AsRef<Path>) -> Sluice {
        self.arg("--python").arg(python.as_ref())
    }

    /// An extra `--bind` (counted towards the `listening` lines to wait for).
    pub fn bind(mut self, addr: &str) -> Sluice {
        self.binds.push(addr.to_string());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Sluice {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// How many `listening` lines mean "ready".
    pub fn expect_binds(mut self, n: usize) -> Sluice {
        self.expect_binds = Some(n);
        self
    }

    /// Prefix for the echoed output (defaults to the app spec).
    pub fn label(mut self, label: &str) -> Sluice {
        self.label = label.to_string();
        self
    }

    pub fn start_deadline(mut self, deadline: Duration) -> Sluice {
        self.start_deadline = deadline;
        self
    }

    fn spawn(self) -> (SluiceHandle, usize, Duration) {
        let root = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("temp dir");
        let state = root.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let mut cmd = match (self.launcher.split_first(), &self.mode) {
            (_, Mode::Command(program, _)) => Command::new(program),
            (None, _) => Command::new(sluice_bin()),
            (Some((program, args)), _) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(sluice_bin());
                cmd
            }
        };
        let expected;
        let mut config_path = None;
        match &self.mode {
            Mode::Serve(app) => {
                cmd.arg("serve").arg(app);
                let binds = if self.binds.is_empty() {
                    vec!["127.0.0.1:0".to_string()]
                } else {
                    self.binds.clone()
                };
                for b in &binds {
                    cmd.arg("--bind").arg(b);
                }
                if let Some(dir) = &self.chdir {
                    cmd.arg("--chdir").arg(dir);
                }
                expected = self.expect_binds.unwrap_or(binds.len());
            }
            Mode::Run(yaml) => {
                let path = root.path().join("sluice.yaml");
                std::fs::write(&path, yaml).expect("write config");
                cmd.arg("run").arg("--config").arg(&path);
                expected = self
                    .expect_binds
                    .unwrap_or_else(|| yaml.matches("127.0.0.1:0").count().max(1));
                config_path = Some(path);
            }
            Mode::RunFile(path) => {
                cmd.arg("run").arg("--config").arg(path);
                expected = self.expect_binds.unwrap_or(1);
                config_path = Some(path.clone());
            }
            Mode::Command(_, args) => {
                cmd.args(args);
                if let Some(dir) = &self.chdir {
                    cmd.current_dir(dir);
                }
                expected = self.expect_binds.unwrap_or(1);
            }
        }
        cmd.args(&self.args)
            .env("SLUICE_TEST_STATE", &state)
            // An inherited RUST_LOG could filter out the readiness lines; allow an explicit
            // override for debugging instead.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so teardown can kill every process sluice started even if
            // sluice itself is gone or wedged.
            .process_group(0);
        if let Some(level) = std::env::var_os("SLUICE_TEST_RUST_LOG") {
            cmd.env("RUST_LOG", level);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        eprintln!("[{}] spawning {:?}", self.label, cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", sluice_bin().display()));
        let log = Log::new(2);
        spawn_reader(
            child.stdout.take().expect("stdout"),
            log.clone(),
            format!("[{} out]", self.label),
        );
        spawn_reader(
            child.stderr.take().expect("stderr"),
            log.clone(),
            format!("[{} err]", self.label),
        );
        let handle = SluiceHandle {
            child,
            log,
            binds: Vec::new(),
            state,
            config_path,
            status: None,
            label: self.label.clone(),
            _root: root,
        };
        (handle, expected, self.start_deadline)
    }

    /// Start sluice and wait until every expected bind logged `listening`. Panics (with the
    /// output) if it exits or does not get there within the start deadline.
    pub fn start(self) -> SluiceHandle {
        let (mut handle, expected, deadline) = self.spawn();
        let end = Instant::now() + deadline;
        loop {
            let lines = handle.log.lines();
            let binds = parse_listening(&lines);
            if binds.len() >= expected {
                handle.binds = binds;
                return handle;
            }
            if has_exited(handle.pid()) {
                let status = handle.wait_exit(DEADLINE);
                panic!(
                    "[{}] sluice exited ({status}) before {expected} `listening` line(s); output:\n{}",
                    handle.label,
                    handle.log_text()
                );
            }
            if Instant::now() >= end {
                panic!(
                    "[{}] sluice did not log {expected} `listening` line(s) within {deadline:?} \
                     (got {binds:?}); output:\n{}",
                    handle.label,
                    handle.log_text()
                );
            }
            handle
                .log
                .wait_change(lines.len(), Duration::from_millis(100));
        }
    }

    /// Start a sluice that is expected to fail at startup: waits up to `deadline` for it to
    /// exit and returns how it exited and everything it printed. Panics if it is still running.
    pub fn start_expect_failure(self, deadline: Duration) -> Failure {
        let (mut handle, _, _) = self.spawn();
        let status = handle.try_wait_exit(deadline).unwrap_or_else(|| {
            panic!(
                "[{}] sluice was expected to fail startup but is still running after \
                 {deadline:?}; output:\n{}",
                handle.label,
                handle.log_text()
            )
        });
        Failure {
            status,
            output: handle.log_text(),
        }
    }
}

/// How a sluice that failed startup ended.
#[derive(Debug)]
pub struct Failure {
    pub status: ExitStatus,
    /// stdout and stderr, interleaved by line.
    pub output: String,
}

/// A running sluice. Dropping it stops sluice (SIGTERM, then SIGKILL to its whole process group).
pub struct SluiceHandle {
    child: Child,
    log: Arc<Log>,
    binds: Vec<(String, SocketAddr)>,
    state: PathBuf,
    config_path: Option<PathBuf>,
    status: Option<ExitStatus>,
    label: String,
    // Last: removed after the processes that use it are gone.
    _root: TempDir,
}

impl SluiceHandle {
    /// The address of the only (or first) bind.
    pub fn addr(&self) -> SocketAddr {
        self.binds.first().expect("no binds").1
    }

    /// The address of app `name`'s first bind.
    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.binds
            .iter()
            .find(|(app, _)| app == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no bind for app {name:?}; binds: {:?}", self.binds))
    }

    /// The admin bind's address (`--admin` / `admin:`), from its `admin listening` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.log()
            .iter()
            .filter_map(|line| {
                let tail = &line[line.find("admin listening")?..];
                let at = tail.find("addr=")? + "addr=".len();
                tail[at..].split_whitespace().next()?.parse().ok()
            })
            .next()
            .unwrap_or_else(|| panic!("no `admin listening` line in:\n{}", self.log_text()))
    }

    /// Every `(app, addr)` that logged `listening`.
    pub fn binds(&self) -> &[(String, SocketAddr)] {
        &self.binds
    }

    /// `SLUICE_TEST_STATE` of this sluice's workers.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// A path inside the state dir.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// The YAML file of a `run_config` sluice.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Every line printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    pub fn log_text(&self) -> String {
        self.log.lines().join("\n")
    }

    /// Number of lines printed so far (a mark for [`SluiceHandle::wait_log_after`]).
    pub fn log_len(&self) -> usize {
        self.log.lines().len()
    }

    /// Wait for a line satisfying `pred` among those printed after the first `mark` lines; panics
    /// with the log after `deadline`.
    pub fn wait_log_after(
        &self,
        mark: usize,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.find_line(mark, deadline, pred).unwrap_or_else(|| {
            panic!(
                "[{}] no log line ({what}) after line {mark} within {deadline:?}; output:\n{}",
                self.label,
                self.log_text()
            )
        })
    }

    /// Wait for a line containing `needle`; returns it. Panics with the log after `deadline`.
    pub fn wait_log(&self, needle: &str, deadline: Duration) -> String {
        self.wait_log_line(deadline, |l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "[{}] no log line containing {needle:?} within {deadline:?}; output:\n{}",
                    self.label,
                    self.log_text()
                )
            })
    }

    /// Wait for a line satisfying `pred`; `None` after `deadline`.
    pub fn wait_log_line(&self, deadline: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.find_line(0, deadline, pred)
    }

    fn find_line(
        &self,
        from: usize,
        deadline: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let end = Instant::now() + deadline;
        loop {
            let lines = self.log.lines();
            if let Some(l) = lines.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            self.log
                .wait_change(lines.len(), (end - now).min(Duration::from_millis(200)));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many lines printed so far satisfy `pred`.
    pub fn count_log(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.log.lines().iter().filter(|l| pred(l)).count()
    }

    /// The worker processes: live (not zombie) children of the sluice process, from `/proc`,
    /// sorted.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// Wait until sluice has exactly `n` worker processes; returns their pids. Panics with the
    /// log after `deadline`.
    pub fn wait_worker_count(&self, n: usize, deadline: Duration) -> Vec<u32> {
        try_wait_for(deadline, || {
            let pids = self.worker_pids();
            (pids.len() == n).then_some(pids)
        })
        .unwrap_or_else(|| {
            panic!(
                "[{}] sluice did not get to {n} worker processes within {deadline:?} (has {:?}); \
                 output:\n{}",
                self.label,
                self.worker_pids(),
                self.log_text()
            )
        })
    }

    /// Send `sig` to the sluice process itself.
    pub fn signal(&self, sig: i32) {
        if self.status.is_some() {
            panic!("[{}] signal({sig}) after sluice was reaped", self.label);
        }
        // SAFETY: plain syscall; the pid is our unreaped child, so it cannot name a stranger.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Wait for sluice to exit; panics with the log after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        self.try_wait_exit(deadline).unwrap_or_else(|| {
            panic!(
                "[{}] sluice still running after {deadline:?}; output:\n{}",
                self.label,
                self.log_text()
            )
        })
    }

    /// Wait for sluice to exit; `None` after `deadline`. Once it has exited, any process still
    /// in its group (a straggling worker) is killed and the output is drained.
    pub fn try_wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let pid = self.pid();
        try_wait_for(deadline, || has_exited(pid).then_some(()))?;
        Some(self.reap())
    }

    /// Kill whatever is left of the process group, reap sluice, and let the readers drain.
    fn reap(&mut self) -> ExitStatus {
        // SAFETY: plain syscall. sluice is not reaped yet, so its pid (= the group id) is still
        // reserved and cannot name another group.
        unsafe {
            libc::killpg(self.pid() as i32, libc::SIGKILL);
        }
        let status = self.child.wait().expect("wait for sluice");
        self.status = Some(status);
        // The pipes close once every process holding them is gone; the lines in flight are the
        // most interesting ones for a failing test.
        let log = self.log.clone();
        let _ = try_wait_for(Duration::from_secs(10), || {
            (log.open_streams() == 0).then_some(())
        });
        status
    }
}

impl Drop for SluiceHandle {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pid = self.pid();
        // Graceful first so sluice can stop its own workers; then no mercy.
        // SAFETY: plain syscall on our unreaped child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let _ = try_wait_for(Duration::from_secs(10), || has_exited(pid).then_some(()));
        self.reap();
    }
}

/// A YAML config written to its own temp dir.
pub struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(yaml: &str) -> ConfigFile {
        let dir = tempfile::Builder::new()
            .prefix("sluice-config-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, yaml).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sluice check --config` on this file.
    pub fn check(&self) -> CheckOutput {
        sluice_check(&self.path)
    }

    /// `sluice check --config` on this file with `env` set (`Some`) or removed (`None`).
    pub fn check_with_env(&self, env: &[(&str, Option<&str>)]) -> CheckOutput {
        sluice_check_with_env(&self.path, env)
    }
}

/// The result of `sluice check`.
#[derive(Debug)]
pub struct CheckOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `sluice check --config PATH` (deadline [`DEADLINE`]).
pub fn sluice_check(path: &Path) -> CheckOutput {
    sluice_check_with_env(path, &[])
}

/// [`sluice_check`] with variables set (`Some`) or removed (`None`) in its environment.
pub fn sluice_check_with_env(path: &Path, env: &[(&str, Option<&str>)]) -> CheckOutput {
    let mut command = Command::new(sluice_bin());
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command
        .arg("check")
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice check");
    let collect = |stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("stdout")));
    let err = collect(Box::new(child.stderr.take().expect("stderr")));
    let status =
        try_wait_for(DEADLINE, || child.try_wait().expect("try_wait")).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`sluice check --config {}` did not exit within {DEADLINE:?}",
                path.display()
            )
        });
    let out = CheckOutput {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    eprintln!(
        "[check {}] {status}\n--- stdout\n{}--- stderr\n{}",
        path.display(),
        out.stdout,
        out.stderr
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_are_parsed() {
        let lines = vec![
            "2024-01-01T00:00:00Z  INFO sluice: starting".to_string(),
            "2024-01-01T00:00:00Z  INFO sluice::serve: listening app=alpha addr=127.0.0.1:40123"
                .to_string(),
            "2024-01-01T00:00:00Z  INFO listening app=\"beta\" addr=\"127.0.0.1:5\" extra=1"
                .to_string(),
            "INFO listening app=x".to_string(),
        ];
        let binds = parse_listening(&lines);
        assert_eq!(
            binds,
            vec![
                ("alpha".to_string(), "127.0.0.1:40123".parse().unwrap()),
                ("beta".to_string(), "127.0.0.1:5".parse().unwrap()),
            ]
        );
    }
}
