//! Loading the WSGI callable, and turning Python exceptions into log lines and tracebacks.

use std::fmt::Write as _;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

/// What every request of this worker shares: the callable and the objects its environ refers to.
pub(crate) struct App {
    pub(crate) name: String,
    pub(crate) callable: Py<PyAny>,
    pub(crate) bytes_io: Py<PyAny>,
    pub(crate) sys: Py<PyModule>,
    pub(crate) file_wrapper: Py<PyAny>,
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
}

/// Imports `module:callable` as gunicorn does: `chdir` (or the current directory) goes first on
/// `sys.path`; the callable may be a dotted attribute path, and `name()` calls a factory.
/// On failure returns the Python traceback as text.
pub(crate) fn load_callable(
    py: Python<'_>,
    spec: &str,
    chdir: Option<&str>,
) -> Result<Py<PyAny>, String> {
    let result = (|| -> PyResult<Py<PyAny>> {
        let os = py.import("os")?;
        let sys = py.import("sys")?;
        let dir = match chdir {
            Some(dir) => {
                os.call_method1("chdir", (dir,))?;
                PyString::new(py, dir).into_any()
            }
            None => os.call_method0("getcwd")?,
        };
        let path = sys.getattr("path")?.cast_into::<PyList>()?;
        if !path.contains(&dir)? {
            path.insert(0, dir)?;
        }
        let (module, attr) = spec.split_once(':').unwrap_or((spec, "application"));
        let mut obj = py.import(module)?.into_any();
        let (attr, call) = match attr.strip_suffix("()") {
            Some(factory) => (factory, true),
            None => (attr, false),
        };
        for part in attr.split('.') {
            obj = obj.getattr(part).map_err(|_| {
                pyo3::exceptions::PyAttributeError::new_err(format!(
                    "module {module:?} has no attribute {attr:?} (from {spec:?})"
                ))
            })?;
        }
        if call {
            obj = obj.call0()?;
        }
        if !obj.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{spec} is not callable (it is a {})",
                obj.get_type().name()?
            )));
        }
        Ok(obj.unbind())
    })();
    result.map_err(|err| format_exception(py, &err))
}

/// The traceback text Python itself would print for `err`.
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let mut text = String::new();
        for line in lines.try_iter()? {
            text.push_str(&line?.extract::<String>()?);
        }
        Ok(text)
    })();
    formatted.unwrap_or_else(|_| format!("{err}\n"))
}

/// Writes to the app's `sys.stderr` (which the gateway reads and tags with the app's name), one
/// prefix per line so that every line of a traceback carries the request id.
pub(crate) fn log_lines(py: Python<'_>, app: &App, prefix: &str, text: &str) {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let _ = writeln!(out, "{prefix}{line}");
    }
    if let Ok(stderr) = app.sys.bind(py).getattr("stderr") {
        if stderr.call_method1("write", (out,)).is_ok() {
            let _ = stderr.call_method0("flush");
        }
    }
}
