//! Each app's connections to its workers: a registry of live workers and a deadpool of Unix
//! socket connections to them.
//!
//! The pool is the queue. It holds at most workers × threads connections and every worker serves
//! one connection per thread, so a connection handed out is a Python thread that is free now;
//! waiting for one is waiting for a thread. New connections go to the live worker with the
//! fewest, never past its thread count, so load spreads across processes by itself. (When none
//! is free, a short request may instead queue behind one in flight: see `relay`.)

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sluice_proto::pass_fd::{self, PassFd};
use sluice_proto::{PREFACE, PREFACE_UNSHARED};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::Notify;

pub(crate) mod large_bodies;
pub(crate) mod relay;
pub(crate) mod shared;

use relay::Relays;
use shared::Region;

/// How a worker is to be ended by its reaper (the only task that may signal or reap it, so a
/// signal can never reach a recycled pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// A request ran past its timeout: SIGUSR1 first (faulthandler writes every thread's Python
    /// traceback to the log, showing where it was stuck), SIGKILL after a short grace.
    DumpThenKill,
    /// It would not stop: SIGKILL now.
    Now,
}

/// A worker process as the pool sees it.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) pid: u32,
    pub(crate) socket: PathBuf,
    pub(crate) threads: usize,
    pub(crate) started: std::time::Instant,
    /// In rotation: set once it is ready, cleared when it is retired or gone.
    pub(crate) alive: AtomicBool,
    conns: AtomicUsize,
    served: AtomicU64,
    /// Requests after which it is replaced (max_requests plus its jitter), if any.
    retire_after: Option<u64>,
    /// Signalled when `retire_after` is reached.
    pub(crate) retire: Notify,
    kill: tokio::sync::mpsc::UnboundedSender<Kill>,
    /// Killed because a request ran past its timeout (for the restart reason).
    timed_out: AtomicBool,
}

impl Worker {
    pub(crate) fn new(
        pid: u32,
        socket: PathBuf,
        threads: usize,
        retire_after: Option<u64>,
        kill: tokio::sync::mpsc::UnboundedSender<Kill>,
    ) -> Worker {
        Worker {
            pid,
            socket,
            threads,
            started: std::time::Instant::now(),
            alive: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            retire_after,
            retire: Notify::new(),
            kill,
            timed_out: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn retire_after(&self) -> Option<u64> {
        self.retire_after
    }

    /// Counts a request handed to this worker; the one that reaches `retire_after` asks the
    /// supervisor for a replacement.
    pub(crate) fn note_request(&self) {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if Some(served) == self.retire_after {
            self.retire.notify_one();
        }
    }

    /// Takes it out of rotation and has its reaper end it; the supervisor replaces it.
    pub(crate) fn kill(&self, how: Kill) {
        if how == Kill::DumpThenKill {
            self.timed_out.store(true, Ordering::Relaxed);
        }
        self.alive.store(false, Ordering::Release);
        let _ = self.kill.send(how);
    }
}

/// The live workers of one app.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
    /// Signalled when a worker joins or a connection slot frees up.
    changed: Notify,
    /// Requests in flight that another may queue behind (see `relay`).
    pub(crate) relays: Relays,
}

impl Workers {
    /// Puts a ready worker in rotation.
    pub(crate) fn add(&self, worker: Arc<Worker>) {
        worker.alive.store(true, Ordering::Release);
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(worker);
        self.changed.notify_waiters();
    }

    /// Takes a worker out of rotation: no new connections go to it, and its pooled ones are
    /// closed as they come back (see `forward::release`) or come up for reuse.
    pub(crate) fn remove(&self, pid: u32) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = list.iter().position(|w| w.pid == pid) {
            list.remove(at).alive.store(false, Ordering::Release);
        }
    }

    /// Workers in rotation now.
    pub(crate) fn alive_count(&self) -> usize {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().filter(|w| w.is_alive()).count()
    }

