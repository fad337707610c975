//! One sluice build serves apps on another CPython minor version: the worker module is abi3, so
//! `--python` pointing at a venv of a different interpreter must just work, and really run it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::{get, Sluice};

/// `(major, minor)` of an interpreter, or `None` if it does not run (e.g. a pyenv shim for a
/// version that is not selected).
fn version_of(python: &Path) -> Option<(u32, u32)> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.version_info[0], sys.version_info[1])",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>());
    match (it.next()?, it.next()?) {
        (Ok(major), Ok(minor)) => Some((major, minor)),
        _ => None,
    }
}

/// Candidate interpreters: `python3.9`..`python3.13` on PATH, then `~/.pyenv/versions/*`.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for minor in 9..=13 {
            for dir in std::env::split_paths(&path) {
                let p = dir.join(format!("python3.{minor}"));
                if p.is_file() {
                    out.push(p);
                    break;
                }
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let versions = Path::new(&home).join(".pyenv/versions");
        if let Ok(entries) = std::fs::read_dir(versions) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            dirs.sort();
            out.extend(
                dirs.into_iter()
                    .map(|d| d.join("bin/python3"))
                    .filter(|p| p.is_file()),
            );
        }
    }
    out
}

#[test]
fn serves_with_a_venv_of_another_minor_version() {
    let Some(default) = version_of(&sluice_tests::stdlib_python()) else {
        panic!("python3 on PATH does not run");
    };
    // abi3-py39: 3.9 is the oldest the worker supports.
    let other = candidates().into_iter().find_map(|p| {
        let v = version_of(&p)?;
        (v.0 == 3 && v.1 >= 9 && v != default).then_some((p, v))
    });
    let Some((base, version)) = other else {
        eprintln!(
            "skipping: no other CPython minor version found (python3 is {}.{})",
            default.0, default.1
        );
        return;
    };
    eprintln!(
        "python3 is {default:?}; using {} ({version:?})",
        base.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    // Nothing installed into it: the worker module must come from sluice, not from the venv.
    let status = Command::new(&base)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("run venv");
    assert!(status.success(), "creating a venv with {}", base.display());
    let python = venv.join("bin/python");
    assert_eq!(version_of(&python), Some(version));

    let sluice = Sluice::serve("suite:app")
        .python(&python)
        .workers(1)
        .threads(2)
        .start();
    let resp = get(sluice.addr(), "/environ/v");
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert_eq!(resp.json()["PATH_INFO"], "/environ/v");

    // The worker process itself is that interpreter.
    let pid: u32 = get(sluice.addr(), "/pid").text().trim().parse().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("worker exe");
    assert_eq!(
        version_of(&exe),
        Some(version),
        "worker {pid} runs {} which is not {version:?}",
        exe.display()
    );
    // For the record when this fails on some other machine.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("worker cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    eprintln!("worker {pid}: exe {} cmdline {cmdline}", exe.display());
}
