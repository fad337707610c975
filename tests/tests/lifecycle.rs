//! Worker lifecycle end to end, each scenario under a steady load of [`CLIENTS`] keep-alive
//! clients that count the outcome of every request: reloads (good, with new code, with a broken
//! file, with an app that fails to import, adding and removing binds), workers killed under
//! load, stopping (SIGTERM within graceful_timeout; SIGINT / SIGQUIT at once), request timeouts,
//! recycling by max_requests / max_rss / worker_lifetime, and SIGTTIN / SIGTTOU.
//!
//! The fixture is `tests/apps/lifecycle.py`; every answer is `VERSION PID`, so the tests can tell
//! old code from new and a worker from its replacement.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::{
    apps_dir, free_port, http, stdlib_python, try_wait_for, wait_for, ClientSpec, Load, Outcome,
    Request, Sluice, SluiceHandle, Tally, DEADLINE, START_DEADLINE,
};

/// Concurrent keep-alive clients in every scenario.
const CLIENTS: usize = 32;

/// What the load asks for: a request that spends a little time in Python, so workers always hold
/// requests when something happens to them.
const HIT: &str = "/hit?ms=2";

/// How far apart the signals of the periodic scenarios are (the pacing is the requirement).
const PERIOD: Duration = Duration::from_secs(2);