    /// Reserves a connection slot on the least loaded worker that has one.
    fn reserve(&self) -> Option<Arc<Worker>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let worker = list
            .iter()
            .filter(|w| w.is_alive() && w.conns.load(Ordering::Relaxed) < w.threads)
            .min_by_key(|w| w.conns.load(Ordering::Relaxed))?;
        worker.conns.fetch_add(1, Ordering::Relaxed);
        Some(worker.clone())
    }

    fn release(&self, worker: &Worker) {
        worker.conns.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// One connection to one Python thread of one worker.
pub(crate) struct WorkerConn {
    /// Shared with the relay behind the request in flight, which writes the request queued
    /// behind it (see `relay`).
    pub(crate) stream: Arc<UnixStream>,
    /// Memory this connection shares with its worker thread, for request bodies and response
    /// chunks (see [`connect`]); none if it could not be made.
    pub(crate) shared: Option<Arc<Region>>,
    pub(crate) read_buf: BytesMut,
    pub(crate) write_buf: BytesMut,
    pub(crate) worker: Arc<Worker>,
    /// Not known to be in step with the worker: set while an exchange is under way (see
    /// `forward::write_request`) and kept after an error mid-exchange. Never reused while set.
    pub(crate) broken: bool,
    pub(crate) workers: Arc<Workers>,
}

impl Drop for WorkerConn {
    fn drop(&mut self) {
        self.workers.release(&self.worker);
    }
}

pub(crate) struct Manager {
    pub(crate) workers: Arc<Workers>,
}

impl managed::Manager for Manager {
    type Type = WorkerConn;
    /// Creating never fails: it waits (bounded by the caller's queue timeout) for a worker.
    type Error = std::convert::Infallible;

    /// Waits until some worker has a free thread; the caller bounds the wait (queue timeout).
    async fn create(&self) -> Result<WorkerConn, Self::Error> {
        loop {
            let changed = self.workers.changed.notified();
            tokio::pin!(changed);
            // Register interest before looking, so a change between the look and the wait is not lost.
            changed.as_mut().enable();
            if let Some(worker) = self.workers.reserve() {
                let pid = worker.pid;
                let guard = ReleaseOnDrop {
                    workers: &self.workers,
                    worker: Some(worker),
                };
                match connect(&guard.worker.as_ref().expect("set").socket).await {
                    Ok((stream, shared)) => {
                        let worker = guard.disarm();
                        return Ok(WorkerConn {
                            stream: Arc::new(stream),
                            shared,
                            read_buf: BytesMut::with_capacity(64 * 1024),
                            write_buf: BytesMut::with_capacity(16 * 1024),
                            worker,
                            broken: false,
                            workers: self.workers.clone(),
                        });
                    }
                    // A ready worker's socket refuses only once the process is gone (the
                    // supervisor has not reaped it yet): take it out of rotation and wait for
                    // another worker or the replacement instead of failing the request.
                    Err(source) => {
                        let worker = guard.worker.as_ref().expect("set");
                        worker.alive.store(false, Ordering::Release);
                        tracing::debug!(pid, %source, "worker gone while connecting");
                        continue;
                    }
                }
            }
            changed.await;
        }
    }

    async fn recycle(&self, conn: &mut WorkerConn, _: &Metrics) -> RecycleResult<Self::Error> {
        if conn.broken || !conn.worker.is_alive() {
            return Err(RecycleError::message("worker connection retired"));
        }
        Ok(())
    }
}

/// Gives a reserved slot back unless the connection that uses it was made.
struct ReleaseOnDrop<'a> {
    workers: &'a Workers,
    worker: Option<Arc<Worker>>,
}

impl ReleaseOnDrop<'_> {
    fn disarm(mut self) -> Arc<Worker> {
        self.worker.take().expect("set")
    }
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.workers.release(&worker);
        }
    }
}

