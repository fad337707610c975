//! The worker's life: load the app, bind its socket, say ready, serve with a fixed pool of
//! threads, and stop when the gateway says so (or disappears).
//!
//! Every thread attaches to the interpreter once, for its whole life, and detaches while it
//! waits for a connection or a request and while it writes; so each keeps one Python thread
//! state (thread-locals such as Django's database connections survive between requests) and
//! holds the GIL only while Python runs.
//!
//! The control channel is file descriptor 3, a socket the gateway keeps the other end of: the
//! worker sends `Ready` or `Fatal` on it, the gateway sends `Stop`; end of file means the gateway
//! is gone and the worker exits at once.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyModule};
use sluice_proto::control::{Fatal, Ready, WorkerConfig};
use sluice_proto::shared::Region;
use sluice_proto::{encode_control, Frame, Kind, RequestHead, PREFACE, PREFACE_UNSHARED, VERSION};

use crate::app::{load_callable, App};
use crate::conn::{FrameReader, FrameWriter};
use crate::wsgi::{self, Exchange, FileWrapper};

/// The control channel's descriptor number in the worker (the gateway `dup2`s it there).
const CONTROL_FD: i32 = 3;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Threads still running, so the main thread can wait for them with a deadline.
struct Running {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Running {
    /// Starts the fixed pool of `threads` threads, each attached to the interpreter for its
    /// whole life and serving connections from `listener`.
    fn spawn(app: &Arc<App>, listener: &Arc<UnixListener>, threads: usize) -> PyResult<Arc<Self>> {
        let running = Arc::new(Running {
            count: Mutex::new(threads),
            changed: Condvar::new(),
        });
        for index in 0..threads {
            let (app, listener, running) = (app.clone(), listener.clone(), running.clone());
            std::thread::Builder::new()
                .name(format!("sluice-{index}"))
                .spawn(move || {
                    Python::attach(|py| accept_loop(py, &app, &listener));
                    *running.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    running.changed.notify_all();
                })
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        }
        Ok(running)
    }

