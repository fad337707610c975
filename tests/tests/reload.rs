//! `--reload` end to end: an edit of the app's code (or of the YAML file) under a steady load
//! switches the answers to the new code with no failed request; a broken edit leaves the old
//! code answering and logs the traceback; without `--reload` nothing watches, and an edit
//! changes nothing.
//!
//! Each test writes a small stdlib app into a temp dir; it answers `VERSION PID`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sluice_tests::{
    http, stdlib_python, try_wait_for, wait_for, Load, Sluice, SluiceHandle, DEADLINE,
    START_DEADLINE,
};

/// Concurrent keep-alive clients while the code changes.
const CLIENTS: usize = 4;

/// The app, answering `VERSION PID`; `extra` is appended (a broken edit).
fn app_source(version: &str, extra: &str) -> String {
    format!(
        "import os\n\
         VERSION = {version:?}\n\
         def app(environ, start_response):\n    \
             body = ('%s %d' % (VERSION, os.getpid())).encode()\n    \
             start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    \
             return [body]\n\
         {extra}"
    )
}

/// A temp dir holding `app.py`.
struct AppDir {
    dir: tempfile::TempDir,
}

impl AppDir {
    fn new(version: &str) -> AppDir {
        let dir = tempfile::Builder::new()
            .prefix("sluice-watch-")
            .tempdir()
            .expect("temp dir");
        let app = AppDir { dir };
        app.write(version, "");
        app
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn module(&self) -> PathBuf {
        self.path().join("app.py")
    }

    /// Writes `app.py` as many editors save: a temp file renamed over it, so no reload can see
    /// it half written.
    fn write(&self, version: &str, extra: &str) {
        let temp = self.path().join(".app.py.swp");
        std::fs::write(&temp, app_source(version, extra)).expect("write the temp file");
        std::fs::rename(&temp, self.module()).expect("rename over app.py");
    }

    fn serve(&self) -> Sluice {
        Sluice::serve("app:app")
            .chdir(self.path())
            .python(stdlib_python())
            .threads(2)
            // Rewritten within the second it was imported, maybe at the same size: a cached
            // .pyc would pass for fresh.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .label("reload")
    }
}

/// The `VERSION PID` answer of one request on a fresh connection.
fn whoami(addr: SocketAddr) -> (String, u32) {
    let resp = http::get(addr, "/");
    assert_eq!(resp.status(), 200, "{:?} {:?}", resp.head, resp.text());
    let text = resp.text();
    let (version, pid) = text.split_once(' ').expect("VERSION PID");
    (version.to_string(), pid.parse().expect("a pid"))
}

/// Polls until the answers come from `version`; panics after the start deadline.
fn wait_version(sluice: &SluiceHandle, version: &str) -> u32 {
    let addr = sluice.addr();
    let found = try_wait_for(START_DEADLINE, || {
        let (v, pid) = whoami(addr);
        (v == version).then_some(pid)
    });
    found.unwrap_or_else(|| {
        panic!(
            "the answers did not switch to {version}; log:\n{}",
            sluice.log_text()
        )
    })
}

/// How many inotify instances the process `pid` holds open: a watcher is one.
fn inotify_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

/// Waits until the watcher has watched everything (so an edit from now on is seen).
fn wait_watching(sluice: &SluiceHandle) {
    sluice.wait_log("reload: watching", DEADLINE);
}

/// Waits for the next line saying which files changed, logged after line `mark`.
fn wait_changed(sluice: &SluiceHandle, mark: usize) -> String {
    sluice.wait_log_after(mark, "a reload naming the changed files", DEADLINE, |l| {
        l.contains("reload: ") && l.ends_with(" changed")
    })
}

fn count(sluice: &SluiceHandle, needle: &str) -> usize {
    sluice.count_log(|l| l.contains(needle))
}

#[test]
fn an_edit_under_load_switches_to_the_new_code_and_a_broken_one_keeps_the_old() {
    let app = AppDir::new("v1");
    let sluice = app.serve().arg("--reload").start();
    let addr = sluice.addr();
    wait_watching(&sluice);
    assert_eq!(inotify_fds(sluice.pid()), 1, "one watcher");
    let load = Load::start(CLIENTS, addr, "/");
    load.wait_all_served(3, DEADLINE);

    // (a) A good edit: the new code answers, and nothing failed on the way.
    let mark = sluice.log_len();
    app.write("version-two", "");
    wait_version(&sluice, "version-two");
    let changed = wait_changed(&sluice, mark);
    assert!(changed.contains("app.py changed"), "{changed}");
    sluice.wait_log("reload: done", DEADLINE);
    load.wait_progress(CLIENTS as u64, DEADLINE);

    // (b) A syntax error: the reload fails with the traceback, the old code goes on answering.
    let mark = sluice.log_len();
    app.write("v3", "def broken(:\n");
    let outcome = sluice.wait_log_after(mark, "the failed reload", START_DEADLINE, |l| {
        l.contains("reload: the app failed to start") || l.contains("reload: done")
    });
    assert!(
        outcome.contains("reload: the app failed to start"),
        "{outcome}"
    );
    wait_for(DEADLINE, "the traceback of the broken edit", || {
        let log = sluice.log()[mark..].join("\n");
        (log.contains("SyntaxError") && log.contains("app.py")).then_some(())
    });
    load.wait_progress(CLIENTS as u64 * 5, DEADLINE);
    assert_eq!(whoami(addr).0, "version-two", "the old code answers");

    // Fixed: the next edit goes through.
    app.write("v3", "");
    wait_version(&sluice, "v3");
    load.wait_progress(CLIENTS as u64, DEADLINE);

    let tally = load.stop();
    eprintln!("edits under load: {}", tally.summary());
    tally.assert_no_failures("edits under --reload");
    let versions = tally.versions();
    for version in ["v1", "version-two", "v3"] {
        assert!(versions.contains_key(version), "{versions:?}");
    }
    // One edit, one reload: the events of one write are debounced together.
    assert_eq!(count(&sluice, "reload: done"), 2, "{}", sluice.log_text());
}

#[test]
fn an_edited_yaml_file_takes_effect_under_run_reload() {
    let app = AppDir::new("v1");
    let config = app.path().join("sluice.yaml");
    let yaml = |workers: usize| {
        format!(
            "python: {python}\nreload: true\napps:\n  app:\n    app: app:app\n    chdir: .\n    bind: [\"127.0.0.1:0\"]\n    workers: {workers}\n",
            python = serde_json::to_string(&stdlib_python()).unwrap(),
        )
    };
    std::fs::write(&config, yaml(1)).expect("write the config");
    let sluice = Sluice::run_config_file(&config)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .label("reload-run")
        .start();
    wait_watching(&sluice);
    let first = sluice.wait_worker_count(1, DEADLINE);
    let load = Load::start(CLIENTS, sluice.addr(), "/");
    load.wait_all_served(3, DEADLINE);

    let mark = sluice.log_len();
    std::fs::write(&config, yaml(2)).expect("rewrite the config");
    let changed = wait_changed(&sluice, mark);
    assert!(changed.contains("sluice.yaml changed"), "{changed}");
    sluice.wait_log("reload: done", START_DEADLINE);
    let now = sluice.wait_worker_count(2, DEADLINE);
    assert!(now.iter().all(|pid| !first.contains(pid)), "{now:?}");

    // The code is watched under `run` too.
    app.write("v2", "");
    wait_version(&sluice, "v2");
    let tally = load.stop();
    tally.assert_no_failures("a YAML edit under run --reload");
}

#[test]
fn without_reload_nothing_watches_and_an_edit_changes_nothing() {
    let app = AppDir::new("v1");
    let sluice = app.serve().start();
    let addr = sluice.addr();
    let (_, pid) = whoami(addr);
    // No watcher was made: no inotify instance in the gateway.
    assert_eq!(inotify_fds(sluice.pid()), 0, "a watcher without --reload");
    app.write("v2", "");
    // Nothing can change the answer (there is no watcher), so this bounded wait cannot flake;
    // it only gives a watcher, were there one, several debounce periods to act.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut answers = 0;
    while std::time::Instant::now() < until || answers < 20 {
        assert_eq!(
            whoami(addr),
            ("v1".to_string(), pid),
            "the edit took effect"
        );
        answers += 1;
    }
    assert_eq!(count(&sluice, "reload:"), 0, "{}", sluice.log_text());
    assert_eq!(sluice.worker_pids(), vec![pid]);
}

#[test]
fn a_directory_made_after_the_start_is_watched_too() {
    let app = AppDir::new("v1");
    let sluice = app.serve().arg("--reload").start();
    wait_watching(&sluice);
    let package = app.path().join("pkg");
    let module = package.join("__init__.py");

    // Made after the watch began: its file counts, whether its event came before the new
    // directory was watched or after.
    let mark = sluice.log_len();
    std::fs::create_dir(&package).expect("mkdir pkg");
    std::fs::write(&module, "X = 1\n").expect("write pkg/__init__.py");
    let changed = wait_changed(&sluice, mark);
    assert!(changed.contains("pkg/__init__.py"), "{changed}");
    sluice.wait_log_after(mark, "the reload", START_DEADLINE, |l| {
        l.contains("reload: done")
    });

    // And it is watched from then on.
    let mark = sluice.log_len();
    std::fs::write(&module, "X = 2\n").expect("rewrite pkg/__init__.py");
    let changed = wait_changed(&sluice, mark);
    assert!(changed.contains("pkg/__init__.py"), "{changed}");
}
