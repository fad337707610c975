//! [`Region`]: one process's mapping of a connection's shared memory, with every move either
//! side makes on it. Each area's section holds both sides' moves, so the rule that keeps them
//! apart reads in one place; the bounds-checked accessors at the end are the only way in.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{
    cell_offset, flag_offset, queue, CELLS, CELL_BYTES, QUEUE_OFFSET, SHARED_BODY_BYTES,
    SHARED_BYTES,
};

/// One process's mapping of a connection's shared memory (layout in [`crate::shared`]). The
/// gateway makes the memory with [`Region::create`]; the worker maps the descriptor that came
/// with the preface with [`Region::map`]. A method documented as the gateway's (or the
/// worker's) is only ever called by that side: the rules that keep the two apart hold only so.
///
/// It stays mapped while anything refers to it: on the gateway's side the connection and every
/// response chunk still on its way to a client.
pub struct Region {
    /// At least [`SHARED_BYTES`] long (checked in [`Region::map`]).
    map: memmap2::MmapRaw,
}

/// The mapping.
impl Region {
    /// Gateway: a fresh memfd laid out as [`crate::shared`] says (sparse: no page is allocated
    /// until written), to pass with the preface, and the gateway's mapping of it.
    pub fn create() -> io::Result<(File, Arc<Region>)> {
        // SAFETY: memfd_create(2) with a NUL-terminated name; the descriptor it returns is new
        // and owned by the File from here on.
        let file = unsafe {
            let fd = libc::memfd_create(c"sluice-body".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            File::from_raw_fd(fd)
        };
        file.set_len(SHARED_BYTES as u64)?;
        let region = Region::map(&file)?;
        Ok((file, Arc::new(region)))
    }

    /// Worker: maps the memory that came with the preface; an error if it is smaller than the
    /// layout (a gateway of another build, or a broken one).
    pub fn map(file: &File) -> io::Result<Region> {
        let map = memmap2::MmapRaw::map_raw(file)?;
        if map.len() < SHARED_BYTES {
            return Err(io::Error::other(format!(
                "shared memory of {} bytes, {SHARED_BYTES} expected",
                map.len()
            )));
        }
        Ok(Region { map })
    }
}

/// The request area: the gateway writes a body there only while it holds the connection
/// between requests, before it sends the request; the worker copies it out before it answers,
/// and the gateway sends the next request only after the answer.
impl Region {
    /// Gateway: copies a request body into the request area; the caller sends
    /// `RequestBodyShared` with the length returned, and only bodies of at most
    /// [`SHARED_BODY_BYTES`] (it checks first).
    pub fn put_request_body(&self, chunks: &[Bytes]) -> usize {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        assert!(total <= SHARED_BODY_BYTES, "request body of {total} bytes");
        let area = self.area(0, total);
        let mut at = 0;
        for chunk in chunks {
            // SAFETY: `at + chunk.len() <= total`, inside the `total` bytes `area` checked; the
            // worker neither reads nor writes them now (see above); the source is a separate
            // allocation.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), area.add(at), chunk.len()) };
            at += chunk.len();
        }
        total
    }

    /// Worker: fills `dst` from the start of the request area, where the gateway put the body
    /// of the request this thread is reading.
    pub fn copy_request_body(&self, dst: &mut [u8]) -> io::Result<()> {
        let len = dst.len();
        if len > SHARED_BODY_BYTES {
            return Err(io::Error::other(format!(
                "a shared body of {len} bytes does not fit in {SHARED_BODY_BYTES}"
            )));
        }
        let area = self.area(0, len);
        // SAFETY: `len` bytes inside the mapping (checked by `area`), which the gateway does
        // not write before this thread answers; `dst` is this process's own memory, never part
        // of a mapping (nothing hands out references into one that could be mutable).
        unsafe { std::ptr::copy_nonoverlapping(area, dst.as_mut_ptr(), len) };
        Ok(())
    }
}

/// The response cells: the worker writes a cell only while its flag is 0, and the gateway
/// reads it only between the worker's announcement and its own clearing of the flag.
impl Region {
    /// Worker: copies `chunk` into the first free cell from `from` on and marks it taken; the
    /// caller announces it with `ResponseBodyShared`. `None`: every cell is still being written
    /// to a client, so the chunk goes through the socket (a worker never waits for a cell).
    pub fn put_chunk(&self, from: usize, chunk: &[u8]) -> Option<usize> {
        assert!(chunk.len() <= CELL_BYTES, "chunk of {} bytes", chunk.len());
        let cell = (0..CELLS)
            .map(|i| (from + i) % CELLS)
            .find(|&cell| self.flag(cell).load(Ordering::Acquire) == 0)?;
        let area = self.area(cell_offset(cell), chunk.len());
        // SAFETY: inside the mapping (checked by `area`), and free: the gateway cleared its
        // flag after its last read of it (release, paired with the acquire above) and reads it
        // again only once this thread announces it; the source is the caller's own memory.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), area, chunk.len()) };
        // Relaxed: the gateway reads the cell only after the announcement, which travels
        // through the socket and so after these writes.
        self.flag(cell).store(1, Ordering::Relaxed);
        Some(cell)
    }

