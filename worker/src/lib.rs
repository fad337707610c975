//! sluice's worker: a pyo3 extension module that the app's own interpreter loads to serve a
//! WSGI callable over sluice's framed Unix-socket protocol.
//!
//! Layout:
//! - [`serve`]: process life (load, bind, ready, thread pool, stop) and the per-thread loop.
//! - [`conn`]: blocking framed reads and writes over a Unix socket, and the bodies that go
//!   through the memory the connection shares with the gateway (`sluice_proto::shared::Region`,
//!   the one type both sides use for it).
//! - [`wsgi`]: the Python layer of a request: `start_response`, `write`, the file wrapper and
//!   streaming the result; [`environ`] builds the environ; [`app`] loads the callable and
//!   formats tracebacks.
//!
//! The gateway starts a worker as
//! `python -c "…import sluice_worker; sys.exit(sluice_worker.main(config_json))"` with the module's
//! directory on `sys.path`, so nothing is installed into the app's interpreter.

mod app;
mod conn;
mod environ;
mod serve;
mod wsgi;

use pyo3::prelude::*;

/// Serves until the gateway says stop; returns the process exit code.
#[pyfunction]
fn main(py: Python<'_>, config_json: &str) -> PyResult<i32> {
    serve::run(py, config_json)
}

#[pymodule]
fn sluice_worker(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(main, module)?)?;
    serve::register(module)
}
