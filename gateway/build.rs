//! With the `embed-worker` feature, builds the worker module and puts its bytes into the `sluice`
//! binary, so that one file is all there is to install. The Python wheel is built this way: pip
//! puts the binary on the venv's PATH, and nothing needs to sit beside it. Without the feature
//! (a plain `cargo build`) this does nothing and the module is found beside the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_EMBED_WORKER").is_none() {
        return;
    }
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("gateway/ sits in the workspace");
    for watched in [
        "worker/src",
        "worker/Cargo.toml",
        "proto/src",
        "proto/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let module = build_worker(workspace, &out_dir);
    let embedded = out_dir.join("sluice_worker.so");
    std::fs::copy(&module, &embedded).expect("copying the worker module");
    println!(
        "cargo:rustc-env=SLUICE_EMBEDDED_WORKER={}",
        embedded.display()
    );
}

/// Runs a second cargo for the worker crate. It gets a target directory of its own: the outer
/// build holds the lock on the usual one, and a nested cargo waiting for it would never finish.
fn build_worker(workspace: &Path, out_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("worker-target");
    let profile = std::env::var("PROFILE").expect("set by cargo");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--package", "sluice-worker", "--lib", "--locked"])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile == "release" {
        command.arg("--release");
    }
    // What the outer cargo set for this build script is not for the nested build's own scripts.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("running cargo for the worker module");
    assert!(
        status.success(),
        "building the worker module failed ({status})"
    );
    target_dir.join(&profile).join("libsluice_worker.so")
}
