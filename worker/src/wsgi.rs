//! Calling the app: `start_response`, `write()`, `wsgi.file_wrapper`, and streaming the result.
//!
//! One [`Exchange`] per connection carries the response state of the request in flight. The
//! Python objects handed to the app (`start_response`, `write`) hold it with the request's
//! turn number, so a callable kept past its request cannot touch the next one.
//! Socket writes happen with the interpreter detached.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sluice_proto::{encode_end, encode_error, encode_response_head, AppErrorKind, RequestHead};

use crate::app::{format_exception, log_lines, App};
use crate::conn::FrameWriter;
use crate::environ;

/// How much a `wsgi.file_wrapper` over a real file reads per `pread`, with the interpreter detached.
const FILE_READ_BYTES: usize = 256 * 1024;

/// Hop-by-hop headers are the gateway's business (RFC 9110 §7.6.1); an app's are dropped.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// A validated response head from `start_response`, encoded and waiting for the first body bytes.
struct Head {
    frame: BytesMut,
    content_length: Option<u64>,
}

pub(crate) struct Exchange {
    out: FrameWriter,
    turn: u64,
    head: Option<Head>,
    head_sent: bool,
    head_only: bool,
    content_length: Option<u64>,
    sent: u64,
    gone: bool,
}

#[derive(Debug)]
enum SendError {
    /// The gateway closed the connection: the client left, or the gateway gave up.
    Gone,
    /// Body bytes before `start_response`.
    NoStartResponse,
    /// A `start_response` or `write` from a request that has finished.
    Stale,
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    More,
    /// Exactly the declared Content-Length has gone out.
    Full,
    /// The app gave more than its Content-Length; the excess was dropped.
    Truncated,
}

/// When the bytes of one `send` leave the write buffer for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// At once: the app may take its time before it sends more (`write()`).
    Now,
    /// At once, unless they complete the declared Content-Length: then the caller stops
    /// iterating and `finish` writes them together with the end frame.
    WhileIncomplete,
    /// With the next flush: more is coming without a wait (a list, a file being read).
    Later,
}

/// How a response ended, for the one place that logs it.
#[derive(Debug, PartialEq, Eq)]
enum Finished {
    Complete,
    Short { declared: u64, sent: u64 },
}

fn lock(exchange: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    exchange
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Exchange {
    pub(crate) fn new(out: FrameWriter) -> Exchange {
        Exchange {
            out,
            turn: 0,
            head: None,
            head_sent: false,
            head_only: false,
            content_length: None,
            sent: 0,
            gone: false,
        }
    }

    fn begin(&mut self, turn: u64, head_only: bool) {
        self.turn = turn;
        self.head = None;
        self.head_sent = false;
        self.head_only = head_only;
        self.content_length = None;
        self.sent = 0;
    }

    fn check(&self, turn: u64) -> Result<(), SendError> {
        if self.turn != turn {
            return Err(SendError::Stale);
        }
        if self.gone {
            return Err(SendError::Gone);
        }
        Ok(())
    }

    fn io<T>(&mut self, result: std::io::Result<T>) -> Result<T, SendError> {
        result.map_err(|_| {
            self.gone = true;
            self.out.discard();
            SendError::Gone
        })
    }

    fn send_head(&mut self) -> Result<(), SendError> {
        if !self.head_sent {
            let head = self.head.as_ref().ok_or(SendError::NoStartResponse)?;
            self.out.buf().extend_from_slice(&head.frame);
            self.content_length = head.content_length;
            self.head_sent = true;
        }
        Ok(())
    }

    fn send(&mut self, turn: u64, data: &[u8], flush: Flush) -> Result<Sent, SendError> {
        self.check(turn)?;
        self.send_head()?;
        let mut sent = Sent::More;
        let mut data = data;
        if let Some(declared) = self.content_length {
            let room = (declared - self.sent) as usize;
            if data.len() >= room {
                sent = if data.len() > room {
                    Sent::Truncated
                } else {
                    Sent::Full
                };
                data = &data[..room];
            }
        }
        if !self.head_only {
            let result = self.out.body(data);
            self.io(result)?;
        }
        self.sent += data.len() as u64;
        if flush == Flush::Now || (flush == Flush::WhileIncomplete && sent == Sent::More) {
            let result = self.out.flush();
            self.io(result)?;
        }
        Ok(sent)
    }

    fn finish(&mut self, turn: u64) -> Result<Finished, SendError> {
        self.check(turn)?;
        self.send_head()?;
        let finished = match self.content_length {
            Some(declared) if !self.head_only && self.sent < declared => {
                let message = format!("body ended at {} of {declared} declared bytes", self.sent);
                encode_error(self.out.buf(), AppErrorKind::ShortBody, message.as_bytes());
                Finished::Short {
                    declared,
                    sent: self.sent,
                }
            }
            _ => {
                encode_end(self.out.buf());
                Finished::Complete
            }
        };
        let result = self.out.flush();
        self.io(result)?;
        Ok(finished)
    }

    /// Ends the request with an error frame: a 500 before the head, a cut-off response after.
    fn fail(&mut self, kind: AppErrorKind, message: &str) -> Result<(), SendError> {
        if self.gone {
            return Err(SendError::Gone);
        }
        encode_error(self.out.buf(), kind, message.as_bytes());
        let result = self.out.flush();
        self.io(result)
    }
}

/// A Python str as latin-1 bytes, which is what WSGI status and header strings must be.
fn latin1_bytes(text: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let text = text
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str")))?
        .to_cow()?;
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| PyValueError::new_err(format!("{what} is not latin-1: {text:?}")))
}

fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Field values may hold visible characters, spaces and tabs; CR, LF, NUL and other controls
/// would let an app (or the data it echoes) split or smuggle a response.
fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn encode_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = latin1_bytes(status, "status")?;
    let code = status
        .get(..3)
        .filter(|digits| digits.iter().all(u8::is_ascii_digit))
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u16>().ok())
        .filter(|code| (100..=999).contains(code))
        .filter(|_| status.len() == 3 || status[3] == b' ')
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "status must be 'NNN Reason', got {:?}",
                String::from_utf8_lossy(&status)
            ))
        })?;
    let reason = status.get(4..).unwrap_or_default();
    if !is_field_value(reason) {
        return Err(PyValueError::new_err("status holds a control character"));
    }

    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut content_length = None;
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| PyTypeError::new_err("headers must be (name, value) tuples"))?;
        let name = latin1_bytes(&pair.get_item(0)?, "header name")?;
        let value = latin1_bytes(&pair.get_item(1)?, "header value")?;
        if !is_token(&name) {
            return Err(PyValueError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if !is_field_value(&value) {
            return Err(PyValueError::new_err(format!(
                "header {:?} has a control character (CR, LF, NUL...) in its value",
                String::from_utf8_lossy(&name)
            )));
        }
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&&lower[..]) {
            continue;
        }
        if lower == b"content-length" {
            let parsed = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| PyValueError::new_err("Content-Length is not a number"))?;
            content_length = Some(parsed);
        }
        pairs.push((name, value));
    }
    let mut frame = BytesMut::with_capacity(
        64 + pairs
            .iter()
            .map(|(n, v)| n.len() + v.len() + 6)
            .sum::<usize>(),
    );
    encode_response_head(
        &mut frame,
        code,
        reason,
        pairs.iter().map(|(n, v)| (&n[..], &v[..])),
    )
    .map_err(|err| PyValueError::new_err(format!("response headers cannot be sent: {err}")))?;
    Ok(Head {
        frame,
        content_length,
    })
}

fn send_error_to_py(err: SendError) -> PyErr {
    match err {
        SendError::Gone => PyOSError::new_err("client disconnected"),
        SendError::NoStartResponse => PyRuntimeError::new_err("write() before start_response()"),
        SendError::Stale => PyRuntimeError::new_err("this request has already finished"),
    }
}

/// The `start_response` callable given to the app.
#[pyclass(frozen)]
pub(crate) struct StartResponse {
    exchange: Arc<Mutex<Exchange>>,
    turn: u64,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let ex = lock(&self.exchange);
            ex.check(self.turn).map_err(send_error_to_py)?;
            match exc_info {
                // PEP 3333: once headers are out, the app's error must propagate.
                Some(exc_info) if ex.head_sent => {
                    drop(ex);
                    let value = exc_info.get_item(1)?;
                    let value = value
                        .call_method1(intern!(py, "with_traceback"), (exc_info.get_item(2)?,))?;
                    return Err(PyErr::from_value(value));
                }
                None if ex.head.is_some() => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                _ => {}
            }
        }
        // Validation may run app code (a custom header iterable), so the lock is not held here.
        let head = encode_head(status, headers)?;
        let mut ex = lock(&self.exchange);
        ex.check(self.turn).map_err(send_error_to_py)?;
        ex.head = Some(head);
        Ok(Write {
            exchange: self.exchange.clone(),
            turn: self.turn,
        })
    }
}

/// The legacy `write()` callable `start_response` returns: unbuffered, as PEP 3333 asks.
#[pyclass(frozen)]
pub(crate) struct Write {
    exchange: Arc<Mutex<Exchange>>,
    turn: u64,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        send_chunk(py, &self.exchange, self.turn, data, Flush::Now)
            .map(|_| ())
            .map_err(send_error_to_py)
    }
}

/// `wsgi.file_wrapper`: iterates a file-like object in blocks; sluice streams a real file from
/// its descriptor with the interpreter detached instead of iterating it.
#[pyclass(frozen)]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(intern!(py, "read"), (self.blksize,))?;
        Ok(if data.len()? == 0 { None } else { Some(data) })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr(intern!(py, "close"))? {
            filelike.call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }
}

