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
        let copy = module_dir.join("sluice_worker.abi3.so");
        match module {
            Module::File(module) => std::fs::copy(&module, &copy).map(drop).map_err(|e| {
                anyhow::anyhow!("copying the worker module {}: {e}", module.display())
            }),
            Module::Embedded(bytes) => std::fs::write(&copy, bytes)
                .map_err(|e| anyhow::anyhow!("writing the worker module {}: {e}", copy.display())),
        }?;
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

/// The worker module built into the binary (the `embed-worker` feature, as the Python wheel is
/// built: see `build.rs`).
#[cfg(feature = "embed-worker")]
const EMBEDDED: Option<&[u8]> = Some(include_bytes!(env!("SLUICE_EMBEDDED_WORKER")));
#[cfg(not(feature = "embed-worker"))]
const EMBEDDED: Option<&[u8]> = None;

/// Where the workers' module comes from.
enum Module {
    File(PathBuf),
    Embedded(&'static [u8]),
}

/// `SLUICE_WORKER_MODULE` first, then the module built into the binary, then the file beside it.
fn find_module() -> anyhow::Result<Module> {
    if let Some(path) = std::env::var_os("SLUICE_WORKER_MODULE") {
        return Ok(Module::File(PathBuf::from(path)));
    }
    if let Some(bytes) = EMBEDDED {
        return Ok(Module::Embedded(bytes));
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(MODULE_FILE);
    if beside.is_file() {
        return Ok(Module::File(beside));
    }
    anyhow::bail!(
        "the worker module {MODULE_FILE} is not beside {} (cargo build --release builds both; \
         or set SLUICE_WORKER_MODULE)",
        exe.display()
    )
}