    /// Waits, with the interpreter released, until every thread has left or `grace` is over;
    /// `false` if some are still inside requests.
    fn wait(&self, py: Python<'_>, grace: Duration) -> bool {
        py.detach(|| {
            let deadline = Instant::now() + grace;
            let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
            while *count > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                count = self
                    .changed
                    .wait_timeout(count, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            true
        })
    }
}

pub(crate) fn run(py: Python<'_>, config_json: &str) -> PyResult<i32> {
    // SAFETY: the gateway passes the control socket as fd 3 and nothing else in this process
    // owns it; a worker started without one fails the first write below.
    let mut control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let config: WorkerConfig = match serde_json::from_str(config_json) {
        Ok(config) => config,
        Err(err) => {
            return fatal(
                &mut control,
                &format!("bad worker configuration: {err}"),
                "",
            )
        }
    };
    register_timeout_dump(py);
    let callable = match load_callable(py, &config.app, config.chdir.as_deref()) {
        Ok(callable) => callable,
        Err(traceback) => {
            let error = traceback
                .lines()
                .last()
                .unwrap_or("import failed")
                .to_owned();
            return fatal(&mut control, &error, &traceback);
        }
    };
    let listener = match UnixListener::bind(&config.socket) {
        Ok(listener) => Arc::new(listener),
        Err(err) => return fatal(&mut control, &format!("bind {}: {err}", config.socket), ""),
    };
    let app = Arc::new(App {
        name: config.name.clone(),
        callable,
        bytes_io: py.import("io")?.getattr("BytesIO")?.unbind(),
        sys: py.import("sys")?.unbind(),
        file_wrapper: py.get_type::<FileWrapper>().into_any().unbind(),
        multithread: config.threads > 1,
        multiprocess: config.workers > 1,
    });
    let running = Running::spawn(&app, &listener, config.threads)?;
    send_ready(py, &mut control, &app.name)?;

    let Some(graceful) = py.detach(|| wait_for_stop(&mut control)) else {
        // The gateway is gone; nobody is left to answer.
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(0) };
    };
    STOPPING.store(true, Ordering::SeqCst);
    // Wakes every thread blocked in accept(); they see STOPPING and leave.
    // SAFETY: shutdown(2) on a descriptor this listener owns.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    let _ = std::fs::remove_file(&config.socket);
    if !running.wait(py, graceful) {
        flush_stdio(py);
        // Threads still inside requests after the graceful timeout: finalising the interpreter
        // under them could hang, so leave now.
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    Ok(0)
}

/// On SIGUSR1 (sent when a request runs past its timeout, just before SIGKILL) every thread's
/// Python traceback goes to stderr, so the log shows where the request was stuck. A C-level
/// handler: it works while every thread is busy or blocked.
fn register_timeout_dump(py: Python<'_>) {
    if let Err(err) = py.import("faulthandler").and_then(|faulthandler| {
        let sigusr1 = py.import("signal")?.getattr("SIGUSR1")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("all_threads", true)?;
        faulthandler.call_method("register", (sigusr1,), Some(&kwargs))?;
        Ok(())
    }) {
        eprintln!("sluice: cannot register the timeout traceback dump: {err}");
    }
}

/// `Ready`, once the app is imported and the threads listen: with the protocol version, so a
/// gateway of another build refuses this worker naming both.
fn send_ready(py: Python<'_>, control: &mut UnixStream, app: &str) -> PyResult<()> {
    let python: String = py.import("sys")?.getattr("version")?.extract()?;
    let ready = Ready {
        pid: std::process::id(),
        app: app.to_owned(),
        python: python
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        proto: VERSION,
    };
    send_control(control, Kind::Ready, ready.to_json().as_bytes());
    Ok(())
}

fn flush_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

fn fatal(control: &mut UnixStream, error: &str, traceback: &str) -> PyResult<i32> {
    let payload = Fatal {
        error: error.to_owned(),
        traceback: traceback.to_owned(),
        proto: VERSION,
    };
    send_control(control, Kind::Fatal, payload.to_json().as_bytes());
    Ok(1)
}

fn send_control(control: &mut UnixStream, kind: Kind, payload: &[u8]) {
    let mut buf = BytesMut::new();
    encode_control(&mut buf, kind, payload);
    // A worker whose gateway is gone is about to learn it from the read side.
    let _ = control.write_all(&buf);
}

/// Blocks until `Stop` (its grace) or end of file (`None`: the gateway died).
fn wait_for_stop(control: &mut UnixStream) -> Option<Duration> {
    let mut reader = FrameReader::new(control.try_clone().ok()?);
    loop {
        match reader.read_frame() {
            Ok(Some(Frame::Stop(grace_ms))) => return Some(Duration::from_millis(grace_ms.into())),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

fn accept_loop(py: Python<'_>, app: &App, listener: &UnixListener) {
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    loop {
        let accepted = py.detach(|| listener.accept());
        if STOPPING.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        set_send_buffer(&stream);
        // The echo tells the gateway a thread has this connection; without it, a connection
        // still in the backlog of a dying worker would look established (see PROTOCOL.md).
        let shared = py.detach(|| {
            let shared = receive_preface(&stream)?;
            // The other echo tells the gateway to keep everything in frames.
            let echo = if shared.is_some() {
                PREFACE
            } else {
                PREFACE_UNSHARED
            };
            (&stream).write_all(echo)?;
            io::Result::Ok(shared)
        });
        let Ok(shared) = shared else {
            continue;
        };
        let Ok(write_half) = stream.try_clone() else {
            continue;
        };
        let shared = shared.map(Arc::new);
        let exchange = Exchange::new(FrameWriter::new(write_half, shared.clone()));
        let exchange = Arc::new(Mutex::new(exchange));
        let mut reader = FrameReader::new(stream).with_shared(shared.clone());
        loop {
            let head = py.detach(|| read_head(&mut reader));
            let Ok(Some(head)) = head else {
                break;
            };
            let Ok(body) = read_body(py, &mut reader, head.body_len) else {
                break;
            };
            // Sent behind another request: the gateway may have taken it back meanwhile.
            if head.queued != 0 {
                match &shared {
                    Some(shared) if !shared.claim(head.queued) => continue,
                    Some(_) => {}
                    // Only connections that share memory get requests queued behind.
                    None => break,
                }
            }
            let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
            if !wsgi::handle(py, app, &exchange, generation, head, body) {
                break;
            }
        }
        // Dropping the connection here (reader and exchange) is what tells the gateway that a
        // response it has not seen the end of will not come.
        let _ = reader.stream().shutdown(std::net::Shutdown::Both);
    }
}

/// Reads the gateway's preface from a new connection and maps the memory that came with it
/// (a memfd, SCM_RIGHTS on its first byte), where the gateway puts request bodies; `None` if
/// none came.
fn receive_preface(stream: &UnixStream) -> io::Result<Option<Region>> {
    let mut preface = [0u8; PREFACE.len()];
    // Room for a few descriptors' control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: preface.as_mut_ptr().cast(),
        iov_len: preface.len(),
    };
    // SAFETY: a zeroed msghdr is a valid empty one; it points at `iov` and `control`, which
    // outlive the recvmsg(2) call, with their exact sizes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let got = loop {
        // SAFETY: as above. MSG_CMSG_CLOEXEC: a subprocess the app starts must not inherit it.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut region = None;
    // SAFETY: the control messages are walked with the CMSG_* macros within the
    // `msg_controllen` the kernel set; a descriptor is read only from an SCM_RIGHTS message,
    // within its `cmsg_len`. Each descriptor received is new and ours: the first is kept, any
    // more are closed.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    let fd = std::fs::File::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if region.is_none() {
                        region = Some(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    (&*stream).read_exact(&mut preface[got..])?;
    if &preface != PREFACE {
        return Err(io::Error::other("not a sluice preface of this version"));
    }
    // No memory (the gateway could not make it): every body comes through the socket.
    let Some(region) = region else {
        return Ok(None);
    };
    match Region::map(&region) {
        Ok(region) => Ok(Some(region)),
        Err(err) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!("sluice: cannot map the memory shared with the gateway ({err}); large bodies go through the socket");
            });
            Ok(None)
        }
    }
}

/// The kernel buffer a response is written into. At the default (~208 KiB) a 1 MiB response
/// blocked its thread about five times, each a sleep and a wake-up on both sides; with room
/// for all of it, it goes out in one write and the gateway drains it in a few large reads
/// (the bench's 1 MiB scenario in 5 s runs: 2.3k -> 3.1k req/s). The kernel caps the size at
/// `net.core.wmem_max` (and doubles it).
const SEND_BUFFER_BYTES: libc::c_int = 1024 * 1024;

fn set_send_buffer(stream: &UnixStream) {
    let size = SEND_BUFFER_BYTES;
    // SAFETY: setsockopt(2) on a descriptor `stream` owns, reading an int we pass by pointer
    // with its exact size. Best effort: the kernel caps it at net.core.wmem_max.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The next request head; `None` when the gateway closed the connection between requests.
fn read_head(reader: &mut FrameReader) -> io::Result<Option<RequestHead>> {
    match reader.read_frame()? {
        None => Ok(None),
        Some(Frame::RequestHead(head)) => Ok(Some(head)),
        Some(other) => Err(io::Error::other(format!(
            "expected a request head, got {other:?}"
        ))),
    }
}

/// Exactly the `len` body bytes the head announced, read from the socket straight into the
/// `bytes` object that becomes `wsgi.input`, with the interpreter released while they arrive.
fn read_body<'py>(
    py: Python<'py>,
    reader: &mut FrameReader,
    len: u64,
) -> io::Result<Bound<'py, PyBytes>> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut read = Ok(());
    // Nothing else can see the object while it is being filled, so filling it with the
    // interpreter released is safe.
    let body = PyBytes::new_with(py, len, |dst| {
        read = py.detach(|| reader.read_body_into(dst));
        Ok(())
    })
    .map_err(|err| io::Error::other(err.to_string()))?;
    read.map(|()| body)
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<FileWrapper>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory as the gateway makes it, cut to `len` bytes if given.
    fn memfd(len: Option<u64>) -> std::fs::File {
        let (file, _gateway) = Region::create().unwrap();
        if let Some(len) = len {
            file.set_len(len).unwrap();
        }
        file
    }

