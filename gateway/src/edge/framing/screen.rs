//! The screen around a client stream: [`Screened`] runs the scanner on every byte read before
//! hyper sees it, [`Screen`] is what it found, read by the `strict` middleware, and
//! [`RawTarget`] is a target as the client sent it where hyper got it percent-encoded.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::scanner::{Fault, Limits, Scanner};

/// What the scanner found on one connection, shared between its I/O wrapper (which writes it)
/// and the `strict` middleware (which reads it for each request hyper hands over).
#[derive(Debug, Default)]
pub(crate) struct Screen {
    /// Heads scanned to their end without a fault.
    heads: AtomicU64,
    /// The first fault; after it, nothing more on the connection is scanned or served.
    fault: OnceLock<Fault>,
    /// Requests hyper has handed over so far on this connection.
    handed_over: AtomicU64,
    /// The targets hyper got percent-encoded, as sent, by head index; rare, so behind a lock
    /// that only a connection which sent one ever takes.
    raw_targets: std::sync::Mutex<VecDeque<(u64, Bytes)>>,
    raw_targets_kept: AtomicU64,
}

/// The request target as the client sent it, fragment left out, where hyper was given it
/// percent-encoded (see [`ESCAPED`](super::scanner::ESCAPED)). What the app and the access log see.
#[derive(Debug, Clone)]
pub(crate) struct RawTarget(pub(crate) Bytes);

/// The target the app gets: as the client sent it, without a fragment.
pub(crate) fn request_target<'a>(extensions: &'a http::Extensions, uri: &'a http::Uri) -> &'a [u8] {
    match extensions.get::<RawTarget>() {
        Some(RawTarget(raw)) => raw,
        None => uri.path_and_query().map_or(b"/", |p| p.as_str().as_bytes()),
    }
}

impl Screen {
    /// The verdict on the next request hyper hands over (they come in order, one per head),
    /// with its target as sent where hyper got it percent-encoded.
    /// `Err(None)`: hyper parsed a head the scanner has not finished, so the two are out of step.
    pub(crate) fn next_verdict(&self) -> Result<Option<RawTarget>, Option<Fault>> {
        let index = self.handed_over.fetch_add(1, Ordering::Relaxed);
        if index < self.heads.load(Ordering::Acquire) {
            return Ok(self.raw_target(index));
        }
        Err(self.fault.get().copied())
    }

    fn keep_raw_targets(&self, targets: Vec<(u64, Bytes)>) {
        if targets.is_empty() {
            return;
        }
        let mut kept = self.raw_targets.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(targets);
        self.raw_targets_kept
            .store(kept.len() as u64, Ordering::Release);
    }

    fn raw_target(&self, index: u64) -> Option<RawTarget> {
        if self.raw_targets_kept.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut kept = self.raw_targets.lock().unwrap_or_else(|e| e.into_inner());
        // Heads come to hyper in order, so an older entry's request has been handed over.
        while kept.front().is_some_and(|(at, _)| *at < index) {
            kept.pop_front();
        }
        let raw = match kept.front() {
            Some((at, _)) if *at == index => kept.pop_front().map(|(_, raw)| RawTarget(raw)),
            _ => None,
        };
        self.raw_targets_kept
            .store(kept.len() as u64, Ordering::Release);
        raw
    }
}

/// A client stream whose incoming bytes go through a [`Scanner`] on their way to hyper.
pub(crate) struct Screened<T> {
    inner: T,
    scanner: Scanner,
    screen: Arc<Screen>,
    /// Bytes for hyper that did not fit the buffer of the read that made them: the rest of a
    /// read whose target grew by percent-encoding.
    pending: BytesMut,
    /// A body fault was found: once what came before it has been read, reads fail.
    failed: bool,
    /// A fault was found: later bytes are passed on unscanned (the connection is closing).
    done: bool,
}

impl<T> Screened<T> {
    pub(crate) fn new(inner: T, limits: Limits, screen: Arc<Screen>) -> Screened<T> {
        Screened {
            inner,
            scanner: Scanner::new(limits),
            screen,
            pending: BytesMut::new(),
            failed: false,
            done: false,
        }
    }
}

fn body_error(fault: Fault) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, fault.describe())
}