fn send_chunk(
    py: Python<'_>,
    exchange: &Mutex<Exchange>,
    turn: u64,
    chunk: &Bound<'_, PyBytes>,
    flush: Flush,
) -> Result<Sent, SendError> {
    // Bytes objects are immutable and `chunk` keeps this one alive, so its buffer may be read
    // with the interpreter detached (pyo3 documents the same for `Py<PyBytes>::as_bytes`).
    let data = chunk.as_bytes();
    py.detach(|| lock(exchange).send(turn, data, flush))
}

/// Serves one request on this thread's connection. Returns whether the connection is still in
/// step with the gateway (false: drop it).
pub(crate) fn handle(
    py: Python<'_>,
    app: &App,
    exchange: &Arc<Mutex<Exchange>>,
    turn: u64,
    head: RequestHead,
    body: Bound<'_, PyBytes>,
) -> bool {
    let head_only = &head.method[..] == b"HEAD";
    lock(exchange).begin(turn, head_only);
    let environ = environ::build(py, app, &head, body);
    let called = environ.and_then(|environ| {
        let start_response = Bound::new(
            py,
            StartResponse {
                exchange: exchange.clone(),
                turn,
            },
        )?;
        app.callable.bind(py).call1((environ, start_response))
    });
    let result = match called {
        Ok(result) => result,
        Err(err) => {
            let kind = AppErrorKind::Raised;
            return reject(py, app, exchange, &head, &err, kind, "the app raised");
        }
    };
    let keep = stream_result(py, app, exchange, turn, &head, &result);
    // PEP 3333: close() is called on every path, errors and disconnects included.
    match result.hasattr(intern!(py, "close")) {
        Ok(true) => {
            if let Err(err) = result.call_method0(intern!(py, "close")) {
                report(py, app, &head, &err);
            }
        }
        Ok(false) => {}
        Err(err) => report(py, app, &head, &err),
    }
    keep
}

fn stream_result(
    py: Python<'_>,
    app: &App,
    exchange: &Mutex<Exchange>,
    turn: u64,
    head: &RequestHead,
    result: &Bound<'_, PyAny>,
) -> bool {
    let head_only = &head.method[..] == b"HEAD";
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if !head_only {
            if let Some(keep) = send_file(py, app, exchange, turn, head, wrapper.get()) {
                return keep;
            }
        }
    }
    let flush = flush_for(result);
    let iter = match result.try_iter() {
        Ok(iter) => iter,
        Err(err) => {
            return reject(
                py,
                app,
                exchange,
                head,
                &err,
                AppErrorKind::BadResponse,
                "result is not iterable",
            );
        }
    };
    for item in iter {
        let chunk = match chunk_of(py, app, exchange, head, item) {
            Ok(chunk) => chunk,
            Err(keep) => return keep,
        };
        if chunk.as_bytes().is_empty() {
            continue;
        }
        match send_chunk(py, exchange, turn, &chunk, flush) {
            Ok(Sent::More) if head_only => break,
            Ok(Sent::More) => {}
            // PEP 3333: the server "should stop iterating over the response when enough data
            // has been sent". The app's `close()` still runs, below.
            Ok(Sent::Full) => break,
            Ok(Sent::Truncated) => {
                warn(
                    py,
                    app,
                    head,
                    "the app sent more than its Content-Length; the rest was dropped",
                );
                break;
            }
            Err(SendError::NoStartResponse) => {
                let message = "the app yielded body bytes before calling start_response()";
                return refuse(py, app, exchange, head, AppErrorKind::BadResponse, message);
            }
            Err(SendError::Gone | SendError::Stale) => return false,
        }
    }
    finish(py, app, exchange, turn, head)
}

/// How the chunks of a result leave. A list or tuple is complete already: send it in one write.
/// Anything else may be a generator producing chunks over time, and each one goes out as soon
/// as it exists, but for the one that completes the Content-Length: iteration stops there (see
/// [`stream_result`]), so it goes out with the end.
fn flush_for(result: &Bound<'_, PyAny>) -> Flush {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        Flush::Later
    } else {
        Flush::WhileIncomplete
    }
}

/// One item of the result, as the bytes it must be; `Err` if it is not bytes or the iteration
/// raised, once the request has been ended with an error frame, with whether the connection
/// is still in step.
fn chunk_of<'py>(
    py: Python<'py>,
    app: &App,
    exchange: &Mutex<Exchange>,
    head: &RequestHead,
    item: PyResult<Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyBytes>, bool> {
    let item = item.map_err(|err| {
        let message = "the app raised while iterating";
        reject(py, app, exchange, head, &err, AppErrorKind::Raised, message)
    })?;
    item.cast_into::<PyBytes>().map_err(|err| {
        let kind = err
            .into_inner()
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let message = format!("the app yielded {kind} instead of bytes");
        refuse(py, app, exchange, head, AppErrorKind::BadResponse, &message)
    })
}

