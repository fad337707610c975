//! The layout of the memory a data connection shares (a memfd the gateway makes and passes with
//! the preface). Two areas, each written by one side only while the other does not read it:
//!
//! - the **request area** at offset 0: the gateway writes a request body there before it sends
//!   the request (`RequestBodyShared`); the worker copies it out before it answers.
//! - the **response slots**: [`SLOTS`] slots of [`SLOT_BYTES`], each with a `u32` flag in the
//!   flag page. The worker takes a slot whose flag is 0, writes a response chunk there, sets the
//!   flag to 1 and sends `ResponseBodyShared`; the gateway hands the chunk to the client straight
//!   from the slot and sets the flag back to 0 (release ordering) once it has been written. A
//!   worker that finds no free slot sends the chunk through the socket instead: it never waits
//!   for a slot, so a slow client can never hold a Python thread through them.

/// The request area's size: the longest body that travels in shared memory.
pub const SHARED_BODY_BYTES: usize = 1024 * 1024;
/// Response slots per connection.
pub const SLOTS: usize = 4;
/// One response slot: the largest body chunk a worker writes.
pub const SLOT_BYTES: usize = crate::MAX_CHUNK_BYTES;
/// Where the slots' flags start: one `u32` per slot, in a page of their own.
pub const FLAGS_OFFSET: usize = SHARED_BODY_BYTES;
const FLAGS_BYTES: usize = 4096;
/// The whole region.
pub const SHARED_BYTES: usize = FLAGS_OFFSET + FLAGS_BYTES + SLOTS * SLOT_BYTES;

/// Where slot `slot`'s flag is (4-byte aligned).
pub const fn flag_offset(slot: usize) -> usize {
    FLAGS_OFFSET + slot * 4
}

/// Where slot `slot` starts (page aligned).
pub const fn slot_offset(slot: usize) -> usize {
    FLAGS_OFFSET + FLAGS_BYTES + slot * SLOT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_do_not_overlap() {
        assert!(flag_offset(SLOTS - 1) + 4 <= slot_offset(0));
        assert_eq!(slot_offset(0) % 4096, 0);
        assert_eq!(slot_offset(SLOTS - 1) + SLOT_BYTES, SHARED_BYTES);
    }
}
