//! Large response body frames, read into buffers that are used again.
//!
//! A body frame of at least [`POOLED_MIN_BYTES`] is read from the worker straight into a buffer
//! from a small free list, and handed to hyper as `Bytes` that put the buffer back on the list
//! when hyper has written it. Before, each such frame was read into a fresh allocation: the
//! kernel zeroed and faulted in every page of every large response (12–16% of the gateway's
//! CPU on 1 MiB responses, in `perf`). A buffer that is used again stays mapped.
//!
//! Each read takes the rest of the payload and at most the next frame's header, so when the
//! next frame is large too its payload is read in place as well, never copied out of the
//! connection's read buffer.

use std::io::{self, IoSliceMut};
use std::sync::Mutex;

use bytes::{Buf, Bytes, BytesMut};
use sluice_proto::{declared_len, Kind, FRAME_HEADER_BYTES, MAX_CHUNK_BYTES};
use tokio::net::UnixStream;

/// Body frames at least this long are read into pooled buffers; shorter ones are decoded from
/// the connection's read buffer like every other frame.
pub(crate) const POOLED_MIN_BYTES: usize = 32 * 1024;
/// The size of a pooled buffer: the largest body frame a worker writes.
const POOLED_BYTES: usize = MAX_CHUNK_BYTES;
/// Free buffers kept for the next large frame (4 MiB at most); more are freed.
const KEEP_FREE: usize = 16;

/// The gateway's free list of body buffers.
static BODY_BUFS: BufPool = BufPool::new();

