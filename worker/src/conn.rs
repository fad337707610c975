//! A framed connection over a blocking Unix socket: the worker side of `proto`.
//!
//! Reads happen with the interpreter detached; writes collect small frames in a buffer so that a
//! head, a short body and the end travel in one `write`, while large chunks go straight from the
//! app's `bytes` object to the socket without a copy.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use sluice_proto::shared::Region;
use sluice_proto::{
    declared_len, decode, encode_shared_chunk, frame_header, Frame, Kind, COALESCE_BYTES,
    FRAME_HEADER_BYTES, MAX_CHUNK_BYTES, MAX_FRAME_BYTES,
};

/// How much one `read` asks the kernel for while the next frame's length is not known yet:
/// a usual request head in one read, while most of a large request body stays in the kernel
/// until [`FrameReader::read_body_into`] reads it straight where it belongs.
const READ_BYTES: usize = 8 * 1024;

pub(crate) struct FrameReader {
    stream: UnixStream,
    buf: BytesMut,
    /// The memory the gateway shares with this connection, if any.
    shared: Option<Arc<Region>>,
}

impl FrameReader {
    pub(crate) fn new(stream: UnixStream) -> FrameReader {
        FrameReader {
            stream,
            buf: BytesMut::with_capacity(READ_BYTES),
            shared: None,
        }
    }

