//! A framed connection over a blocking Unix socket: the worker side of `proto`.
//!
//! Reads happen with the interpreter detached; writes collect small frames in a buffer so that a
//! head, a short body and the end travel in one `write`, while large chunks go straight from the
//! app's `bytes` object to the socket without a copy.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use bytes::{Buf, BufMut, BytesMut};
use sluice_proto::{decode, frame_header, Frame, Kind, FRAME_HEADER_BYTES, MAX_CHUNK_BYTES};

/// How much one `read` asks the kernel for while the next frame's length is not known yet:
/// a usual request head in one read, while most of a large request body stays in the kernel
/// until [`FrameReader::read_body_into`] reads it straight where it belongs.
const READ_BYTES: usize = 8 * 1024;
/// Chunks up to this size are copied into the write buffer; larger ones are written in place.
const COALESCE_BYTES: usize = 16 * 1024;

pub(crate) struct FrameReader {
    stream: UnixStream,
    buf: BytesMut,
}

impl FrameReader {
    pub(crate) fn new(stream: UnixStream) -> FrameReader {
        FrameReader {
            stream,
            buf: BytesMut::with_capacity(READ_BYTES),
        }
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
            let want = match self.buf.get(..4) {
                Some(len) => {
                    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                    (FRAME_HEADER_BYTES + len)
                        .saturating_sub(self.buf.len())
                        .max(1)
                }
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

    /// Reads exactly `out.len()` raw bytes (the connection preface).
    pub(crate) fn read_exact_raw(&mut self, out: &mut [u8]) -> io::Result<()> {
        while self.buf.len() < out.len() {
            if self.fill(out.len() - self.buf.len())? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        out.copy_from_slice(&self.buf.split_to(out.len()));
        Ok(())
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
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let len = len as usize;
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
}

impl FrameWriter {
    pub(crate) fn new(stream: UnixStream) -> FrameWriter {
        FrameWriter {
            stream,
            buf: BytesMut::with_capacity(COALESCE_BYTES * 2),
        }
    }

    /// The buffer frames are encoded into; they leave on the next [`flush`](Self::flush).
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Queues a body chunk, splitting it into frames of at most `MAX_CHUNK_BYTES`. Small chunks
    /// are copied into the buffer; large ones are written through at once (after what is queued).
    pub(crate) fn body(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(MAX_CHUNK_BYTES) {
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