/// Free buffers of [`POOLED_BYTES`].
struct BufPool {
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufPool {
    const fn new() -> BufPool {
        BufPool {
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(&'static self) -> Pooled {
        let buf = self.free.lock().expect("never poisoned").pop();
        Pooled {
            // Zeroed once when it is made (IoSliceMut wants initialised memory), never again.
            buf: buf.unwrap_or_else(|| vec![0; POOLED_BYTES].into_boxed_slice()),
            len: 0,
            pool: self,
        }
    }
}

/// A body frame's payload in a buffer that goes back to its pool when the `Bytes` over it drop.
struct Pooled {
    buf: Box<[u8]>,
    len: usize,
    pool: &'static BufPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().expect("never poisoned");
        if free.len() < KEEP_FREE {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The payload length of the frame at the front of `buf` if it is a body frame long enough to
/// be read into a pooled buffer and not all of it is in `buf` yet.
pub(crate) fn large_body_ahead(buf: &[u8]) -> Option<usize> {
    if buf.len() < FRAME_HEADER_BYTES || buf[4] != Kind::ResponseBody as u8 {
        return None;
    }
    let len = declared_len(buf)?;
    (POOLED_MIN_BYTES..=POOLED_BYTES)
        .contains(&len)
        .then_some(len)
        .filter(|len| buf.len() < FRAME_HEADER_BYTES + len)
}

/// Reads the body frame whose header is at the front of `read_buf` (of `len` payload bytes, as
/// [`large_body_ahead`] found) into a pooled buffer. Bytes of the next frame that arrive with
/// it (its header at most) are left in `read_buf`. `None`: the worker closed the connection
/// before the frame was complete.
pub(crate) async fn read_large_body(
    stream: &UnixStream,
    read_buf: &mut BytesMut,
    len: usize,
) -> io::Result<Option<Bytes>> {
    read_pooled(&BODY_BUFS, stream, read_buf, len).await
}

async fn read_pooled(
    pool: &'static BufPool,
    stream: &UnixStream,
    read_buf: &mut BytesMut,
    len: usize,
) -> io::Result<Option<Bytes>> {
    debug_assert_eq!(large_body_ahead(read_buf), Some(len));
    read_buf.advance(FRAME_HEADER_BYTES);
    let mut body = pool.take();
    let have = read_buf.len();
    body.buf[..have].copy_from_slice(read_buf);
    body.len = have;
    read_buf.clear();
    let mut next = [0u8; FRAME_HEADER_BYTES];
    while body.len < len {
        stream.readable().await?;
        let mut bufs = [
            IoSliceMut::new(&mut body.buf[body.len..len]),
            IoSliceMut::new(&mut next),
        ];
        match stream.try_read_vectored(&mut bufs) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                let into_body = n.min(len - body.len);
                body.len += into_body;
                read_buf.extend_from_slice(&next[..n - into_body]);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Some(Bytes::from_owner(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{decode, frame_header, Frame};
    use tokio::io::AsyncWriteExt;

    /// What `forward::read_frame` does with a connection's bytes: large body frames through
    /// the pool, everything else through `decode`.
    async fn read_all(stream: &UnixStream) -> Vec<Frame> {
        let mut read_buf = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            if let Some(len) = large_body_ahead(&read_buf) {
                let body = read_large_body(stream, &mut read_buf, len).await.unwrap();
                frames.push(Frame::ResponseBody(body.expect("whole frame")));
                continue;
            }
            match decode(&mut read_buf).unwrap() {
                Some(Frame::ResponseEnd) => {
                    frames.push(Frame::ResponseEnd);
                    return frames;
                }
                Some(frame) => frames.push(frame),
                None => {
                    read_buf.reserve(64 * 1024);
                    stream.readable().await.unwrap();
                    match stream.try_read_buf(&mut read_buf) {
                        Ok(0) => panic!("closed early"),
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(err) => panic!("{err}"),
                    }
                }
            }
        }
    }

    fn body(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    fn frames_bytes(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for body in bodies {
            wire.extend_from_slice(&frame_header(Kind::ResponseBody, body.len()));
            wire.extend_from_slice(body);
        }
        wire.extend_from_slice(&frame_header(Kind::ResponseEnd, 0));
        wire
    }

    #[tokio::test]
    async fn body_frames_arrive_whole_whatever_the_split() {
        // Large and small frames mixed, so pooled reads hand over to `decode` and back.
        let bodies = vec![
            body(POOLED_BYTES, 1),
            body(POOLED_MIN_BYTES, 2),
            body(100, 3),
            body(POOLED_MIN_BYTES - 1, 4),
            body(POOLED_BYTES, 5),
            body(70_000, 6),
        ];
        let wire = frames_bytes(&bodies);
        for write_size in [1, 5, 7, 4096, 65_536, 300_000, wire.len()] {
            let (a, b) = UnixStream::pair().unwrap();
            let sent = wire.clone();
            let writer = tokio::spawn(async move {
                let mut a = a;
                for piece in sent.chunks(write_size) {
                    a.write_all(piece).await.unwrap();
                }
                a
            });
            let frames = read_all(&b).await;
            drop(writer.await.unwrap());
            let got: Vec<&[u8]> = frames
                .iter()
                .filter_map(|f| match f {
                    Frame::ResponseBody(chunk) => Some(&chunk[..]),
                    _ => None,
                })
                .collect();
            assert_eq!(got.len(), bodies.len(), "writes of {write_size}");
            for (i, (got, want)) in got.iter().zip(&bodies).enumerate() {
                assert!(got == want, "frame {i} differs, writes of {write_size}");
            }
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_no_frame() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut read_buf = BytesMut::from(&frame_header(Kind::ResponseBody, POOLED_BYTES)[..]);
        let half = body(POOLED_BYTES / 2, 7);
        tokio::spawn(async move { a.write_all(&half).await.unwrap() });
        let len = large_body_ahead(&read_buf).unwrap();
        assert_eq!(read_large_body(&b, &mut read_buf, len).await.unwrap(), None);
    }

    #[tokio::test]
    async fn buffers_are_used_again_once_hyper_lets_go() {
        let pool: &'static BufPool = Box::leak(Box::new(BufPool::new()));
        let free = || pool.free.lock().unwrap().len();
        let wire = frames_bytes(&[body(POOLED_BYTES, 8)]);
        let read_one = || async {
            let (mut a, b) = UnixStream::pair().unwrap();
            // The header is read already; the payload (and the end frame) are on their way.
            let mut read_buf = BytesMut::from(&wire[..FRAME_HEADER_BYTES]);
            let rest = wire[FRAME_HEADER_BYTES..].to_vec();
            let writer = tokio::spawn(async move { a.write_all(&rest).await.unwrap() });
            let chunk = read_pooled(pool, &b, &mut read_buf, POOLED_BYTES)
                .await
                .unwrap()
                .expect("whole frame");
            writer.await.unwrap();
            assert_eq!(&read_buf[..], &frame_header(Kind::ResponseEnd, 0));
            chunk
        };
        let first = read_one().await;
        let second = read_one().await;
        assert_ne!(first.as_ptr(), second.as_ptr());
        let first_at = first.as_ptr();
        assert_eq!(free(), 0);
        // A clone is hyper holding on to part of it: not free yet.
        let part = first.slice(10..20);
        drop(first);
        assert_eq!(free(), 0);
        drop(part);
        assert_eq!(free(), 1);
        let third = read_one().await;
        assert_eq!(
            third.as_ptr(),
            first_at,
            "the freed buffer is the next one used"
        );
        assert_eq!(
            &third[..],
            &wire[FRAME_HEADER_BYTES..wire.len() - FRAME_HEADER_BYTES]
        );
        assert_eq!(free(), 0);
        drop((second, third));
        assert_eq!(free(), 2);
    }
}
