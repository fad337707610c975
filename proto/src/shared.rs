//! The layout of the memory a data connection shares (a memfd the gateway makes and passes with
//! the preface). Two areas, each written by one side only while the other does not read it:
//!
//! - the **request area** at offset 0: the gateway writes a request body there before it sends
//!   the request (`RequestBodyShared`); the worker copies it out before it answers.
//! - the **queue word** (see [`queue`]), for a request sent behind another.
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
pub const SLOT_BYTES: usize = crate::wire::MAX_CHUNK_BYTES;
/// Where the slots' flags start: one `u32` per slot, in a page of their own.
pub const FLAGS_OFFSET: usize = SHARED_BODY_BYTES;
const FLAGS_BYTES: usize = 4096;
/// The whole region.
pub const SHARED_BYTES: usize = FLAGS_OFFSET + FLAGS_BYTES + SLOTS * SLOT_BYTES;

/// Where the queue word is: a `u64` in the flag page, past the slots' flags (8-byte aligned).
pub const QUEUE_OFFSET: usize = FLAGS_OFFSET + 64;

/// The queue word decides, once and for both sides, whether a request sent behind another on
/// the connection (one whose head carries a non-zero `queued` number) runs. It holds the
/// number of the latest such request and its state. The gateway sets it to [`QUEUED`] before it
/// writes the request. The worker, about to start it, moves it from `QUEUED` to [`STARTED`]; the
/// gateway may instead move it from `QUEUED` to [`CANCELED`] (to send the request elsewhere),
/// and then the worker drops the request unanswered and marks it [`SKIPPED`]. Both moves are one
/// compare-and-swap, so exactly one side wins. The gateway also moves it to `STARTED` itself once
/// the request in front has ended (it will no longer cancel), and queues the next request only
/// on a word that is `STARTED` or `SKIPPED`: a worker that finds the word already past its
/// request's number knows it was settled as started.
pub mod queue {
    pub const QUEUED: u64 = 1;
    pub const STARTED: u64 = 2;
    pub const CANCELED: u64 = 3;
    pub const SKIPPED: u64 = 4;

    /// The word for request `number` in `state`.
    pub const fn word(number: u32, state: u64) -> u64 {
        ((number as u64) << 8) | state
    }

    pub const fn number(word: u64) -> u32 {
        (word >> 8) as u32
    }

    pub const fn state(word: u64) -> u64 {
        word & 0xff
    }
}

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
        assert!(flag_offset(SLOTS - 1) + 4 <= QUEUE_OFFSET);
        assert_eq!(QUEUE_OFFSET % 8, 0);
        assert!(QUEUE_OFFSET + 8 <= slot_offset(0));
        assert_eq!(slot_offset(0) % 4096, 0);
        assert_eq!(slot_offset(SLOTS - 1) + SLOT_BYTES, SHARED_BYTES);
    }
}
