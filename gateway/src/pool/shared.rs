//! The gateway's side of the memory a worker connection shares with its worker thread (made in
//! `pool::connect`, passed with the preface; layout and rules in `sluice_proto::shared`).
//!
//! Request bodies over 16 KiB that fit are written to its request area instead of the socket,
//! and response chunks the worker put in its slots go to the client straight from there. Through
//! the socket, the kernel allocated, charged and freed socket buffers for every byte and copied
//! each byte twice (in and out); that cost more CPU, on each side, than the copies themselves.

use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_proto::shared::{
    flag_offset, queue, slot_offset, QUEUE_OFFSET, SHARED_BODY_BYTES, SHARED_BYTES, SLOTS,
    SLOT_BYTES,
};

/// One connection's shared memory. It stays mapped while anything refers to it: the connection,
/// and every response chunk still on its way to a client.
pub(crate) struct Region {
    map: memmap2::MmapRaw,
}

impl Region {
    /// A fresh memfd laid out as `sluice_proto::shared` says (sparse: no page is allocated until
    /// written), and the gateway's mapping of it.
    pub(crate) fn create() -> io::Result<(std::fs::File, Arc<Region>)> {
        // SAFETY: memfd_create(2) with a NUL-terminated name; the descriptor it returns is new
        // and owned by the File from here on.
        let file = unsafe {
            let fd = libc::memfd_create(c"sluice-body".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            std::fs::File::from_raw_fd(fd)
        };
        file.set_len(SHARED_BYTES as u64)?;
        let map = memmap2::MmapRaw::map_raw(&file)?;
        Ok((file, Arc::new(Region { map })))
    }

    /// Copies a request body into the request area; the caller sends `RequestBodyShared` with
    /// the length returned. Only while the connection is held between requests: then the worker
    /// thread is not reading the area.
    pub(crate) fn put_request_body(&self, chunks: &[Bytes]) -> usize {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        assert!(total <= SHARED_BODY_BYTES, "request body of {total} bytes");
        let mut at = 0;
        for chunk in chunks {
            // SAFETY: `at + chunk.len() <= total`, inside the request area of a live mapping,
            // which nothing else writes or reads now (see above); the source is a separate
            // allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    chunk.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    chunk.len(),
                )
            };
            at += chunk.len();
        }
        total
    }

    /// The response chunk a `ResponseBodyShared` frame announced, as bytes that give the slot
    /// back to the worker when the last reference to them drops (hyper has written them).
    pub(crate) fn response_chunk(self: &Arc<Self>, slot: u32, len: u32) -> io::Result<Bytes> {
        let (slot, len) = (slot as usize, len as usize);
        if slot >= SLOTS || len > SLOT_BYTES {
            return Err(io::Error::other(format!(
                "worker announced {len} bytes in shared slot {slot}"
            )));
        }
        Ok(Bytes::from_owner(SlotChunk {
            region: self.clone(),
            slot,
            len,
        }))
    }

    /// Numbers the next request to go behind the one in flight and marks it queued, if the
    /// last one queued here is settled (started, or skipped by the worker); `None` while a
    /// request taken back is still waiting to be skipped. Only the one request that holds the
    /// place behind the request in flight calls it (see `relay`).
    pub(crate) fn queue_next(&self) -> Option<u32> {
        let word = self.queue_word();
        let seen = word.load(Ordering::Acquire);
        if !matches!(queue::state(seen), 0 | queue::STARTED | queue::SKIPPED) {
            return None;
        }
        let number = queue::number(seen).wrapping_add(1).max(1);
        word.store(queue::word(number, queue::QUEUED), Ordering::Release);
        Some(number)
    }

    /// Takes the queued request `number` back, unless the worker has started it.
    pub(crate) fn cancel(&self, number: u32) -> bool {
        self.queue_word()
            .compare_exchange(
                queue::word(number, queue::QUEUED),
                queue::word(number, queue::CANCELED),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Gives up the right to take the queued request `number` back (the request in front has
    /// ended, so the worker starts it next).
    pub(crate) fn settle(&self, number: u32) {
        let _ = self.queue_word().compare_exchange(
            queue::word(number, queue::QUEUED),
            queue::word(number, queue::STARTED),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn queue_word(&self) -> &AtomicU64 {
        // SAFETY: inside the mapping, 8-byte aligned (layout test in sluice_proto::shared), and
        // only ever accessed atomically, by both processes.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(QUEUE_OFFSET).cast()) }
    }

    fn flag(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: the flag is inside the mapping (layout test in sluice_proto::shared), 4-byte
        // aligned (page-aligned mapping, 4-aligned offset), and only ever accessed atomically,
        // by both processes.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(flag_offset(slot)).cast()) }
    }
}

/// A response chunk in a slot: the worker does not touch the slot until this drops.
struct SlotChunk {
    region: Arc<Region>,
    slot: usize,
    len: usize,
}

impl AsRef<[u8]> for SlotChunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: slot and len were checked against the layout; the worker set the slot's flag
        // before announcing it and writes it again only after `drop` clears the flag, so the
        // bytes do not change while this exists.
        unsafe {
            std::slice::from_raw_parts(
                self.region.map.as_ptr().add(slot_offset(self.slot)),
                self.len,
            )
        }
    }
}

impl Drop for SlotChunk {
    fn drop(&mut self) {
        // Release: every read of the chunk happens before the worker may write the slot again.
        self.region.flag(self.slot).store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the worker does: put `data` in `slot` and take the slot.
    fn worker_puts(region: &Region, slot: usize, data: &[u8]) {
        // SAFETY: inside the mapping, which only this test touches.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                region.map.as_mut_ptr().add(slot_offset(slot)),
                data.len(),
            )
        };
        region.flag(slot).store(1, Ordering::Relaxed);
    }

    #[test]
    fn a_chunk_is_read_from_its_slot_and_gives_the_slot_back_when_dropped() {
        let (_file, region) = Region::create().unwrap();
        worker_puts(&region, 2, b"from the worker");
        let chunk = region.response_chunk(2, 15).unwrap();
        assert_eq!(&chunk[..], b"from the worker");
        let part = chunk.slice(5..8);
        drop(chunk);
        assert_eq!(
            region.flag(2).load(Ordering::Acquire),
            1,
            "a part is still held"
        );
        assert_eq!(&part[..], b"the");
        drop(part);
        assert_eq!(region.flag(2).load(Ordering::Acquire), 0);
    }

    #[test]
    fn chunks_outside_the_slots_are_refused() {
        let (_file, region) = Region::create().unwrap();
        assert!(region.response_chunk(SLOTS as u32, 1).is_err());
        assert!(region.response_chunk(0, SLOT_BYTES as u32 + 1).is_err());
        assert!(region
            .response_chunk(SLOTS as u32 - 1, SLOT_BYTES as u32)
            .is_ok());
    }

    #[test]
    fn a_request_body_lands_at_the_start_of_the_memory() {
        let (_file, region) = Region::create().unwrap();
        let chunks = [Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
        assert_eq!(region.put_request_body(&chunks), 7);
        // SAFETY: inside the mapping, which only this test touches.
        let there = unsafe { std::slice::from_raw_parts(region.map.as_ptr(), 7) };
        assert_eq!(there, b"abcdefg");
    }
}