    /// Gateway: the response chunk a `ResponseBodyShared` frame announced, as bytes that give
    /// the cell back to the worker when the last reference to them drops (hyper has written
    /// them). An error for a cell or length outside the layout.
    pub fn response_chunk(self: &Arc<Self>, cell: u32, len: u32) -> io::Result<Bytes> {
        let (cell, len) = (cell as usize, len as usize);
        if cell >= CELLS || len > CELL_BYTES {
            return Err(io::Error::other(format!(
                "worker announced {len} bytes in shared cell {cell}"
            )));
        }
        Ok(Bytes::from_owner(CellChunk {
            region: self.clone(),
            cell,
            len,
        }))
    }
}

/// A response chunk in a cell, read in place: the worker does not write the cell until this
/// drops and clears its flag.
struct CellChunk {
    region: Arc<Region>,
    cell: usize,
    len: usize,
}

impl AsRef<[u8]> for CellChunk {
    fn as_ref(&self) -> &[u8] {
        let area = self.region.area(cell_offset(self.cell), self.len);
        // SAFETY: `len` bytes inside the mapping (checked by `area`), which lives as long as
        // `self` holds the region; the worker set the cell's flag before announcing it and
        // writes it again only after `drop` clears the flag, so the bytes do not change while
        // this reference exists.
        unsafe { std::slice::from_raw_parts(area, self.len) }
    }
}

impl Drop for CellChunk {
    fn drop(&mut self) {
        // Release: every read of the chunk happens before the worker may write the cell again.
        self.region.flag(self.cell).store(0, Ordering::Release);
    }
}

/// The queue word (its states in [`queue`]): every move out of `QUEUED` is one
/// compare-and-swap, so the gateway's `cancel` and the worker's `claim` never both win.
impl Region {
    /// Gateway: numbers the next request to go behind the one in flight and marks it queued, if
    /// the last one queued here is settled (started, or skipped by the worker); `None` while a
    /// request taken back is still waiting to be skipped. Only the one request that holds the
    /// place behind the request in flight calls it, so nothing else moves the word from
    /// `STARTED` or `SKIPPED` meanwhile and a plain store is enough.
    pub fn queue_next(&self) -> Option<u32> {
        let word = self.queue_word();
        let seen = word.load(Ordering::Acquire);
        if !matches!(queue::state(seen), 0 | queue::STARTED | queue::SKIPPED) {
            return None;
        }
        let number = queue::number(seen).wrapping_add(1).max(1);
        word.store(queue::word(number, queue::QUEUED), Ordering::Release);
        Some(number)
    }

    /// Gateway: takes the queued request `number` back, unless the worker has started it (or
    /// it was settled as started). `true`: it will never run; send it elsewhere.
    pub fn cancel(&self, number: u32) -> bool {
        self.leave_queued(number, queue::CANCELED)
    }

    /// Gateway: gives up the right to take the queued request `number` back (the request in
    /// front has ended, so the worker starts it next).
    pub fn settle(&self, number: u32) {
        // Lost only to the worker's claim or an earlier cancel: either way already decided.
        let _ = self.leave_queued(number, queue::STARTED);
    }

    /// Worker: whether the request queued behind another as `number` is to run. `false`: the
    /// gateway took it back to send elsewhere, and this thread drops it unanswered.
    pub fn claim(&self, number: u32) -> bool {
        let word = self.queue_word();
        let seen = word.load(Ordering::Acquire);
        if queue::number(seen) != number {
            // Settled as started by the gateway, which has queued another since.
            return true;
        }
        match queue::state(seen) {
            // Lost to the gateway's cancel or settle, which decided it: look again to see how.
            queue::QUEUED => self.leave_queued(number, queue::STARTED) || self.claim(number),
            queue::CANCELED => {
                // Only this thread moves a canceled word on: a plain store.
                word.store(queue::word(number, queue::SKIPPED), Ordering::Release);
                false
            }
            // STARTED (settled), or SKIPPED: never for a request this thread has not seen.
            _ => true,
        }
    }

    /// The one compare-and-swap out of `QUEUED` for request `number`, into `state`.
    fn leave_queued(&self, number: u32, state: u64) -> bool {
        self.queue_word()
            .compare_exchange(
                queue::word(number, queue::QUEUED),
                queue::word(number, state),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// The accessors: the only code that turns an offset into a pointer or a reference.
impl Region {
    /// The start of the `len` bytes at `offset`, checked to lie inside the mapping. Reading or
    /// writing through it is for the caller to prove sound: that the other side does not write
    /// those bytes meanwhile (nor read them, for a write).
    fn area(&self, offset: usize, len: usize) -> *mut u8 {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.map.len()),
            "{len} bytes at {offset} in a mapping of {}",
            self.map.len()
        );
        // SAFETY: `offset` is inside the mapping (checked above), so the pointer stays within
        // the one allocation that `add` requires.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }

    fn flag(&self, cell: usize) -> &AtomicU32 {
        let at = self.area(flag_offset(cell), 4).cast::<u32>();
        debug_assert!(at.is_aligned());
        // SAFETY: inside the mapping (checked by `area`), which lives as long as `self`;
        // 4-byte aligned (a page-aligned mapping, an offset that is a multiple of 4: layout
        // test); and only ever accessed atomically, by both processes.
        unsafe { AtomicU32::from_ptr(at) }
    }

    fn queue_word(&self) -> &AtomicU64 {
        let at = self.area(QUEUE_OFFSET, 8).cast::<u64>();
        debug_assert!(at.is_aligned());
        // SAFETY: inside the mapping (checked by `area`), which lives as long as `self`;
        // 8-byte aligned (a page-aligned mapping, an offset that is a multiple of 8: layout
        // test); and only ever accessed atomically, by both processes.
        unsafe { AtomicU64::from_ptr(at) }
    }
}