    /// Takes request bodies from `shared` where the gateway put them there.
    pub(crate) fn with_shared(mut self, shared: Option<Arc<Region>>) -> FrameReader {
        self.shared = shared;
        self
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub(crate) fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(frame));
            }
            // The rest of a frame whose header is in, not past it; else a usual head's worth.
            // (A length over the limit is refused by `decode` once the header is whole.)
            let want = match declared_len(&self.buf) {
                Some(len) => (FRAME_HEADER_BYTES + len.min(MAX_FRAME_BYTES))
                    .saturating_sub(self.buf.len())
                    .max(1),
                None => READ_BYTES,
            };
            if self.fill(want)? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Fills `dst` with the payloads of the request body frames that follow a head, checking
    /// that they add up to exactly `dst.len()` bytes. What the head's read brought along is
    /// copied; the rest is read from the socket straight into `dst` (one copy fewer than going
    /// through the buffer), together with the next frame's header when more are due.
    pub(crate) fn read_body_into(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        while at < dst.len() {
            while self.buf.len() < FRAME_HEADER_BYTES {
                if self.fill(FRAME_HEADER_BYTES - self.buf.len())? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let len = declared_len(&self.buf).expect("a whole header is buffered");
            if self.buf[4] == Kind::RequestBodyShared as u8 {
                at += self.take_shared(&mut dst[at..])?;
                continue;
            }
            if self.buf[4] != Kind::RequestBody as u8 || len > dst.len() - at {
                return Err(io::Error::other(
                    "request body frames do not add up to the announced length",
                ));
            }
            self.buf.advance(FRAME_HEADER_BYTES);
            let buffered = len.min(self.buf.len());
            dst[at..at + buffered].copy_from_slice(&self.buf[..buffered]);
            self.buf.advance(buffered);
            at += buffered;
            let end = at + len - buffered;
            while at < end {
                // The next header only if another frame is due: never bytes of a next request.
                let header = if end < dst.len() {
                    FRAME_HEADER_BYTES
                } else {
                    0
                };
                self.buf.reserve(header);
                let spare = self.buf.spare_capacity_mut();
                let iov = [
                    libc::iovec {
                        iov_base: dst[at..end].as_mut_ptr().cast(),
                        iov_len: end - at,
                    },
                    libc::iovec {
                        iov_base: spare.as_mut_ptr().cast(),
                        iov_len: header,
                    },
                ];
                // SAFETY: both iovecs describe writable memory we own (the rest of this frame's
                // place in `dst`, spare capacity of the buffer); readv(2) fills them in order.
                let n = unsafe { libc::readv(self.stream.as_raw_fd(), iov.as_ptr(), 2) };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = n as usize;
                let into_dst = n.min(end - at);
                at += into_dst;
                // SAFETY: readv(2) initialised the `n - into_dst` bytes past the buffer's length.
                unsafe { self.buf.set_len(self.buf.len() + n - into_dst) };
            }
        }
        Ok(())
    }

    /// Copies a body the gateway put in the shared memory into the front of `dst`, for the
    /// `RequestBodyShared` frame whose header is at the front of the buffer; returns its length.
    fn take_shared(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let whole = FRAME_HEADER_BYTES + 4;
        while self.buf.len() < whole {
            if self.fill(whole - self.buf.len())? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let frame = decode(&mut self.buf).map_err(io::Error::other)?;
        let Some(Frame::RequestBodyShared(len)) = frame else {
            return Err(io::Error::other(format!(
                "malformed shared body frame: {frame:?}"
            )));
        };
        let len = len as usize;
        if len > dst.len() {
            return Err(io::Error::other(format!(
                "a shared body of {len} bytes does not fit in the {} announced",
                dst.len()
            )));
        }
        let Some(shared) = &self.shared else {
            return Err(io::Error::other(
                "a shared body on a connection without shared memory",
            ));
        };
        shared.copy_request_body(&mut dst[..len])?;
        Ok(len)
    }

    /// Reads at most `max` bytes into the buffer.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        self.buf.reserve(max);
        let spare = self.buf.spare_capacity_mut();
        let len = spare.len().min(max);
        loop {
            // SAFETY: the pointer and length describe (part of) `spare`, memory this buffer
            // owns; read(2) writes at most that many bytes and we mark only the `n` it wrote as
            // initialised.
            let n = unsafe { libc::read(self.stream.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
            if n >= 0 {
                let n = n as usize;
                // SAFETY: read(2) initialised `n` bytes past the current length.
                unsafe { self.buf.set_len(self.buf.len() + n) };
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

pub(crate) struct FrameWriter {
    stream: UnixStream,
    buf: BytesMut,
    /// The memory the gateway shares with this connection, if any, and the response cell to
    /// try first.
    shared: Option<Arc<Region>>,
    next_cell: usize,
}

impl FrameWriter {
    pub(crate) fn new(stream: UnixStream, shared: Option<Arc<Region>>) -> FrameWriter {
        FrameWriter {
            stream,
            buf: BytesMut::with_capacity(COALESCE_BYTES * 2),
            shared,
            next_cell: 0,
        }
    }

    /// The buffer frames are encoded into; they leave on the next [`flush`](Self::flush).
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Queues a body chunk, splitting it into frames of at most `MAX_CHUNK_BYTES`. Small chunks
    /// are copied into the buffer; large ones into a free cell of the shared memory, else
    /// written through at once (after what is queued).
    pub(crate) fn body(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(MAX_CHUNK_BYTES) {
            if piece.len() > COALESCE_BYTES {
                let shared = self.shared.as_ref();
                if let Some(cell) = shared.and_then(|s| s.put_chunk(self.next_cell, piece)) {
                    self.next_cell = cell + 1;
                    encode_shared_chunk(&mut self.buf, cell, piece.len());
                    continue;
                }
            }
            let header = frame_header(Kind::ResponseBody, piece.len());
            if piece.len() <= COALESCE_BYTES {
                self.buf.put_slice(&header);
                self.buf.put_slice(piece);
            } else {
                self.write_through(&header, piece)?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let result = self.stream.write_all(&self.buf);
            self.buf.clear();
            result?;
        }
        Ok(())
    }

    /// Clears anything queued, for a connection that is being given up.
    pub(crate) fn discard(&mut self) {
        self.buf.clear();
    }

    fn write_through(&mut self, header: &[u8], data: &[u8]) -> io::Result<()> {
        let mut parts = [
            IoSlice::new(&self.buf),
            IoSlice::new(header),
            IoSlice::new(data),
        ];
        let mut slices: &mut [IoSlice<'_>] = &mut parts;
        // `write_all_vectored` is unstable; this is the same loop.
        while !slices.is_empty() {
            match self.stream.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_proto::{encode_request_head, HttpVersion, RequestMeta, Scheme};

    /// A POST head announcing `body_len` bytes, with `host` as its one header.
    fn post_head(wire: &mut BytesMut, body_len: usize, host: &[u8]) {
        let peer = "127.0.0.1:1".parse().unwrap();
        let meta = RequestMeta {
            request_id: b"id",
            method: b"POST",
            target: b"/",
            version: HttpVersion::Http11,
            scheme: Scheme::Http,
            peer: Some(peer),
            local: Some(peer),
            body_len: body_len as u64,
            has_body: true,
            queued: 0,
        };
        encode_request_head(wire, &meta, [(&b"host"[..], host)]).unwrap();
    }

    /// A head announcing `body.len()` bytes, then the body cut into frames of `sizes` (cycled),
    /// written to the socket in writes of `write_size` bytes from another thread, so reads see
    /// frames split at every possible place.
    fn send_request(body: &[u8], sizes: &[usize], write_size: usize) -> FrameReader {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut wire = BytesMut::new();
        post_head(&mut wire, body.len(), b"x");
        let mut at = 0;
        for &size in sizes.iter().cycle() {
            if at == body.len() {
                break;
            }
            let piece = &body[at..(at + size).min(body.len())];
            wire.put_slice(&frame_header(Kind::RequestBody, piece.len()));
            wire.put_slice(piece);
            at += piece.len();
        }
        // A second head right behind, as if pipelined: the body read must not eat into it.
        post_head(&mut wire, body.len(), b"y");
        std::thread::spawn(move || {
            for piece in wire.chunks(write_size) {
                theirs.write_all(piece).unwrap();
            }
        });
        FrameReader::new(ours)
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn body_frames_land_in_place_whatever_the_split() {
        for (len, sizes, write_size) in [
            (0, &[1][..], 7),
            (1, &[1][..], 1),
            (70_000, &[MAX_CHUNK_BYTES][..], 65_536),
            (300_000, &[1000, 1, 333][..], 4096),
            (600_000, &[MAX_CHUNK_BYTES, 5][..], 3),
            (100_000, &[16_384][..], 100_000 + 400),
        ] {
            let want = body(len);
            let mut reader = send_request(&want, sizes, write_size);
            let Some(Frame::RequestHead(head)) = reader.read_frame().unwrap() else {
                panic!("no head");
            };
            let mut got = vec![0u8; head.body_len as usize];
            reader.read_body_into(&mut got).unwrap();
            assert!(got == want, "body of {len} in frames of {sizes:?}");
            let Some(Frame::RequestHead(next)) = reader.read_frame().unwrap() else {
                panic!("the next head was lost after a body of {len}");
            };
            assert_eq!(next.body_len, len as u64);
        }
    }

    #[test]
    fn body_frames_that_overrun_the_announced_length_are_refused() {
        let mut reader = send_request(&body(1000), &[600], 4096);
        let Some(Frame::RequestHead(_)) = reader.read_frame().unwrap() else {
            panic!("no head");
        };
        // Told to expect fewer bytes than the frames carry: the second frame does not fit.
        let mut short = vec![0u8; 900];
        assert!(reader.read_body_into(&mut short).is_err());
    }

    /// Shared memory as the gateway makes it, holding `body` in its request area, mapped as the
    /// worker maps it.
    fn shared_memory(body: &[u8]) -> Arc<Region> {
        let (file, gateway) = Region::create().unwrap();
        gateway.put_request_body(&[Bytes::copy_from_slice(body)]);
        Arc::new(Region::map(&file).unwrap())
    }

    /// A head announcing `announced` bytes and a shared-body frame saying `shared` bytes, then a
    /// second head; the reader maps `memory`.
    fn send_shared(announced: usize, shared: usize, memory: Arc<Region>) -> FrameReader {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut wire = BytesMut::new();
        post_head(&mut wire, announced, b"x");
        // By hand: the encoder refuses a length over the area, which is one of the cases.
        wire.put_slice(&frame_header(Kind::RequestBodyShared, 4));
        wire.put_u32(shared as u32);
        post_head(&mut wire, announced, b"y");
        // One byte at a time: the shared frame's header and length arrive split.
        std::thread::spawn(move || {
            for byte in wire.chunks(1) {
                theirs.write_all(byte).unwrap();
            }
        });
        FrameReader::new(ours).with_shared(Some(memory))
    }

    #[test]
    fn a_body_in_shared_memory_is_copied_from_there() {
        let want = body(300_000);
        let mut reader = send_shared(want.len(), want.len(), shared_memory(&want));
        let Some(Frame::RequestHead(head)) = reader.read_frame().unwrap() else {
            panic!("no head");
        };
        let mut got = vec![0u8; head.body_len as usize];
        reader.read_body_into(&mut got).unwrap();
        assert!(got == want);
        let Some(Frame::RequestHead(next)) = reader.read_frame().unwrap() else {
            panic!("the next head was lost after a shared body");
        };
        assert_eq!(next.headers[0].1, &b"y"[..]);
    }

    #[test]
    fn a_shared_body_longer_than_announced_or_than_the_memory_is_refused() {
        let over = sluice_proto::shared::SHARED_BODY_BYTES + 1;
        for (announced, shared) in [(1000, 1001), (2 * over, over)] {
            let mut reader = send_shared(announced, shared, shared_memory(&body(5000)));
            let Some(Frame::RequestHead(_)) = reader.read_frame().unwrap() else {
                panic!("no head");
            };
            let mut dst = vec![0u8; announced];
            let err = reader.read_body_into(&mut dst).unwrap_err();
            assert!(err.to_string().contains("does not fit"), "{err}");
        }
        // A connection without shared memory has room for nothing there.
        let mut reader = send_shared(10, 10, shared_memory(&body(10)));
        reader.shared = None;
        let Some(Frame::RequestHead(_)) = reader.read_frame().unwrap() else {
            panic!("no head");
        };
        assert!(reader.read_body_into(&mut [0u8; 10]).is_err());
    }

    #[test]
    fn large_chunks_go_to_free_cells_and_the_rest_through_the_socket() {
        use sluice_proto::shared::CELLS;
        let (ours, theirs) = UnixStream::pair().unwrap();
        // One mapping for both sides: the gateway's moves (reading and releasing the cells)
        // are made on it too.
        let region = shared_memory(b"");
        let mut writer = FrameWriter::new(ours, Some(region.clone()));
        let small = body(100);
        let large: Vec<Vec<u8>> = (0..CELLS + 1).map(|i| vec![i as u8 + 1; 20_000]).collect();
        writer.body(&small).unwrap();
        for chunk in &large {
            writer.body(chunk).unwrap();
        }
        writer.flush().unwrap();
        drop(writer);
        let mut reader = FrameReader::new(theirs);
        let mut frames = Vec::new();
        while let Some(frame) = reader.read_frame().unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames[0], Frame::ResponseBody(small.into()));
        let mut held = Vec::new();
        for (cell, chunk) in large.iter().enumerate().take(CELLS) {
            let len = chunk.len() as u32;
            assert_eq!(
                frames[cell + 1],
                Frame::ResponseBodyShared {
                    cell: cell as u32,
                    len
                }
            );
            let there = region.response_chunk(cell as u32, len).unwrap();
            assert!(there == chunk[..], "cell {cell}");
            held.push(there);
        }
        // Every cell taken: the last chunk went through the socket.
        assert_eq!(
            frames[CELLS + 1],
            Frame::ResponseBody(large[CELLS].clone().into())
        );
        assert_eq!(frames.len(), CELLS + 2);

        // Once the gateway gives a cell back, the next large chunk goes there.
        drop(held.remove(2));
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut writer = FrameWriter::new(ours, Some(region.clone()));
        writer.body(&[9; 30_000]).unwrap();
        writer.flush().unwrap();
        let frame = FrameReader::new(theirs).read_frame().unwrap();
        assert_eq!(
            frame,
            Some(Frame::ResponseBodyShared {
                cell: 2,
                len: 30_000
            })
        );
        assert!(region.response_chunk(2, 30_000).unwrap() == [9; 30_000][..]);
    }
}
