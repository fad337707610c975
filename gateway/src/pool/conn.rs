//! Connections to worker threads: one per Python thread, made by the pool's [`Manager`] on the
//! least loaded worker, and the preface that hands each its shared memory.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sluice_proto::pass_fd::{self, PassFd};
use sluice_proto::{PREFACE, PREFACE_UNSHARED};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::shared::Region;
use super::workers::{Worker, Workers};

/// One connection to one Python thread of one worker.
pub(crate) struct WorkerConn {
    /// Shared with the place behind the request in flight, where the request queued behind it
    /// is written (see `lease`).
    pub(crate) stream: Arc<UnixStream>,
    /// Memory this connection shares with its worker thread, for request bodies and response
    /// chunks (see [`connect`]); none if it could not be made.
    pub(crate) shared: Option<Arc<Region>>,
    pub(crate) read_buf: BytesMut,
    pub(crate) write_buf: BytesMut,
    pub(crate) worker: Arc<Worker>,
    /// Known to be in step with the worker, so the pool may lend it again: cleared when an
    /// exchange begins, set again only when its answer has been read to the end.
    pub(crate) reusable: bool,
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
                            reusable: true,
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
        if !conn.reusable || !conn.worker.is_alive() {
            return Err(RecycleError::message("worker connection retired"));
        }
        Ok(())
    }
}

/// Gives a reserved thread back unless the connection that uses it was made.
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
    drop(pool.retain(|conn, _| conn.reusable && conn.worker.is_alive()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

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