    /// What the gateway sends: the preface, with `fd` attached to its first byte.
    fn send_preface(stream: &UnixStream, preface: &[u8], fd: Option<&std::fs::File>) {
        let mut pass = fd.map(|fd| sluice_proto::pass_fd::PassFd::new(fd.as_raw_fd()));
        let mut iov = libc::iovec {
            iov_base: preface.as_ptr() as *mut libc::c_void,
            iov_len: preface.len(),
        };
        let msg = sluice_proto::pass_fd::msghdr(&mut iov, pass.as_mut());
        // SAFETY: `msg` points at `iov` and `pass`, live for the call.
        let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, 0) };
        assert_eq!(sent, preface.len() as isize);
    }

    #[test]
    fn the_preface_brings_the_shared_memory_when_it_can_be_mapped() {
        for (fd, mapped) in [
            (Some(memfd(None)), true),
            // Smaller than the layout: a gateway of another build, or a broken one.
            (Some(memfd(Some(4096))), false),
            (None, false),
        ] {
            let (gateway, worker) = UnixStream::pair().unwrap();
            send_preface(&gateway, PREFACE, fd.as_ref());
            let region = receive_preface(&worker).unwrap();
            assert_eq!(region.is_some(), mapped);
        }
        let (gateway, worker) = UnixStream::pair().unwrap();
        send_preface(&gateway, b"SLUICE\x00\x01", Some(&memfd(None)));
        assert!(receive_preface(&worker).is_err());
    }
}
