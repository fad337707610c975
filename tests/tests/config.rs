//! YAML configuration end to end: several apps from one file, relative paths, and
//! `sluice check` pointing at the exact line of each kind of mistake.

use std::path::{Component, Path};

use std::ffi::OsStr;

use sluice_tests::{
    apps_dir, get, sluice_once, wait_for, CheckOutput, ConfigFile, Sluice, DEADLINE,
};

/// The YAML-quoted form of a path.
fn yaml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

#[test]
fn two_apps_from_one_file_each_answer_as_themselves() {
    let apps = yaml_str(&apps_dir());
    let sluice = Sluice::run_config(&format!(
        "apps:
  alpha:
    app: named:alpha
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    workers: 1
    threads: 2
  beta:
    app: named:beta
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    workers: 2
    threads: 1
"
    ))
    .start();
    let (alpha, beta) = (sluice.addr_of("alpha"), sluice.addr_of("beta"));
    assert_ne!(alpha, beta);
    for _ in 0..3 {
        let resp = get(alpha, "/");
        assert_eq!((resp.status(), resp.text().as_str()), (200, "alpha"));
        let resp = get(beta, "/anything");
        assert_eq!((resp.status(), resp.text().as_str()), (200, "beta"));
    }
}

#[test]
fn relative_chdir_resolves_against_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    // `../` up to the root from the config's directory, then down to tests/apps.
    let ups = dir
        .path()
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let rel = format!(
        "{}{}",
        "../".repeat(ups),
        apps_dir().display().to_string().trim_start_matches('/')
    );
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        format!(
            "apps:
  beta:
    app: named:beta
    chdir: {}
    bind: [\"127.0.0.1:0\"]
    workers: 1
    threads: 1
",
            serde_json::to_string(&rel).unwrap()
        ),
    )
    .unwrap();
    // Run from elsewhere, so a path resolved against the cwd would miss.
    let sluice = Sluice::run_config_file(&path).start();
    assert_eq!(get(sluice.addr_of("beta"), "/").text(), "beta");
}