/// Sleep until `at`: pacing that the scenario asks for, never synchronisation.
fn sleep_until(at: Instant) {
    if let Some(left) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

/// The YAML-quoted form of a path.
fn yaml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

fn signal_pid(pid: u32, sig: i32) {
    // SAFETY: plain syscall; `pid` is a worker of the sluice this test started, listed just now.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// The `VERSION PID` answer of one request on a fresh connection.
fn whoami(addr: SocketAddr) -> (String, u32) {
    let resp = http::get(addr, "/hit");
    assert_eq!(resp.status(), 200, "{:?} {:?}", resp.head, resp.text());
    let text = resp.text();
    let (version, pid) = text.split_once(' ').expect("VERSION PID");
    (version.to_string(), pid.parse().expect("a pid"))
}

/// Lines logged after line `mark`, joined.
fn log_since(sluice: &SluiceHandle, mark: usize) -> String {
    sluice.log()[mark..].join("\n")
}

fn count(sluice: &SluiceHandle, needle: &str) -> usize {
    sluice.count_log(|l| l.contains(needle))
}

/// Wait until the log holds at least `n` lines containing `needle`.
fn wait_count(sluice: &SluiceHandle, needle: &str, n: usize, deadline: Duration) {
    if try_wait_for(deadline, || (count(sluice, needle) >= n).then_some(())).is_none() {
        panic!(
            "fewer than {n} log lines containing {needle:?} within {deadline:?}; output:\n{}",
            sluice.log_text()
        );
    }
}

/// The recycling / reload log lines, for assertion messages.
fn lifecycle_lines(sluice: &SluiceHandle) -> String {
    sluice
        .log()
        .into_iter()
        .filter(|l| {
            [
                "worker ready",
                "replacing worker",
                "worker exited",
                "reload:",
                "ran past",
            ]
            .iter()
            .any(|n| l.contains(n))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of the lifecycle app in a temp dir, beside a YAML file that serves it, for the tests
/// that change the code or the file before a SIGHUP.
struct ReloadableApp {
    dir: tempfile::TempDir,
}

impl ReloadableApp {
    fn new() -> ReloadableApp {
        let dir = tempfile::Builder::new()
            .prefix("sluice-reload-")
            .tempdir()
            .expect("temp dir");
        let app = ReloadableApp { dir };
        app.write_module("v1", false);
        app.write_config(&app.good_yaml());
        app
    }

    fn module(&self) -> PathBuf {
        self.dir.path().join("lifecycle.py")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("sluice.yaml")
    }

    /// The fixture with its `VERSION` line set to `version`, and failing at import if `broken`.
    fn write_module(&self, version: &str, broken: bool) {
        let source = std::fs::read_to_string(apps_dir().join("lifecycle.py")).expect("fixture");
        let marker = "VERSION = \"v1\"  # sluice-version";
        assert!(source.contains(marker), "the fixture lost its VERSION line");
        let mut source = source.replace(
            marker,
            &format!("VERSION = \"{version}\"  # sluice-version"),
        );
        if broken {
            source.push_str("\n1 / 0  # sluice-broken-import\n");
        }
        std::fs::write(self.module(), source).expect("write the module");
    }

    fn good_yaml(&self) -> String {
        format!(
            "python: {python}
apps:
  lifecycle:
    app: lifecycle:app
    chdir: {chdir}
    bind: [\"127.0.0.1:0\"]
    workers: 2
    threads: 4
",
            python = yaml_str(&stdlib_python()),
            chdir = yaml_str(self.dir.path()),
        )
    }

    fn write_config(&self, yaml: &str) {
        std::fs::write(self.config(), yaml).expect("write the config");
    }

    fn start(&self) -> SluiceHandle {
        Sluice::run_config_file(self.config())
            // The module is rewritten within the second it was first imported, with the same
            // size: a cached .pyc would pass for fresh and hide the new code.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .label("reload")
            .start()
    }
}

/// SIGHUP and wait for the reload's outcome line (done, or why not); returns it.
fn reload(sluice: &SluiceHandle) -> String {
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    sluice.wait_log_after(mark, "the reload's outcome", START_DEADLINE, |l| {
        l.contains("reload: done") || l.contains("reload: the") || l.contains("reload: cannot")
    })
}

#[test]
fn five_reloads_under_load_lose_nothing_and_switch_to_new_code() {
    let app = ReloadableApp::new();
    let sluice = app.start();
    let addr = sluice.addr();
    let first_workers = sluice.wait_worker_count(2, DEADLINE);
    let load = Load::start(CLIENTS, addr, HIT);
    load.wait_all_served(3, DEADLINE);

    let mut next = Instant::now();
    let mut code_change = None;
    for round in 1..=5 {
        sleep_until(next);
        if round == 3 {
            app.write_module("v2", false);
        }
        if round == 4 {
            // New settings too: one more worker from now on.
            app.write_config(&app.good_yaml().replace("workers: 2", "workers: 3"));
        }
        let signalled = Instant::now();
        next = signalled + PERIOD;
        let outcome = reload(&sluice);
        assert!(
            outcome.contains("reload: done"),
            "reload {round} did not succeed: {outcome}\n{}",
            sluice.log_text()
        );
        if round == 3 {
            // Observed after the switch was logged, so anything sent from now on is new code.
            code_change = Some((signalled, Instant::now()));
        }
        load.wait_progress(CLIENTS as u64, DEADLINE);
    }
    let (signalled, switched) = code_change.expect("round 3 ran");
    // The old generations drain away: the three workers of the new settings are left, none of
    // the first ones.
    let last_workers = sluice.wait_worker_count(3, DEADLINE);
    assert!(
        last_workers.iter().all(|p| !first_workers.contains(p)),
        "first workers {first_workers:?} still there: {last_workers:?}"
    );
    load.wait_progress(CLIENTS as u64, DEADLINE);
    let tally = load.stop();
    eprintln!("five reloads: {}", tally.summary());
    tally.assert_no_failures("five reloads under load");
    assert_eq!(
        count(&sluice, "reload: done"),
        5,
        "{}",
        lifecycle_lines(&sluice)
    );

    for r in &tally.records {
        let version = r
            .outcome
            .body()
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or_default();
        if r.done < signalled {
            assert_eq!(version, "v1", "a response before the code changed: {r:?}");
        }
        if r.sent > switched {
            assert_eq!(
                version, "v2",
                "a request sent after the switch got old code: {r:?}"
            );
        }
    }
    let versions = tally.versions();
    assert!(
        versions.get("v2").is_some_and(|&n| n >= CLIENTS),
        "responses did not switch to the new code: {versions:?}"
    );
    assert_eq!(whoami(addr).0, "v2");
}

#[test]
fn failed_reloads_keep_the_old_workers_serving() {
    let app = ReloadableApp::new();
    let sluice = app.start();
    let addr = sluice.addr();
    let workers = sluice.wait_worker_count(2, DEADLINE);
    let load = Load::start(CLIENTS, addr, HIT);
    load.wait_all_served(3, DEADLINE);

    // A file with a typo: nothing starts, the log says where.
    app.write_config(
        &app.good_yaml()
            .replace("    threads: 4\n", "    threads: 4\n    wokers: 2\n"),
    );
    let mark = sluice.log_len();
    let outcome = reload(&sluice);
    assert!(
        outcome.contains("reload: the configuration is invalid"),
        "{outcome}"
    );
    // The lines after the outcome line say where and what (they may still be on their way).
    let said = try_wait_for(DEADLINE, || {
        let why = log_since(&sluice, mark);
        (why.contains("sluice.yaml:9:5") && why.contains("unknown field `wokers`")).then_some(())
    });
    assert!(
        said.is_some(),
        "the log does not say what is wrong with the file:\n{}",
        log_since(&sluice, mark)
    );
    load.wait_progress(CLIENTS as u64, DEADLINE);
    assert_eq!(sluice.worker_pids(), workers, "the workers changed");

    // A good file, but the app's new code fails at import: the old workers go on.
    app.write_config(&app.good_yaml());
    app.write_module("v2", true);
    let mark = sluice.log_len();
    let outcome = reload(&sluice);
    assert!(
        outcome.contains("reload: the app failed to start"),
        "{outcome}"
    );
    let why = wait_for(DEADLINE, "the traceback of the failed import", || {
        let why = log_since(&sluice, mark);
        (why.contains("ZeroDivisionError") && why.contains("lifecycle.py")).then_some(why)
    });
    assert!(why.contains("app=lifecycle"), "{why}");
    // The workers that failed to start are gone; the old ones are the only ones left.
    wait_for(DEADLINE, "only the old workers to be left", || {
        (sluice.worker_pids() == workers).then_some(())
    });
    load.wait_progress(CLIENTS as u64, DEADLINE);

    // Fixed code: the next reload goes through.
    app.write_module("v2", false);
    let fixed = Instant::now();
    let outcome = reload(&sluice);
    assert!(outcome.contains("reload: done"), "{outcome}");
    let switched = Instant::now();
    load.wait_progress(CLIENTS as u64, DEADLINE);
    let tally = load.stop();
    eprintln!("failed reloads: {}", tally.summary());
    tally.assert_no_failures("failed reloads under load");
    for r in &tally.records {
        let (version, pid) = r
            .outcome
            .body()
            .and_then(|b| b.split_once(' '))
            .expect("VERSION PID");
        if r.done < fixed {
            assert_eq!(version, "v1", "{r:?}");
            let pid: u32 = pid.parse().unwrap();
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not an old worker: {r:?}"
            );
        }
        if r.sent > switched {
            assert_eq!(version, "v2", "{r:?}");
        }
    }
    assert_eq!(
        count(&sluice, "reload: done"),
        1,
        "{}",
        lifecycle_lines(&sluice)
    );
}

#[test]
fn workers_killed_under_load_fail_only_their_own_requests() {
    const WORKERS: usize = 2;
    const THREADS: usize = 4;
    const KILLS: usize = 3;
    let sluice = Sluice::serve("lifecycle:app")
        .workers(WORKERS)
        .threads(THREADS)
        .start();
    let addr = sluice.addr();
    // Longer requests than elsewhere: every worker holds several when it is killed.
    let load = Load::start(CLIENTS, addr, "/hit?ms=20");
    load.wait_all_served(3, DEADLINE);

    let mut killed = Vec::new();
    let mut kill_times = Vec::new();
    let mut next = Instant::now();
    for k in 0..KILLS {
        // Both workers up and ready (the one killed last has been replaced).
        wait_for(START_DEADLINE, "every worker to be ready", || {
            let pids = sluice.worker_pids();
            (pids.len() == WORKERS && count(&sluice, "worker ready") >= WORKERS + k).then_some(())
        });
        sleep_until(next);
        let victim = sluice.worker_pids()[k % WORKERS];
        kill_times.push(Instant::now());
        signal_pid(victim, libc::SIGKILL);
        next = Instant::now() + PERIOD;
        killed.push(victim);
        load.wait_progress(CLIENTS as u64, DEADLINE);
    }
    // Replaced again afterwards, and serving.
    wait_count(&sluice, "worker ready", WORKERS + KILLS, START_DEADLINE);
    let now = sluice.wait_worker_count(WORKERS, DEADLINE);
    assert!(
        now.iter().all(|p| !killed.contains(p)),
        "{now:?} {killed:?}"
    );
    load.wait_progress(CLIENTS as u64 * 2, DEADLINE);
    let tally = load.stop();
    eprintln!("kills: {}", tally.summary());

    // The pool never holds more than THREADS connections to one worker, each carrying one
    // request at a time: a kill can fail at most THREADS requests, each with a 502 that comes
    // after the kill (and, the kills being 2 s apart, before the next one). Anything else
    // (another status, a cut-off, a connection error, a timeout) is a lost request.
    let mut per_kill = vec![0usize; KILLS];
    for f in tally.failures() {
        assert_eq!(
            f.outcome.status(),
            Some(502),
            "a failure other than a 502 ({}): {f:?}",
            tally.summary()
        );
        let kill = kill_times
            .iter()
            .rposition(|&at| at <= f.done)
            .unwrap_or_else(|| panic!("a 502 before any kill: {f:?}"));
        per_kill[kill] += 1;
    }
    eprintln!("kills: 502s per kill {per_kill:?}");
    assert!(
        per_kill.iter().all(|&n| n <= THREADS),
        "502s per kill {per_kill:?}, more than the {THREADS} threads of a worker: {}",
        tally.summary()
    );
    for pid in &killed {
        let exited = format!("pid={pid}");
        assert!(
            sluice.count_log(
                |l| l.contains("worker exited (killed by signal 9)") && l.contains(&exited)
            ) == 1,
            "no exit line for {pid}:\n{}",
            lifecycle_lines(&sluice)
        );
    }
    let answered = tally.pids();
    assert!(
        now.iter().all(|p| answered.contains(p)),
        "the replacements {now:?} did not answer ({answered:?})"
    );
}

/// A request written to a kept-alive connection at the very moment the gateway closes it as
/// idle (on SIGTERM) is not in flight: it never reached the gateway, and HTTP/1.1 lets a server
/// close an idle connection (clients retry). Only requests sent this close to the signal may get
/// no answer; anything sent earlier was in the gateway's hands and must be answered.
const CLOSE_RACE: Duration = Duration::from_millis(250);

#[test]
fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    const GRACEFUL: Duration = Duration::from_secs(15);
    let mut sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--graceful-timeout")
        .arg(format!("{}s", GRACEFUL.as_secs()))
        .start();
    let addr = sluice.addr();
    // Requests of 200 ms on 8 threads for 32 clients: at the signal, every client has one in
    // flight, in Python or queued for a thread.
    let load = Load::start(CLIENTS, addr, "/hit?ms=200");
    load.wait_all_served(1, DEADLINE);

    let slow =
        std::thread::spawn(move || http::request(addr, &Request::get("/slow?token=term&s=2")));
    let marker = sluice.state_file("slow-term");
    wait_for(DEADLINE, "the slow request to be running", || {
        marker.exists().then_some(())
    });
    let mark = sluice.log_len();
    let term = Instant::now();
    sluice.signal(libc::SIGTERM);
    sluice.wait_log_after(mark, "stopping", DEADLINE, |l| l.contains("stopping"));
    wait_for(
        DEADLINE,
        "new connections to be refused",
        || match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    // Refused while the slow request is certainly still running: it waits for `go`.
    assert!(!slow.is_finished(), "the slow request ended early");
    std::fs::write(sluice.state_file("go-term"), "1").unwrap();
    let resp = slow
        .join()
        .unwrap()
        .expect("the slow request should complete, not lose its connection");
    assert_eq!(resp.status(), 200, "{:?} {:?}", resp.head, resp.text());
    assert!(resp.text().starts_with("slow done v1"), "{:?}", resp.text());

    let left = GRACEFUL.saturating_sub(term.elapsed());
    let status = sluice
        .try_wait_exit(left)
        .unwrap_or_else(|| panic!("sluice still running {GRACEFUL:?} after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{status}\n{}", sluice.log_text());

    let tally = load.stop();
    eprintln!("sigterm: {}", tally.summary());
    // Every response is a complete 200 (no error status, no cut-off); no request hangs; the
    // only requests left unanswered were sent at the signal or after it.
    for r in tally.failures() {
        match &r.outcome {
            Outcome::Error(e) if r.sent + CLOSE_RACE >= term && !e.contains("timed out") => {}
            _ => panic!(
                "a failed request, sent {:?} before SIGTERM: {r:?}\n{}",
                term.saturating_duration_since(r.sent),
                tally.summary()
            ),
        }
    }
    // The requests in flight at the signal were answered.
    let in_flight = tally
        .records
        .iter()
        .filter(|r| r.sent < term && r.done > term && r.outcome.is_ok())
        .count();
    assert!(
        in_flight >= CLIENTS / 2,
        "only {in_flight} requests in flight at SIGTERM were answered: {}",
        tally.summary()
    );
    let refused = tally
        .records
        .iter()
        .filter(|r| r.outcome.label().contains("refused"))
        .count();
    assert!(
        refused > 0,
        "no client saw its connection refused: {}",
        tally.summary()
    );
}

/// A request held in Python until the test lets it go (never, in these tests): `slow-TOKEN`
/// appears once it runs. Returns the thread waiting for its answer.
fn hold_a_request(
    sluice: &SluiceHandle,
    token: &str,
) -> std::thread::JoinHandle<std::io::Result<http::Response>> {
    let addr = sluice.addr();
    let target = format!("/slow?token={token}&s=0");
    let held = std::thread::spawn(move || http::request(addr, &Request::get(&target)));
    let marker = sluice.state_file(&format!("slow-{token}"));
    wait_for(DEADLINE, "the held request to be running", || {
        marker.exists().then_some(())
    });
    held
}

#[test]
fn sigterm_does_not_wait_past_graceful_timeout() {
    const GRACEFUL: Duration = Duration::from_secs(5);
    let mut sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--graceful-timeout")
        .arg(format!("{}s", GRACEFUL.as_secs()))
        .start();
    let load = Load::start(CLIENTS, sluice.addr(), HIT);
    load.wait_all_served(3, DEADLINE);
    let held = hold_a_request(&sluice, "forever");

    let term = Instant::now();
    sluice.signal(libc::SIGTERM);
    let status = sluice.wait_exit(DEADLINE);
    let took = term.elapsed();
    // In-flight requests get graceful_timeout; then the workers are stopped, which may take a
    // moment (a worker that does not stop is killed), but not another graceful_timeout.
    assert!(
        took < GRACEFUL + Duration::from_secs(2),
        "sluice exited {took:?} after SIGTERM with graceful_timeout {GRACEFUL:?}:\n{}",
        sluice.log_text()
    );
    assert_eq!(status.code(), Some(0), "{status}");
    // The held request is ended one way or another, not left hanging.
    let outcome = held.join().unwrap();
    eprintln!(
        "the request held past graceful_timeout: {:?}",
        outcome.map(|r| r.head)
    );
    let tally = load.stop();
    eprintln!("sigterm past graceful: {}", tally.summary());
    for r in tally.failures() {
        match &r.outcome {
            Outcome::Error(e) if r.sent + CLOSE_RACE >= term && !e.contains("timed out") => {}
            _ => panic!("a failed request: {r:?}\n{}", tally.summary()),
        }
    }
}

/// SIGINT and SIGQUIT: what SIGTERM does, without waiting for in-flight requests.
fn stop_at_once(sig: i32) {
    const GRACEFUL: Duration = Duration::from_secs(20);
    let mut sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--graceful-timeout")
        .arg(format!("{}s", GRACEFUL.as_secs()))
        .start();
    let load = Load::start(CLIENTS, sluice.addr(), HIT);
    load.wait_all_served(3, DEADLINE);
    let held = hold_a_request(&sluice, "forever");

    let signalled = Instant::now();
    sluice.signal(sig);
    let status = sluice.wait_exit(DEADLINE + GRACEFUL);
    let took = signalled.elapsed();
    // "At once" on a loaded box: far below the graceful timeout it must not wait for.
    assert!(
        took < Duration::from_secs(5),
        "sluice took {took:?} to stop on signal {sig} (graceful_timeout {GRACEFUL:?}):\n{}",
        sluice.log_text()
    );
    assert_eq!(status.code(), Some(0), "{status}");
    let outcome = held.join().unwrap();
    eprintln!(
        "the request in flight at signal {sig}: {:?}",
        outcome.map(|r| r.head)
    );
    let tally = load.stop();
    eprintln!("signal {sig}: {}", tally.summary());
    // Requests in flight may be cut; none hangs, and nothing failed before the signal.
    for r in tally.failures() {
        assert!(
            r.done >= signalled && !r.outcome.label().contains("timed out"),
            "{r:?}\n{}",
            tally.summary()
        );
    }
}

#[test]
fn sigint_stops_without_waiting() {
    stop_at_once(libc::SIGINT);
}

#[test]
fn sigquit_stops_without_waiting() {
    stop_at_once(libc::SIGQUIT);
}

#[test]
fn a_request_past_its_timeout_gets_504_and_only_its_worker_is_replaced() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    const SLOW_THREADS: usize = 8;
    let apps = yaml_str(&apps_dir());
    let sluice = Sluice::run_config(&format!(
        "python: {python}
apps:
  slow:
    app: lifecycle:app
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    workers: 2
    threads: {SLOW_THREADS}
    timeout: {timeout}s
  other:
    app: lifecycle:app
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    workers: 1
    threads: 4
",
        python = yaml_str(&stdlib_python()),
        timeout = TIMEOUT.as_secs(),
    ))
    .start();
    let (slow, other) = (sluice.addr_of("slow"), sluice.addr_of("other"));
    let specs = (0..CLIENTS)
        .map(|i| ClientSpec {
            addr: if i % 2 == 0 { slow } else { other },
            target: HIT.to_string(),
        })
        .collect();
    let load = Load::start_mixed(specs);
    load.wait_all_served(3, DEADLINE);

    let sent = Instant::now();
    let resp = http::request(slow, &Request::get("/stuck?token=t&s=30"))
        .expect("a response to the stuck request");
    let took = sent.elapsed();
    let done = Instant::now();
    assert_eq!(resp.status(), 504, "{:?} {:?}", resp.head, resp.text());
    assert!(
        took >= TIMEOUT && took <= TIMEOUT + Duration::from_secs(1),
        "the 504 came after {took:?}, not within {TIMEOUT:?} + 1 s"
    );
    let stuck_pid: u32 = std::fs::read_to_string(sluice.state_file("stuck-t"))
        .expect("the stuck request ran")
        .parse()
        .unwrap();

    // The traceback dump shows where it was stuck: this file, the line of the sleep.
    let source = std::fs::read_to_string(apps_dir().join("lifecycle.py")).unwrap();
    let line = source
        .lines()
        .position(|l| l.contains("# sluice-stuck-here"))
        .expect("the fixture marks its stuck line")
        + 1;
    let frame = format!("lifecycle.py\", line {line} in ep_stuck");
    let dumped = sluice.wait_log(&frame, DEADLINE);
    assert!(dumped.contains(&format!("pid={stuck_pid}")), "{dumped}");
    sluice.wait_log("ran past the 2s timeout", DEADLINE);
    let exited = sluice.wait_log_line(DEADLINE, |l| {
        l.contains("worker exited (killed by signal 9)") && l.contains(&format!("pid={stuck_pid}"))
    });
    assert!(exited.is_some(), "{}", lifecycle_lines(&sluice));
    // Replaced: the slow app is back to two workers, ready.
    wait_count(&sluice, "worker ready app=slow", 3, START_DEADLINE);
    load.wait_progress(CLIENTS as u64, DEADLINE);
    let tally = load.stop();
    eprintln!("timeout: {}", tally.summary());

    let on = |addr: SocketAddr| {
        move |r: &&sluice_tests::Record| (if r.client % 2 == 0 { slow } else { other }) == addr
    };
    // The other app never noticed.
    let other_failures: Vec<_> = tally.failures().into_iter().filter(on(other)).collect();
    assert!(other_failures.is_empty(), "other app: {other_failures:?}");
    // On the slow app, only requests inside the killed worker may fail (502): at most its other
    // threads' worth. The rest were served throughout, also while the stuck one hung.
    let slow_failures: Vec<_> = tally.failures().into_iter().filter(on(slow)).collect();
    assert!(
        slow_failures.len() < SLOW_THREADS
            && slow_failures
                .iter()
                .all(|r| r.outcome.status() == Some(502)),
        "slow app: {slow_failures:?}"
    );
    for addr in [slow, other] {
        let during = tally
            .records
            .iter()
            .filter(on(addr))
            .filter(|r| r.outcome.is_ok() && r.sent > sent && r.done < done)
            .count();
        assert!(
            during > 0,
            "nothing on {addr} was answered while the stuck request hung"
        );
    }
}

/// Wait for `n` replacements for `reason` under load, checking meanwhile that the app never has
/// fewer than `workers` worker processes (a replacement is ready before the old one leaves).
fn watch_replacements(sluice: &SluiceHandle, workers: usize, reason: &str, n: usize) {
    let needle = format!("reason=\"{reason}\"");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let pids = sluice.worker_pids();
        assert!(
            pids.len() >= workers,
            "only {pids:?} left while replacing for {reason}:\n{}",
            lifecycle_lines(sluice)
        );
        // Count replacements whose new worker is also ready: ready lines beyond the first ones.
        let replaced = count(sluice, &needle);
        let ready = count(sluice, "worker ready");
        if replaced >= n && ready >= workers + n {
            return;
        }
        assert!(
            Instant::now() < end,
            "{replaced} replacements for {reason} ({ready} ready) within 60 s, wanted {n}:\n{}",
            lifecycle_lines(sluice)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks shared by the recycling scenarios: nothing failed and the answers came from more
/// workers than there ever were at once.
fn assert_recycled(tally: &Tally, sluice: &SluiceHandle, workers: usize, n: usize) {
    tally.assert_no_failures("recycling under load");
    let pids = tally.pids();
    assert!(
        pids.len() >= workers + n,
        "answers from {} workers only, after {n} replacements: {}",
        pids.len(),
        tally.summary()
    );
    assert!(
        !sluice.log_text().contains("failed to start"),
        "{}",
        lifecycle_lines(sluice)
    );
}

#[test]
fn max_requests_with_jitter_recycles_workers_without_losing_a_request() {
    const MAX_REQUESTS: u64 = 40;
    let sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--max-requests")
        .arg(MAX_REQUESTS.to_string())
        .arg("--max-requests-jitter")
        .arg("20")
        .start();
    let load = Load::start(CLIENTS, sluice.addr(), HIT);
    watch_replacements(&sluice, 2, "max_requests", 6);
    // The newest worker is ready; let it answer before the tally, which counts pids.
    load.wait_progress(CLIENTS as u64 * 20, DEADLINE);
    let tally = load.stop();
    eprintln!("max_requests: {}", tally.summary());
    assert_recycled(&tally, &sluice, 2, 6);
    for line in sluice
        .log()
        .iter()
        .filter(|l| l.contains("reason=\"max_requests\""))
    {
        let served: u64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("served="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no served= in {line}"));
        assert!(served >= MAX_REQUESTS, "{line}");
    }
}

#[test]
fn max_rss_recycles_a_growing_worker_without_losing_a_request() {
    let sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--max-rss")
        .arg("64MiB")
        .start();
    // Every request keeps 32 KiB more alive in its worker.
    let load = Load::start(CLIENTS, sluice.addr(), "/alloc?kb=32");
    watch_replacements(&sluice, 2, "max_rss", 3);
    // The newest worker is ready; let it answer before the tally, which counts pids.
    load.wait_progress(CLIENTS as u64 * 20, DEADLINE);
    let tally = load.stop();
    eprintln!("max_rss: {}", tally.summary());
    assert_recycled(&tally, &sluice, 2, 3);
}

#[test]
fn worker_lifetime_recycles_workers_without_losing_a_request() {
    let sluice = Sluice::serve("lifecycle:app")
        .workers(2)
        .threads(4)
        .arg("--worker-lifetime")
        .arg("2s")
        .start();
    let load = Load::start(CLIENTS, sluice.addr(), HIT);
    watch_replacements(&sluice, 2, "worker_lifetime", 4);
    // The newest worker is ready; let it answer before the tally, which counts pids.
    load.wait_progress(CLIENTS as u64 * 20, DEADLINE);
    let tally = load.stop();
    eprintln!("worker_lifetime: {}", tally.summary());
    assert_recycled(&tally, &sluice, 2, 4);
}

#[test]
fn sigttin_and_sigttou_change_the_worker_count_never_below_one() {
    let sluice = Sluice::serve("lifecycle:app").workers(2).threads(2).start();
    sluice.wait_worker_count(2, DEADLINE);
    let load = Load::start(CLIENTS, sluice.addr(), HIT);
    load.wait_all_served(3, DEADLINE);

    // One signal at a time, each awaited: two pending signals of one kind would merge into one.
    let step = |sig: i32, expect: usize| {
        let mark = sluice.log_len();
        sluice.signal(sig);
        sluice.wait_log_after(mark, "the signal to be handled", DEADLINE, |l| {
            l.contains("adding a worker")
                || l.contains("removing a worker")
                || l.contains("keeping the last worker")
        });
        let pids = sluice.wait_worker_count(expect, START_DEADLINE);
        load.wait_progress(CLIENTS as u64, DEADLINE);
        pids
    };
    step(libc::SIGTTIN, 3);
    let four = step(libc::SIGTTIN, 4);
    // The two new ones are ready, not just started.
    wait_count(&sluice, "worker ready", 4, START_DEADLINE);
    assert_eq!(sluice.worker_pids(), four);
    step(libc::SIGTTOU, 3);
    step(libc::SIGTTOU, 2);
    let one = step(libc::SIGTTOU, 1);
    assert!(
        four.contains(&one[0]),
        "the last worker is one of the four: {four:?} {one:?}"
    );
    // Never fewer than one.
    let mark = sluice.log_len();
    let still = step(libc::SIGTTOU, 1);
    assert!(log_since(&sluice, mark).contains("keeping the last worker"));
    assert_eq!(still, one);
    // And back up.
    step(libc::SIGTTIN, 2);
    wait_count(&sluice, "worker ready", 5, START_DEADLINE);
    load.wait_progress(CLIENTS as u64, DEADLINE);
    let tally = load.stop();
    eprintln!("ttin/ttou: {}", tally.summary());
    tally.assert_no_failures("SIGTTIN / SIGTTOU under load");
}

#[test]
fn reload_opens_added_binds_and_closes_removed_ones() {
    let app = ReloadableApp::new();
    let sluice = app.start();
    let main = sluice.addr();
    let load = Load::start(CLIENTS, main, HIT);
    load.wait_all_served(3, DEADLINE);

    // A fixed port (port 0 would be a new port at every reload), free a moment ago.
    let extra: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    app.write_config(&app.good_yaml().replace(
        "bind: [\"127.0.0.1:0\"]",
        &format!("bind: [\"127.0.0.1:0\", \"{extra}\"]"),
    ));
    let outcome = reload(&sluice);
    assert!(outcome.contains("reload: done"), "{outcome}");
    sluice.wait_log(&format!("listening app=lifecycle addr={extra}"), DEADLINE);
    assert_eq!(whoami(extra).0, "v1");
    load.wait_progress(CLIENTS as u64, DEADLINE);

    app.write_config(&app.good_yaml());
    let outcome = reload(&sluice);
    assert!(outcome.contains("reload: done"), "{outcome}");
    sluice.wait_log("reload: no longer listening", DEADLINE);
    wait_for(
        DEADLINE,
        "the removed bind to refuse connections",
        || match TcpStream::connect(extra) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    load.wait_progress(CLIENTS as u64, DEADLINE);
    let tally = load.stop();
    eprintln!("binds: {}", tally.summary());
    tally.assert_no_failures("reloads that add and remove a bind");
}

#[test]
fn reload_switches_every_port_0_bind_of_an_app() {
    let app = ReloadableApp::new();
    app.write_config(&app.good_yaml().replace(
        "bind: [\"127.0.0.1:0\"]",
        "bind: [\"127.0.0.1:0\", \"127.0.0.1:0\"]",
    ));
    let sluice = Sluice::run_config_file(app.config())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .expect_binds(2)
        .label("two-binds")
        .start();
    let addrs: Vec<SocketAddr> = sluice.binds().iter().map(|(_, a)| *a).collect();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let specs = (0..CLIENTS)
        .map(|i| ClientSpec {
            addr: addrs[i % 2],
            target: HIT.to_string(),
        })
        .collect();
    let load = Load::start_mixed(specs);
    load.wait_all_served(3, DEADLINE);

    app.write_module("v2", false);
    let outcome = reload(&sluice);
    assert!(outcome.contains("reload: done"), "{outcome}");
    let switched = Instant::now();
    load.wait_progress(CLIENTS as u64 * 4, DEADLINE);
    let tally = load.stop();
    eprintln!("two port-0 binds: {}", tally.summary());
    let failed_on: std::collections::BTreeSet<SocketAddr> = tally
        .failures()
        .iter()
        .map(|r| addrs[r.client % 2])
        .collect();
    assert!(
        failed_on.is_empty(),
        "requests failed on {failed_on:?} (binds {addrs:?}) after a reload: {}",
        tally.summary()
    );
    tally.assert_no_failures("a reload of an app with two port-0 binds");
    for addr in &addrs {
        assert_eq!(whoami(*addr).0, "v2", "{addr} still serves old code");
    }
    for r in tally.records.iter().filter(|r| r.sent > switched) {
        assert_eq!(
            r.outcome.body().and_then(|b| b.split(' ').next()),
            Some("v2"),
            "{r:?}"
        );
    }
}
