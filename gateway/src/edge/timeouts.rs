//! The clock of a client connection between requests: how long it may sit idle waiting for its
//! next request (`keepalive`), and how long it has to send a whole request head (`header_timeout`).
//!
//! hyper's own `header_read_timeout` starts whenever hyper begins waiting for a head: at accept,
//! and again as soon as a response is written. It cannot tell an idle keep-alive connection from
//! one trickling its head, so it is switched off and this wrapper around the socket keeps time:
//!
//! - a new connection has `header_timeout` from accept to its first complete head;
//! - once a response has been written out (hyper flushed it), the connection is idle: it is
//!   closed if the first byte of a next request does not come within `keepalive`;
//! - that first byte starts `header_timeout` for the rest of the head;
//! - while a request is served (from its head to the flush of its response) no clock runs here:
//!   the body has its minimum rate (`forward::read_body`) and the app its timeout.
//!
//! One approximation: bytes of a pipelined next request that hyper read before the previous
//! response was flushed are not seen as its first byte, so the rest of that head gets
//! `keepalive` rather than `header_timeout` (shorter by default, never unbounded).
//!
//! A head cut off by its timeout gets a best-effort `408` before the close; a connection that
//! sent nothing is just closed, as an HTTP/1.1 client expects of an idle keep-alive connection
//! (and as a browser's speculative pre-connect should be).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where a connection is in its request cycle; shared by the socket wrapper (which keeps the
/// clock), the service (which sees each head arrive) and each response body (which sees its end).
#[derive(Debug)]
pub(crate) struct Phase(AtomicU8);

/// Waiting for a request head: the clock runs.
const WAITING: u8 = 0;
/// A request is being served.
const SERVING: u8 = 1;
/// The response body has ended; the connection is idle once hyper has flushed what is left.
const ENDED: u8 = 2;

impl Phase {
    /// A request head has arrived.
    pub(crate) fn serving(&self) {
        self.0.store(SERVING, Ordering::Release);
    }

    /// The response body is done with. hyper serves one request at a time and drops a
    /// response body before it reads the next head, so this cannot end a later request.
    fn ended(&self) {
        self.0.store(ENDED, Ordering::Release);
    }
}

/// The edge timeouts of one connection, read from its app's configuration at accept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) keepalive: Duration,
}

/// What a client that took too long over its head gets before the close.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// A client socket that gives up waiting for a request head when its time is up (see the module
/// docs). Reading while a request is served costs one atomic load more than the bare socket.
pub(crate) struct ClockedIo<T> {
    io: T,
    phase: Arc<Phase>,
    timeouts: Timeouts,
    /// When the current wait for a head ends, while the phase is `WAITING`.
    deadline: Instant,
    /// Bytes of the awaited head have arrived.
    head_started: bool,
    /// The wait began with a response flushed, so `deadline` is the keep-alive one until the
    /// first byte comes.
    idle: bool,
    /// Armed only when a read would block, so a client that keeps up never touches the timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> ClockedIo<T> {
    /// A freshly accepted connection: `header_timeout` from now to its first complete head.
    pub(crate) fn new(io: T, timeouts: Timeouts) -> ClockedIo<T> {
        ClockedIo {
            io,
            phase: Arc::new(Phase(AtomicU8::new(WAITING))),
            timeouts,
            deadline: Instant::now() + timeouts.header,
            head_started: false,
            idle: false,
            timer: None,
        }
    }

    pub(crate) fn phase(&self) -> Arc<Phase> {
        self.phase.clone()
    }

    /// Ready once `deadline` has passed; otherwise wakes the connection's task when it does.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// The wait for a head has run out: tells a client caught mid-head why, then fails the read,
    /// which makes hyper close the connection.
    fn expire(&mut self, cx: &mut Context<'_>) -> io::Error
    where
        T: AsyncWrite + Unpin,
    {
        if self.head_started {
            // Nothing of a response has been written in this phase, so these bytes cannot land
            // inside one. A full socket buffer just means the client goes without.
            let _ = Pin::new(&mut self.io).poll_write(cx, REQUEST_TIMEOUT);
            io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")
        } else if self.idle {
            io::Error::new(io::ErrorKind::TimedOut, "keep-alive connection idle")
        } else {
            io::Error::new(io::ErrorKind::TimedOut, "no request in time")
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClockedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.phase.0.load(Ordering::Acquire) != WAITING {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.head_started && buf.filled().len() > before {
                    this.head_started = true;
                    if this.idle {
                        this.idle = false;
                        this.deadline = Instant::now() + this.timeouts.header;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.expire(cx))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClockedIo<T> {
    crate::edge::delegate::delegate_write!(io, except flush);

    /// hyper flushes after writing out each response; after the last one of a response the
    /// connection is idle, and the keep-alive clock starts.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if flushed.is_ready()
            && this
                .phase
                .0
                .compare_exchange(ENDED, WAITING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            this.head_started = false;
            this.idle = true;
            this.deadline = Instant::now() + this.timeouts.keepalive;
            // hyper may not read again until the client sends something, so the timer must
            // wake the connection by itself; hyper then reads, and the read finds it expired.
            let _ = this.poll_deadline(cx);
        }
        flushed
    }
}

/// A response body that tells the connection's [`Phase`] when it is done with (hyper drops it
/// once it has taken its last frame, whatever the framing).
pub(crate) struct EndsPhase<B> {
    body: B,
    phase: Arc<Phase>,
}

impl<B> EndsPhase<B> {
    pub(crate) fn new(body: B, phase: Arc<Phase>) -> EndsPhase<B> {
        EndsPhase { body, phase }
    }
}

impl<B> Drop for EndsPhase<B> {
    fn drop(&mut self) {
        self.phase.ended();
    }
}

impl<B: Body + Unpin> Body for EndsPhase<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