#[test]
fn check_accepts_a_good_file_and_prints_the_routes() {
    let config = ConfigFile::new(
        "python: python3
apps:
  alpha:
    app: named:alpha
    chdir: /tmp
    bind: [\"127.0.0.1:18081\", \"127.0.0.1:18083\"]
    workers: 2
    threads: 4
    timeout: 30s
    max_body: 10MiB
  beta:
    app: named:beta
    bind: [\"127.0.0.1:18082\"]
",
    );
    let out = config.check();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for (app, spec, binds) in [
        (
            "alpha",
            "named:alpha",
            &["127.0.0.1:18081", "127.0.0.1:18083"][..],
        ),
        ("beta", "named:beta", &["127.0.0.1:18082"]),
    ] {
        let block = app_block(&out.stdout, app);
        assert!(block.contains(spec), "{app}: no {spec} in {block:?}");
        for bind in binds {
            assert!(block.contains(bind), "{app}: no {bind} in {block:?}");
        }
    }
}

/// The lines of `stdout` from the one starting with `NAME:` up to the next unindented line:
/// the route table prints each app as a header line followed by its indented details.
fn app_block(stdout: &str, name: &str) -> String {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{name}:")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no line starting with {name}: in:\n{stdout}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with(char::is_whitespace)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `(line, column)` of the first `PATH:LINE:COLUMN` in `stderr`.
fn position(out: &CheckOutput, path: &Path) -> (u32, u32) {
    let prefix = format!("{}:", path.display());
    out.stderr
        .match_indices(&prefix)
        .find_map(|(at, _)| {
            let mut nums = out.stderr[at + prefix.len()..].splitn(3, ':');
            let line = nums.next()?.parse().ok()?;
            let col: String = nums
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some((line, col.parse().ok()?))
        })
        .unwrap_or_else(|| {
            panic!(
                "stderr does not name {}:LINE:COLUMN:\n{}",
                path.display(),
                out.stderr
            )
        })
}

/// Check `yaml`, expect exit 1 with an error at one of `lines`, mentioning every of `mentions`.
fn check_rejects(yaml: &str, lines: &[u32], mentions: &[&str]) {
    let config = ConfigFile::new(yaml);
    let out = config.check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (line, col) = position(&out, config.path());
    assert!(
        lines.contains(&line),
        "error reported at line {line}, expected {lines:?}:\n{}",
        out.stderr
    );
    assert!(col >= 1, "column {col}");
    for m in mentions {
        assert!(
            out.stderr.contains(m),
            "stderr does not mention {m:?}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_rejects_an_unknown_key() {
    check_rejects(
        "apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:0\"]
    wrkers: 2
",
        &[5],
        &["wrkers"],
    );
}

#[test]
fn check_rejects_a_missing_app() {
    // The error belongs to the `beta` mapping: its key (line 5) or its first entry (line 6).
    check_rejects(
        "apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:0\"]
  beta:
    bind: [\"127.0.0.1:0\"]
    workers: 1
",
        &[5, 6],
        &["app"],
    );
}

#[test]
fn check_rejects_a_duplicate_bind() {
    check_rejects(
        "apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:18080\"]
  beta:
    app: named:beta
    bind: [\"127.0.0.1:18080\"]
",
        &[7],
        &["127.0.0.1:18080"],
    );
}

#[test]
fn check_rejects_a_yaml_syntax_error() {
    check_rejects(
        "apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:0\"]
    workers: 2: 3
",
        &[5],
        &[],
    );
}

#[test]
fn check_rejects_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let out = sluice_tests::sluice_check(&path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&path.display().to_string()),
        "{}",
        out.stderr
    );
}

/// Threads of the gateway process named as its runtime names them.
fn gateway_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "sluice-gateway")
        })
        .count()
}

#[test]
fn gateway_threads_from_the_flag_and_from_yaml() {
    // No static files are served, so the runtime's blocking pool (same name) stays empty.
    let sluice = Sluice::serve("named:alpha")
        .chdir(apps_dir())
        .arg("--gateway-threads")
        .arg("3")
        .start();
    assert_eq!(get(sluice.addr(), "/").status(), 200);
    assert_eq!(gateway_threads(sluice.pid()), 3);

    let apps = yaml_str(&apps_dir());
    let sluice = Sluice::run_config(&format!(
        "gateway_threads: 1
apps:
  alpha:
    app: named:alpha
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    workers: 1
    threads: 1
"
    ))
    .start();
    assert_eq!(get(sluice.addr(), "/").status(), 200);
    assert_eq!(gateway_threads(sluice.pid()), 1);
}

#[test]
fn serve_options_come_from_the_environment_and_flags_win() {
    let sluice = Sluice::serve("named:alpha")
        .chdir(apps_dir())
        .env("SLUICE_GATEWAY_THREADS", "3")
        .start();
    assert_eq!(get(sluice.addr(), "/").status(), 200);
    assert_eq!(
        gateway_threads(sluice.pid()),
        3,
        "from SLUICE_GATEWAY_THREADS"
    );

    let sluice = Sluice::serve("named:alpha")
        .chdir(apps_dir())
        .env("SLUICE_GATEWAY_THREADS", "3")
        .arg("--gateway-threads")
        .arg("2")
        .start();
    assert_eq!(get(sluice.addr(), "/").status(), 200);
    assert_eq!(gateway_threads(sluice.pid()), 2, "the flag wins");
}

#[test]
fn check_takes_values_from_the_environment_and_names_an_unset_one() {
    let config = ConfigFile::new(
        "apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:${SLUICE_TEST_PORT:-18091}\"]
    workers: ${SLUICE_TEST_WORKERS}
    threads: ${SLUICE_TEST_THREADS:-3}
",
    );
    let set = config.check_with_env(&[
        ("SLUICE_TEST_PORT", Some("18095")),
        ("SLUICE_TEST_WORKERS", Some("4")),
        ("SLUICE_TEST_THREADS", Some("")),
    ]);
    assert_eq!(set.status.code(), Some(0), "{set:?}");
    let block = app_block(&set.stdout, "alpha");
    assert!(block.contains("127.0.0.1:18095"), "{block}");
    assert!(
        setting(&block, "workers").starts_with("workers: 4 "),
        "{block}"
    );
    assert!(
        setting(&block, "threads").starts_with("threads: 3 "),
        "{block}"
    );

    let defaults = config.check_with_env(&[
        ("SLUICE_TEST_PORT", None),
        ("SLUICE_TEST_WORKERS", Some("2")),
        ("SLUICE_TEST_THREADS", None),
    ]);
    assert_eq!(defaults.status.code(), Some(0), "{defaults:?}");
    let block = app_block(&defaults.stdout, "alpha");
    assert!(block.contains("127.0.0.1:18091"), "{block}");
    assert!(
        setting(&block, "workers").starts_with("workers: 2 "),
        "{block}"
    );
    assert!(
        setting(&block, "threads").starts_with("threads: 3 "),
        "{block}"
    );

    let unset = config.check_with_env(&[
        ("SLUICE_TEST_PORT", None),
        ("SLUICE_TEST_WORKERS", None),
        ("SLUICE_TEST_THREADS", None),
    ]);
    assert_eq!(unset.status.code(), Some(1), "{unset:?}");
    assert_eq!(position(&unset, config.path()), (5, 14), "at the `${{`");
    assert!(
        unset.stderr.contains("SLUICE_TEST_WORKERS is not set"),
        "{}",
        unset.stderr
    );
    assert!(
        unset
            .stderr
            .contains("   5 |     workers: ${SLUICE_TEST_WORKERS}\n     |              ^"),
        "{}",
        unset.stderr
    );
}

/// The line of `block` that sets `key`, without its indentation.
fn setting(block: &str, key: &str) -> String {
    block
        .lines()
        .map(str::trim_start)
        .find(|line| line.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {block}"))
        .to_owned()
}

/// The origin column of a setting's line: what follows the value after a run of spaces.
fn origin_of(block: &str, key: &str) -> String {
    let line = setting(block, key);
    let (_, origin) = line
        .split_once("   ")
        .unwrap_or_else(|| panic!("no origin in {line:?}"));
    origin.trim().to_owned()
}

#[test]
fn check_prints_where_each_value_came_from() {
    let config = ConfigFile::new(
        "python: python3
apps:
  alpha:
    app: named:alpha
    bind: [\"127.0.0.1:18096\"]
    workers: ${SLUICE_TEST_ORIGIN_WORKERS}
    threads: ${SLUICE_TEST_ORIGIN_THREADS:-2}
    timeout: 45s
max_connections: 500
",
    );
    let out = config.check_with_env(&[
        ("SLUICE_TEST_ORIGIN_WORKERS", Some("3")),
        ("SLUICE_TEST_ORIGIN_THREADS", None),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file = config.path().display().to_string();
    let block = app_block(&out.stdout, "alpha");
    for (key, origin) in [
        ("bind", format!("{file}:5")),
        (
            "workers",
            format!("{file}:6 ${{SLUICE_TEST_ORIGIN_WORKERS}} from the environment"),
        ),
        (
            "threads",
            format!("{file}:7 ${{SLUICE_TEST_ORIGIN_THREADS}} unset: its default"),
        ),
        ("timeout", format!("{file}:8")),
        ("python", format!("{file}:1")),
        ("graceful_timeout", "default".into()),
        ("max_body", "default".into()),
        ("forwarded_allow_ips", "default".into()),
    ] {
        assert_eq!(origin_of(&block, key), origin, "{key} in {block}");
    }
    // Every setting has its origin, defaults included.
    assert!(
        block.lines().skip(1).all(|line| line.contains("   ")),
        "{block}"
    );
    let gateway = app_block(&out.stdout, "gateway");
    assert_eq!(origin_of(&gateway, "max_connections"), format!("{file}:9"));
    assert_eq!(origin_of(&gateway, "gateway_threads"), "default");

    // `serve --check-config`: the flag, the environment, the default; nothing is served.
    let args = ["serve", "named:alpha", "--timeout", "5s", "--check-config"].map(OsStr::new);
    let out = sluice_once(
        &args,
        &[
            ("SLUICE_WORKERS", Some("2")),
            ("SLUICE_THREAD_WORKERS", None),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let block = app_block(&out.stdout, "named");
    assert!(
        setting(&block, "timeout").starts_with("timeout: 5s "),
        "{block}"
    );
    assert_eq!(origin_of(&block, "timeout"), "command line --timeout");
    assert!(
        setting(&block, "workers").starts_with("workers: 2 "),
        "{block}"
    );
    assert_eq!(origin_of(&block, "workers"), "environment SLUICE_WORKERS");
    assert_eq!(origin_of(&block, "threads"), "default");
}

#[test]
fn pid_file_is_written_once_listening_and_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sluice.pid");
    let mut sluice = Sluice::serve("named:alpha")
        .chdir(apps_dir())
        .arg("--pid")
        .arg(&pidfile)
        .start();
    assert_eq!(get(sluice.addr(), "/").status(), 200);
    // Written right after the binds listen, so maybe just after the `listening` line.
    let written = wait_for(DEADLINE, "the pid file", || {
        std::fs::read_to_string(&pidfile).ok()
    });
    assert_eq!(written.trim(), sluice.pid().to_string());
    sluice.signal(libc::SIGTERM);
    assert!(sluice.wait_exit(DEADLINE).success());
    assert!(!pidfile.exists(), "removed at exit");

    // YAML, top level, relative to the file; an unwritable path stops start-up, named.
    let yaml = format!(
        "pidfile: sluice.pid\napps:\n  alpha:\n    app: named:alpha\n    chdir: {}\n    bind: [\"127.0.0.1:0\"]\n",
        yaml_str(&apps_dir())
    );
    let sluice = Sluice::run_config(&yaml).start();
    let path = sluice.config_path().unwrap().with_file_name("sluice.pid");
    let written = wait_for(DEADLINE, "the pid file", || {
        std::fs::read_to_string(&path).ok()
    });
    assert_eq!(written.trim(), sluice.pid().to_string());
    drop(sluice);
    let failure = Sluice::serve("named:alpha")
        .chdir(apps_dir())
        .arg("--pid")
        .arg("/nonexistent-sluice-dir/sluice.pid")
        .start_expect_failure(DEADLINE);
    assert_eq!(failure.status.code(), Some(1), "{}", failure.output);
    assert!(
        failure
            .output
            .contains("cannot write the pid file /nonexistent-sluice-dir/sluice.pid"),
        "{}",
        failure.output
    );
}