/// Connects and exchanges prefaces. Only the worker's echo proves a Python thread took the
/// connection: connect() alone also succeeds into the backlog of a worker that is dying (the
/// kernel closes a killed process's sockets one by one), and a request sent there would be lost.
///
/// The preface carries (SCM_RIGHTS) the memfd of the memory this connection shares with the
/// worker thread (see `shared`).
async fn connect(socket: &std::path::Path) -> std::io::Result<(UnixStream, Option<Arc<Region>>)> {
    let mut stream = UnixStream::connect(socket).await?;
    // Without it (no memfd in this kernel or sandbox, out of descriptors or address space)
    // bodies go through the socket: slower, never wrong.
    let (region, shared) = match Region::create() {
        Ok((file, region)) => (Some(file), Some(region)),
        Err(err) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!("cannot make memory to share with workers ({err}); large bodies go through their sockets");
            });
            (None, None)
        }
    };
    send_with_fd(&stream, PREFACE, region.as_ref().map(AsRawFd::as_raw_fd)).await?;
    drop(region);
    let mut echo = [0u8; PREFACE.len()];
    stream.read_exact(&mut echo).await?;
    match &echo {
        echo if echo == PREFACE => Ok((stream, shared)),
        // The worker could not map it.
        echo if echo == PREFACE_UNSHARED => Ok((stream, None)),
        _ => Err(std::io::Error::other(
            "worker answered with a different protocol version",
        )),
    }
}

/// Writes all of `data`, with `fd` (if any) attached (SCM_RIGHTS) to its first byte.
async fn send_with_fd(stream: &UnixStream, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        stream.writable().await?;
        let attach = fd.filter(|_| sent == 0);
        let result = stream.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg_with_fd(stream.as_raw_fd(), &data[sent..], attach)
        });
        match result {
            Ok(n) => sent += n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// One sendmsg(2) of `data` on `socket`, with `fd` (if any) attached to its first byte. Returns
/// the bytes sent; a short send has delivered the descriptor all the same.
fn sendmsg_with_fd(socket: RawFd, data: &[u8], fd: Option<RawFd>) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut pass = fd.map(PassFd::new);
    let msg = pass_fd::msghdr(&mut iov, pass.as_mut());
    // SAFETY: `msg` points at `iov` and `pass`, which outlive the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

pub(crate) type Pool = managed::Pool<Manager>;

pub(crate) fn build(workers: Arc<Workers>, size: usize) -> Pool {
    managed::Pool::builder(Manager { workers })
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and no timeouts always builds")
}

/// Closes the idle connections to workers out of rotation at once, so their threads are free to
/// finish and the worker can exit, rather than when the pool next happens to reuse them.
pub(crate) fn prune(pool: &Pool) {
    drop(pool.retain(|conn, _| !conn.broken && conn.worker.is_alive()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A stand-in for a worker thread at `socket`: reads the preface (a plain read, which drops
    /// the memfd that came with it) and answers `echo`.
    fn worker_answering(echo: &'static [u8; 8]) -> (PathBuf, std::thread::JoinHandle<()>) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = std::env::temp_dir().join(format!(
            "sluice-pool-test-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut preface = [0u8; 8];
            conn.read_exact(&mut preface).unwrap();
            assert_eq!(&preface, PREFACE);
            conn.write_all(echo).unwrap();
        });
        (socket, thread)
    }

    #[tokio::test]
    async fn the_echo_says_whether_the_worker_shares_memory() {
        for (echo, shared) in [(PREFACE, true), (PREFACE_UNSHARED, false)] {
            let (socket, worker) = worker_answering(echo);
            let (_stream, region) = connect(&socket).await.unwrap();
            assert_eq!(region.is_some(), shared, "echo {echo:?}");
            worker.join().unwrap();
            std::fs::remove_file(socket).unwrap();
        }
        let (socket, worker) = worker_answering(b"SLUICE\x00\x01");
        assert!(connect(&socket).await.is_err());
        worker.join().unwrap();
        std::fs::remove_file(socket).unwrap();
    }
}
