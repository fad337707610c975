//! sluice's run directory: a private directory for the workers' sockets and a copy of the worker
//! module they load.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

    /// Where the workers' sockets go.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory a worker puts on `sys.path` to import the module.
    pub(super) fn module_dir(&self) -> &Path {
        &self.module_dir
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
