//! What the socket wrappers that only watch or rewrite what is read (`framing::Screened`,
//! `timeouts::ClockedIo`, `connection::Rewind`) share: writes that go straight to the wrapped
//! stream, and bytes already read that are handed out again before it is read further.

use bytes::Buf;
use tokio::io::ReadBuf;

/// Moves what fits of `pending` into `buf`; false (and nothing moved) if `pending` is empty.
pub(crate) fn replay(pending: &mut impl Buf, buf: &mut ReadBuf<'_>) -> bool {
    if !pending.has_remaining() {
        return false;
    }
    let n = pending.chunk().len().min(buf.remaining());
    buf.put_slice(&pending.chunk()[..n]);
    pending.advance(n);
    true
}

/// Implements `AsyncWrite`'s methods by passing each to the field named; with `except flush`,
/// all but `poll_flush`, which the wrapper writes itself.
macro_rules! delegate_write {
    ($field:ident) => {
        $crate::edge::delegate::delegate_write!($field, except flush);

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_flush(cx)
        }
    };
    ($field:ident, except flush) => {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_shutdown(cx)
        }
    };
}

pub(crate) use delegate_write;
