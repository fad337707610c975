//! The worker's side of the memory a data connection shares with the gateway (a memfd that came
//! with the preface; layout and rules in `sluice_proto::shared`): request bodies are copied out
//! of its request area, and large response chunks are put in its slots instead of the socket.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_proto::shared::{
    flag_offset, queue, slot_offset, QUEUE_OFFSET, SHARED_BODY_BYTES, SHARED_BYTES, SLOTS,
    SLOT_BYTES,
};

pub(crate) struct Region {
    map: memmap2::MmapRaw,
}

impl Region {
    pub(crate) fn map(file: &std::fs::File) -> io::Result<Region> {
        let map = memmap2::MmapRaw::map_raw(file)?;
        if map.len() < SHARED_BYTES {
            return Err(io::Error::other(format!(
                "shared memory of {} bytes, {SHARED_BYTES} expected",
                map.len()
            )));
        }
        Ok(Region { map })
    }

    /// The first `len` bytes of the request area, where the gateway put the body of the request
    /// this thread is reading (it does not write there again before this thread answers).
    pub(crate) fn request_body(&self, len: usize) -> io::Result<&[u8]> {
        if len > SHARED_BODY_BYTES {
            return Err(io::Error::other(format!(
                "a shared body of {len} bytes does not fit in {SHARED_BODY_BYTES}"
            )));
        }
        // SAFETY: inside the mapping (checked in `map`), and nobody writes it meanwhile (above).
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) })
    }

    /// Copies `chunk` into the first free slot from `from` on and marks it taken; the caller
    /// announces it with `ResponseBodyShared`. `None`: every slot is still being written to a
    /// client, so the chunk goes through the socket.
    pub(crate) fn put_chunk(&self, from: usize, chunk: &[u8]) -> Option<usize> {
        assert!(chunk.len() <= SLOT_BYTES);
        let slot = (0..SLOTS)
            .map(|i| (from + i) % SLOTS)
            .find(|&slot| self.flag(slot).load(Ordering::Acquire) == 0)?;
        // SAFETY: the slot is inside the mapping (layout test in sluice_proto::shared) and free:
        // the gateway cleared its flag after its last read (release, paired with the acquire
        // above), and it reads the slot again only once this thread announces it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                chunk.as_ptr(),
                self.map.as_mut_ptr().add(slot_offset(slot)),
                chunk.len(),
            )
        };
        self.flag(slot).store(1, Ordering::Relaxed);
        Some(slot)
    }

    /// Whether the request queued behind another as `number` is to run: the worker's side of
    /// the queue word (see `sluice_proto::shared::queue`). `false`: the gateway took it back to
    /// send elsewhere, and this thread drops it unanswered.
    pub(crate) fn claim(&self, number: u32) -> bool {
        let word = self.queue_word();
        let mut seen = word.load(Ordering::Acquire);
        loop {
            if queue::number(seen) != number || queue::state(seen) == queue::STARTED {
                // Settled as started by the gateway (which has queued another since).
                return true;
            }
            match queue::state(seen) {
                queue::QUEUED => match word.compare_exchange(
                    seen,
                    queue::word(number, queue::STARTED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return true,
                    Err(now) => seen = now,
                },
                queue::CANCELED => {
                    word.store(queue::word(number, queue::SKIPPED), Ordering::Release);
                    return false;
                }
                // SKIPPED: never for a request this thread has not seen yet.
                _ => return true,
            }
        }
    }

    fn queue_word(&self) -> &AtomicU64 {
        // SAFETY: inside the mapping, 8-byte aligned (layout test in sluice_proto::shared), and
        // only ever accessed atomically, by both processes.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(QUEUE_OFFSET).cast()) }
    }

    fn flag(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: inside the mapping, 4-byte aligned, and only ever accessed atomically, by both
        // processes.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(flag_offset(slot)).cast()) }
    }
}

/// What the gateway sees and does, for tests of the worker's side.
#[cfg(test)]
impl Region {
    pub(crate) fn slot(&self, slot: usize, len: usize) -> &[u8] {
        // SAFETY: inside the mapping; the tests read a slot only after the writer is done.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(slot_offset(slot)), len) }
    }

    pub(crate) fn taken(&self, slot: usize) -> bool {
        self.flag(slot).load(Ordering::Acquire) != 0
    }

    /// The gateway's release once the client has the chunk.
    pub(crate) fn release(&self, slot: usize) {
        self.flag(slot).store(0, Ordering::Release);
    }
}
