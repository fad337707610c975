//! A framed connection over a blocking Unix socket: the worker side of `proto`.
//!
//! Reads happen with the interpreter detached; writes collect small frames in a buffer so that a
//! head, a short body and the end travel in one `write`, while large chunks go straight from the
//! app's `bytes` object to the socket without a copy.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use bytes::{BufMut, BytesMut};
use sluice_proto::{decode, frame_header, Frame, Kind, MAX_CHUNK_BYTES};

/// How much one `read` asks the kernel for.
const READ_BYTES: usize = 64 * 1024;
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
            if self.fill()? == 0 {
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
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        out.copy_from_slice(&self.buf.split_to(out.len()));
        Ok(())
    }

    fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_BYTES);
        let spare = self.buf.spare_capacity_mut();
        loop {
            // SAFETY: the pointer and length describe `spare`, memory this buffer owns; read(2)
            // writes at most that many bytes and we mark only the `n` it wrote as initialised.
            let n = unsafe {
                libc::read(
                    self.stream.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                )
            };
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
