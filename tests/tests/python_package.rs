//! The Python package: the wheel `pip wheel .` built (scripts/test builds it and names it in
//! `SLUICE_WHEEL`), installed into a fresh venv, serving pulsar-style scripts through
//! `WSGIServer(callable).start()` with the `sluice` command the wheel carries.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sluice_tests::{
    apps_dir, get, send, sha256_hex, test_bytes, wait_for, Load, Request, Sluice, DEADLINE,
    START_DEADLINE,
};

/// The fresh venv the wheel is installed into, made once per run of this file.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let wheel = std::env::var_os("SLUICE_WHEEL").expect(
            "SLUICE_WHEEL is not set: scripts/test builds the wheel (pip wheel .) and names it \
             there; or build it yourself and point SLUICE_WHEEL at the .whl file",
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheel-venv");
        let _ = std::fs::remove_dir_all(&dir);
        run_ok(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run_ok(
            Command::new(dir.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "--no-index", "--no-deps"])
                .args(["--disable-pip-version-check"])
                .arg(&wheel),
        );
        dir
    })
}

fn python() -> PathBuf {
    venv().join("bin/python")
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn scripts() -> PathBuf {
    apps_dir().join("pulsar")
}

/// `python ARGS...` in tests/apps/pulsar, through the venv's interpreter.
fn script(args: &[&str], label: &str) -> Sluice {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Sluice::command(python(), &args, scripts(), label)
}

/// `python ARGS...` that is expected to stop by itself, with its output.
fn script_output(args: &[&str]) -> Output {
    Command::new(python())
        .args(args)
        .current_dir(scripts())
        .output()
        .expect("spawn python")
}

/// `key=value` fields of a one-line answer.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Many requests from several clients at once; every answer's fields.
fn answers(
    addr: SocketAddr,
    target: &str,
    clients: usize,
    each: usize,
) -> Vec<BTreeMap<String, String>> {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let target = target.to_string();
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| {
                        let response = get(addr, &target);
                        assert_eq!(response.status(), 200, "{}", response.text());
                        fields(&response.text())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn pulsar_hello_world_runs_two_workers_of_three_threads_on_this_interpreter() {
    let sluice = script(
        &[
            "hello.py",
            "-w",
            "2",
            "--thread-workers",
            "3",
            "-b",
            "127.0.0.1:0",
        ],
        "pulsar-hello",
    )
    .start();
    let all = answers(sluice.addr(), "/?sleep", 8, 25);
    let mut threads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for answer in &all {
        assert_eq!(answer["workers"], "2");
        assert_eq!(answer["thread_workers"], "3");
        assert_eq!(answer["timeout"], "30", "pulsar's default timeout");
        assert_eq!(answer["name"], "wsgi", "pulsar's default name");
        assert_eq!(
            answer["color"], "blue",
            "a keyword argument reaches pulsar.cfg"
        );
        threads
            .entry(answer["pid"].clone())
            .or_default()
            .insert(answer["thread"].clone());
    }
    assert_eq!(
        threads.len(),
        2,
        "two worker processes answered: {threads:?}"
    );
    for (pid, ids) in &threads {
        assert!(ids.len() <= 3, "worker {pid} ran {} threads", ids.len());
        // The workers run the interpreter that ran the script: the venv's.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("worker exe");
        let venv_python = std::fs::canonicalize(python()).expect("venv python");
        assert_eq!(exe, venv_python, "worker {pid} runs {exe:?}");
    }
}

#[test]
fn blocking_middleware_handler_reads_whole_bodies_and_answers_404_when_no_middleware_does() {
    let sluice = script(&["middleware.py", "-b", "127.0.0.1:0"], "pulsar-middleware").start();
    let addr = sluice.addr();
    let body = test_bytes(200_000, 7);
    let answer = send(addr, &Request::post("/echo", body.clone())).text();
    assert_eq!(answer, format!("200000 {} same=True\n", sha256_hex(&body)));
    let chunked = Request::post("/echo", body.clone()).chunked(&[1, 4096, 65536, 100_000]);
    let answer = send(addr, &chunked).text();
    assert_eq!(answer, format!("200000 {} same=True\n", sha256_hex(&body)));
    assert_eq!(get(addr, "/elsewhere").status(), 404);
}

#[test]
fn two_servers_registered_before_the_arbiter_share_one_gateway() {
    let sluice = script(&["two_apps.py"], "pulsar-arbiter")
        .env("BIND1", "127.0.0.1:0")
        .env("PORT2", "0")
        .expect_binds(2)
        .start();
    let one = sluice.addr_of("wsgi1");
    let two = sluice.addr_of("wsgi2");
    assert!(
        one.ip().is_loopback(),
        "wsgi1 binds pulsar's 127.0.0.1: {one}"
    );
    // An int bind means every interface, as a bare port does in sluice.yaml.
    assert!(
        two.ip().is_unspecified(),
        "wsgi2 binds every interface: {two}"
    );
    let two = SocketAddr::from(([127, 0, 0, 1], two.port()));
    assert_eq!(get(one, "/").text(), "one wsgi1\n");
    assert_eq!(get(two, "/").text(), "two wsgi2\n");
}

#[test]
fn lazy_wsgi_sets_up_once_per_worker_process() {
    let sluice = script(&["lazy.py", "-w", "2", "-b", "127.0.0.1:0"], "pulsar-lazy").start();
    let all = answers(sluice.addr(), "/", 6, 30);
    let pids: BTreeSet<&String> = all.iter().map(|a| &a["pid"]).collect();
    let mut setups: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(sluice.state_dir()).expect("state dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(rest) = name.strip_prefix("setup-") {
            let pid = rest.split('-').next().unwrap_or_default().to_string();
            *setups.entry(pid).or_default() += 1;
        }
    }
    for pid in &pids {
        assert_eq!(
            setups.get(*pid),
            Some(&1),
            "setup calls per process: {setups:?}"
        );
    }
    assert_eq!(
        setups.len(),
        pids.len(),
        "setups: {setups:?}, answering pids: {pids:?}"
    );
}

#[test]
fn an_unmodified_pulsar_script_runs_under_python_m_sluice_pulsar() {
    let no_pulsar = script_output(&["-c", "import pulsar"]);
    assert!(
        !no_pulsar.status.success(),
        "nothing named pulsar is installed outside `python -m sluice.pulsar`"
    );
    let sluice = script(
        &[
            "-m",
            "sluice.pulsar",
            "pulsar_script.py",
            "--thread-workers",
            "2",
            "-b",
            "127.0.0.1:0",
        ],
        "pulsar-script",
    )
    .start();
    let answer = fields(&get(sluice.addr(), "/").text());
    assert_eq!(answer["thread_workers"], "2");
}

#[test]
fn settings_come_from_keywords_then_the_config_file_then_flags() {
    let sluice = script(
        &["hello.py", "-c", "settings_file.py", "-b", "127.0.0.1:0"],
        "pulsar-config-file",
    )
    .start();
    let answer = fields(&get(sluice.addr(), "/").text());
    assert_eq!(answer["workers"], "2", "{answer:?}");
    assert_eq!(answer["thread_workers"], "2");
    assert_eq!(answer["timeout"], "40");
    assert_eq!(
        answer["color"], "green",
        "the file wins over the keyword argument"
    );
    drop(sluice);

    let pid_dir = tempfile::tempdir().expect("temp dir");
    let pid_file = pid_dir.path().join("sluice.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let sluice = script(
        &[
            "hello.py",
            "-c",
            "settings_file.py",
            "-w",
            "1",
            "-t",
            "50",
            "-p",
            &pid_arg,
            "-b",
            "127.0.0.1:0",
        ],
        "pulsar-config-flags",
    )
    .start();
    let answer = fields(&get(sluice.addr(), "/").text());
    assert_eq!(
        answer["workers"], "1",
        "the flag wins over the file: {answer:?}"
    );
    assert_eq!(answer["timeout"], "50");
    assert_eq!(answer["thread_workers"], "2");
    // pulsar's --pid-file: the gateway's pid, a child of the script's process.
    let pid: u32 = wait_for(DEADLINE, "the pid file", || {
        std::fs::read_to_string(&pid_file).ok()
    })
    .trim()
    .parse()
    .expect("a pid");
    assert!(
        sluice_tests::children_of(sluice.pid()).contains(&pid),
        "{pid} is not the gateway the script started"
    );
}

#[test]
fn a_bad_flag_is_a_usage_line_and_exit_2_never_a_traceback() {
    for args in [
        &["hello.py", "--workers", "lots"][..],
        &["hello.py", "--no-such-flag"],
        &["hello.py", "-c", "missing_settings.py"],
    ] {
        let output = script_output(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("usage:") || stderr.contains("error:"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("Traceback"), "{args:?}: {stderr}");
    }
    let help = script_output(&["hello.py", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--bind",
        "--workers",
        "--thread-workers",
        "--timeout",
        "--reload",
        "--config",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let version = script_output(&["hello.py", "--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("sluice "));
}

#[test]
fn an_unpicklable_callable_is_a_clear_error_naming_it() {
    let output = script_output(&["unpicklable.py", "-b", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("<lambda>"), "{stderr}");
    assert!(stderr.contains("picklable"), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");

    // Switching the workers' user is not there yet: said so, before anything starts.
    let output = script_output(&["hello.py", "-u", "nobody", "-b", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sluice: error: user 'nobody'"), "{stderr}");
}

#[test]
fn the_wheel_carries_the_sluice_command_with_its_worker_module_inside() {
    let bin = venv().join("bin");
    assert!(
        !bin.join("libsluice_worker.so").exists(),
        "nothing beside the command: the worker module is inside it"
    );
    let app_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        app_dir.path().join("plain.py"),
        "def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'plain\\n']\n",
    )
    .expect("write app");
    let python = python();
    let args: Vec<&OsStr> = ["serve", "plain:app", "--bind", "127.0.0.1:0", "--python"]
        .iter()
        .map(OsStr::new)
        .chain([python.as_os_str()])
        .collect();
    let sluice = Sluice::command(bin.join("sluice"), &args, app_dir.path(), "wheel-serve").start();
    assert_eq!(get(sluice.addr(), "/").text(), "plain\n");
    // `python -m sluice` is the same command.
    let output = script_output(&["-m", "sluice", "--version"]);
    assert!(output.status.success(), "{output:?}");
}

/// A pulsar-style script answering its VERSION, as written into a temp dir.
fn versioned_script(version: &str, extra: &str) -> String {
    format!(
        "from sluice.apps import wsgi\n\
         VERSION = {version:?}\n\
         def app(environ, start_response):\n    \
             body = VERSION.encode()\n    \
             start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    \
             return [body]\n\
         {extra}\n\
         if __name__ == '__main__':\n    \
             wsgi.WSGIServer(app).start()\n"
    )
}

#[test]
fn reload_switches_to_edited_code_under_load_and_a_broken_edit_keeps_the_old() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("site.py");
    // Written as editors save: a temp file renamed over the script.
    let write = |version: &str, extra: &str| {
        let temp = dir.path().join(".site.py.tmp");
        std::fs::write(&temp, versioned_script(version, extra)).expect("write");
        std::fs::rename(&temp, &path).expect("rename");
    };
    write("one", "");
    let args: Vec<&OsStr> = [
        "site.py",
        "--reload",
        "--thread-workers",
        "2",
        "-b",
        "127.0.0.1:0",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let sluice = Sluice::command(python(), &args, dir.path(), "pulsar-reload").start();
    sluice.wait_log("reload: watching", DEADLINE);
    let addr = sluice.addr();
    let load = Load::start(3, addr, "/");
    load.wait_all_served(3, DEADLINE);

    write("two", "");
    wait_for(DEADLINE, "the edited code answering", || {
        (get(addr, "/").text() == "two").then_some(())
    });
    sluice.wait_log("reload: done", DEADLINE);

    let mark = sluice.log_len();
    write("three", "def broken(:\n");
    sluice.wait_log_after(mark, "the failed reload", START_DEADLINE, |l| {
        l.contains("reload: the app failed to start")
    });
    load.wait_progress(20, DEADLINE);
    assert_eq!(get(addr, "/").text(), "two", "the old code answers");

    let tally = load.stop();
    tally.assert_no_failures("edits under --reload through the Python API");
    let versions = tally.versions();
    assert!(
        versions.contains_key("one") && versions.contains_key("two"),
        "{versions:?}"
    );
}

/// The oldest CPython the wheel is for: pyenv's 3.9 (every machine here has one).
fn python39() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let versions = Path::new(&home).join(".pyenv/versions");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("3.9."))
                .map(|e| e.path().join("bin/python3"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no CPython 3.9 under {}", versions.display()))
}

#[test]
fn the_wheel_serves_from_a_cpython_3_9_venv() {
    let wheel = std::env::var_os("SLUICE_WHEEL").expect("SLUICE_WHEEL");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheel-venv-3.9");
    let _ = std::fs::remove_dir_all(&venv);
    run_ok(Command::new(python39()).args(["-m", "venv"]).arg(&venv));
    let python = venv.join("bin/python");
    run_ok(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-index", "--no-deps"])
            .args(["--disable-pip-version-check"])
            .arg(&wheel),
    );
    let args: Vec<&OsStr> = ["hello.py", "-b", "127.0.0.1:0"]
        .iter()
        .map(OsStr::new)
        .collect();
    let sluice = Sluice::command(&python, &args, scripts(), "pulsar-3.9").start();
    let answer = fields(&get(sluice.addr(), "/").text());
    let exe = std::fs::read_link(format!("/proc/{}/exe", answer["pid"])).expect("worker exe");
    assert!(
        exe.to_string_lossy().contains("3.9"),
        "the worker runs {exe:?}, not CPython 3.9"
    );
}