impl<T: AsyncRead + Unpin> AsyncRead for Screened<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if crate::edge::delegate::replay(&mut this.pending, buf) {
            return Poll::Ready(Ok(()));
        }
        if this.failed {
            let fault = this.screen.fault.get().copied().unwrap_or(Fault::ChunkData);
            return Poll::Ready(Err(body_error(fault)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let scanned = this.scanner.scan(&buf.filled()[before..]);
        // Before the heads that carry them are counted, so hyper never sees a head whose raw
        // target is not there yet.
        this.screen
            .keep_raw_targets(this.scanner.take_raw_targets());
        this.screen
            .heads
            .store(this.scanner.heads(), Ordering::Release);
        if let Err(stop) = scanned {
            this.done = true;
            let _ = this.screen.fault.set(stop.fault);
            if stop.in_body {
                // hyper gets the body up to the bad byte and then an error, which fails the
                // request body; a read of nothing would look like the client's EOF instead.
                this.failed = true;
                if stop.at == 0 {
                    return Poll::Ready(Err(body_error(stop.fault)));
                }
                buf.set_filled(before + stop.at);
            }
        }
        if !this.scanner.escapes().is_empty() {
            this.escape(buf, before);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Screened<T> {
    /// Percent-encodes the [`ESCAPED`](super::scanner::ESCAPED) bytes the latest scan found in `buf` after `before`;
    /// what no longer fits waits in `pending` for the next read. Escapes all come before a
    /// body fault's cut, since the scanner stops there.
    fn escape(&mut self, buf: &mut ReadBuf<'_>, before: usize) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let raw = &buf.filled()[before..];
        let escapes = self.scanner.escapes();
        let mut out = Vec::with_capacity(raw.len() + 2 * escapes.len());
        let mut from = 0;
        for &at in escapes {
            let b = raw[at];
            out.extend_from_slice(&raw[from..at]);
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            from = at + 1;
        }
        out.extend_from_slice(&raw[from..]);
        buf.set_filled(before);
        let fit = out.len().min(buf.remaining());
        buf.put_slice(&out[..fit]);
        self.pending.extend_from_slice(&out[fit..]);
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Screened<T> {
    crate::edge::delegate::delegate_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::framing::scanner::tests::LIMITS;

    async fn read_all(mut io: impl AsyncRead + Unpin) -> (Vec<u8>, Option<io::Error>) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) => return (got, Some(err)),
            }
        }
    }

    #[tokio::test]
    async fn a_head_fault_passes_the_bytes_and_tells_the_screen() {
        let screen = Arc::new(Screen::default());
        let input: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\nHost: x\r\n\r\nmore";
        let (got, err) = read_all(Screened::new(input, LIMITS, screen.clone())).await;
        assert_eq!(got, input);
        assert!(err.is_none());
        assert!(matches!(screen.next_verdict(), Ok(None)));
        assert!(matches!(screen.next_verdict(), Err(Some(Fault::BareLf))));
    }

    #[tokio::test]
    async fn a_body_fault_cuts_the_stream_before_the_bad_byte() {
        let screen = Arc::new(Screen::default());
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00b\r\nhello\r\n";
        let (got, err) = read_all(Screened::new(&head[..], LIMITS, screen.clone())).await;
        assert_eq!(got, &head[..head.len() - "\x00b\r\nhello\r\n".len()]);
        assert_eq!(err.expect("an error").kind(), io::ErrorKind::InvalidData);
        // The head itself was fine: the request passes and fails on its body.
        assert!(matches!(screen.next_verdict(), Ok(None)));
        assert!(matches!(
            screen.next_verdict(),
            Err(Some(Fault::ChunkExtension))
        ));
    }

    #[tokio::test]
    async fn escaped_targets_reach_hyper_percent_encoded_and_the_app_as_sent() {
        let screen = Arc::new(Screen::default());
        let input: &[u8] = b"GET /\xc3\xa9<> HTTP/1.1\r\n\r\nGET /plain HTTP/1.1\r\n\r\n\
              POST /\"\"\"\"?`#<\xe9 HTTP/1.1\r\nContent-Length: 3\r\n\r\n<\xe9>";
        // Reads of 7 bytes: the escaped bytes overflow them and wait for the next read.
        let (got, err) = read_all(Screened::new(input, LIMITS, screen.clone())).await;
        assert!(err.is_none());
        assert_eq!(
            got,
            &b"GET /%C3%A9%3C%3E HTTP/1.1\r\n\r\nGET /plain HTTP/1.1\r\n\r\n\
               POST /%22%22%22%22?%60#%3C%E9 HTTP/1.1\r\nContent-Length: 3\r\n\r\n<\xe9>"[..]
        );
        let raw = |verdict: Result<Option<RawTarget>, Option<Fault>>| {
            verdict.map(|raw| raw.map(|RawTarget(bytes)| bytes))
        };
        assert_eq!(
            raw(screen.next_verdict()),
            Ok(Some(Bytes::from_static(b"/\xc3\xa9<>")))
        );
        assert_eq!(raw(screen.next_verdict()), Ok(None));
        assert_eq!(
            raw(screen.next_verdict()),
            Ok(Some(Bytes::from_static(b"/\"\"\"\"?`")))
        );
        assert_eq!(raw(screen.next_verdict()), Err(None));
    }

    #[test]
    fn a_head_the_scanner_has_not_finished_is_refused() {
        let screen = Screen::default();
        assert!(matches!(screen.next_verdict(), Err(None)));
    }
}