/// `wsgi.file_wrapper` over an object with a real descriptor: `pread` from its current position
/// with the interpreter detached. `None` means "not a real file": iterate it instead.
fn send_file(
    py: Python<'_>,
    app: &App,
    exchange: &Mutex<Exchange>,
    turn: u64,
    head: &RequestHead,
    wrapper: &FileWrapper,
) -> Option<bool> {
    let file = wrapper.filelike.bind(py);
    let fd: i32 = file
        .call_method0(intern!(py, "fileno"))
        .ok()?
        .extract()
        .ok()?;
    // tell(), not the descriptor's offset: a buffered file object may have read ahead.
    let start: i64 = file
        .call_method0(intern!(py, "tell"))
        .ok()?
        .extract()
        .ok()?;
    let outcome = py.detach(|| {
        let mut buf = vec![0u8; FILE_READ_BYTES];
        let mut offset = start;
        loop {
            // SAFETY: `buf` is a live, writable allocation of `buf.len()` bytes.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Some(err));
            }
            if n == 0 {
                return Ok(());
            }
            offset += n as i64;
            match lock(exchange).send(turn, &buf[..n as usize], Flush::Later) {
                Ok(Sent::More) => {}
                Ok(Sent::Full | Sent::Truncated) => return Ok(()),
                Err(_) => return Err(None),
            }
        }
    });
    match outcome {
        Ok(()) => Some(finish(py, app, exchange, turn, head)),
        Err(Some(err)) => {
            let message = format!("reading the file failed: {err}");
            Some(refuse(
                py,
                app,
                exchange,
                head,
                AppErrorKind::Raised,
                &message,
            ))
        }
        Err(None) => Some(false),
    }
}

fn finish(
    py: Python<'_>,
    app: &App,
    exchange: &Mutex<Exchange>,
    turn: u64,
    head: &RequestHead,
) -> bool {
    match py.detach(|| lock(exchange).finish(turn)) {
        Ok(Finished::Complete) => true,
        Ok(Finished::Short { declared, sent }) => {
            let message =
                format!("the app declared Content-Length {declared} but sent {sent} bytes");
            warn(py, app, head, &message);
            true
        }
        Err(SendError::NoStartResponse) => {
            let message = "the app returned without calling start_response()";
            refuse(py, app, exchange, head, AppErrorKind::BadResponse, message)
        }
        Err(SendError::Gone | SendError::Stale) => false,
    }
}

/// The app raised: log its traceback with the request id, then end the request with an error
/// frame (a 500 before the head, a cut-off response after).
fn reject(
    py: Python<'_>,
    app: &App,
    exchange: &Mutex<Exchange>,
    head: &RequestHead,
    err: &PyErr,
    kind: AppErrorKind,
    message: &str,
) -> bool {
    report(py, app, head, err);
    fail(py, exchange, kind, message)
}

/// The app broke WSGI without raising: log why, then end the request with an error frame.
fn refuse(
    py: Python<'_>,
    app: &App,
    exchange: &Mutex<Exchange>,
    head: &RequestHead,
    kind: AppErrorKind,
    message: &str,
) -> bool {
    warn(py, app, head, message);
    fail(py, exchange, kind, message)
}

fn fail(py: Python<'_>, exchange: &Mutex<Exchange>, kind: AppErrorKind, message: &str) -> bool {
    py.detach(|| lock(exchange).fail(kind, message)).is_ok()
}

fn request_prefix(head: &RequestHead) -> String {
    format!("request_id={} ", String::from_utf8_lossy(&head.request_id))
}

fn report(py: Python<'_>, app: &App, head: &RequestHead, err: &PyErr) {
    let text = format!(
        "Error handling request {} {}\n{}",
        String::from_utf8_lossy(&head.method),
        String::from_utf8_lossy(&head.target),
        format_exception(py, err)
    );
    log_lines(py, app, &request_prefix(head), &text);
}

fn warn(py: Python<'_>, app: &App, head: &RequestHead, message: &str) {
    let text = format!(
        "{message} ({} {})",
        String::from_utf8_lossy(&head.method),
        String::from_utf8_lossy(&head.target)
    );
    log_lines(py, app, &request_prefix(head), &text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(is_token(b"X-Custom_1"));
        assert!(!is_token(b"Bad Name"));
        assert!(!is_token(b""));
        assert!(is_field_value(b"text/html; charset=\xe9\t"));
        assert!(!is_field_value(b"a\r\nSet-Cookie: x"));
        assert!(!is_field_value(b"a\0"));
    }
}
