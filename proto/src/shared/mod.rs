//! The memory a data connection shares between the gateway and the worker thread serving it (a
//! memfd the gateway makes and passes with the preface): its layout here, and [`Region`], the
//! one type both sides map it with and whose methods are the only way either side touches it.
//!
//! Three areas, each written by one side only while the other does not read it:
//!
//! - the **request area** at offset 0: the gateway writes a request body there before it sends
//!   the request (`RequestBodyShared`); the worker copies it out before it answers.
//! - the **response cells**: [`CELLS`] cells of [`CELL_BYTES`], each with a `u32` flag in the
//!   flag page. The worker takes a cell whose flag is 0, writes a response chunk there, sets the
//!   flag to 1 and sends `ResponseBodyShared`; the gateway hands the chunk to the client straight
//!   from the cell and sets the flag back to 0 (release ordering) once it has been written. A
//!   worker that finds no free cell sends the chunk through the socket instead: it never waits
//!   for a cell, so a slow client can never hold a Python thread through them.
//! - the **queue word** (see [`queue`]) in the flag page, for a request sent behind another.

mod region;
#[cfg(test)]
mod tests;

pub use region::Region;

use crate::wire::MAX_CHUNK_BYTES;

/// The request area's size: the longest body that travels in shared memory.
pub const SHARED_BODY_BYTES: usize = 1024 * 1024;
/// Response cells per connection.
pub const CELLS: usize = 4;
/// One response cell: the largest body chunk a worker writes.
pub const CELL_BYTES: usize = MAX_CHUNK_BYTES;
/// Where the cells' flags start: one `u32` per cell, in a page of their own.
pub const FLAGS_OFFSET: usize = SHARED_BODY_BYTES;
const FLAGS_BYTES: usize = 4096;
/// The whole region.
pub const SHARED_BYTES: usize = FLAGS_OFFSET + FLAGS_BYTES + CELLS * CELL_BYTES;

/// Where the queue word is: a `u64` in the flag page, past the cells' flags (8-byte aligned).
pub const QUEUE_OFFSET: usize = FLAGS_OFFSET + 64;

/// Where cell `cell`'s flag is (4-byte aligned).
pub const fn flag_offset(cell: usize) -> usize {
    FLAGS_OFFSET + cell * 4
}

/// Where cell `cell` starts (page aligned).
pub const fn cell_offset(cell: usize) -> usize {
    FLAGS_OFFSET + FLAGS_BYTES + cell * CELL_BYTES
}

/// The queue word's format. It decides, once and for both sides, whether a request sent behind
/// another on the connection (one whose head carries a non-zero `queued` number) runs, and holds
/// the number of the latest such request and its state:
///
/// ```text
///            gateway: queue_next                 worker: claim (CAS)
///   STARTED ───────────────────────▶ QUEUED ─────────────────────────▶ STARTED
///   SKIPPED                            │      gateway: settle (CAS)
///   (or 0, never used)                 │
///                                      │ gateway: cancel (CAS)
///                                      ▼      worker: claim
///                                   CANCELED ────────────────────────▶ SKIPPED
/// ```
///
/// Leaving `QUEUED` is one compare-and-swap, whichever side does it, so exactly one side
/// decides: a request taken back never runs, and one that runs is never sent again. The gateway
/// queues a next request only on a word that is `STARTED` or `SKIPPED`, so a worker that finds
/// the word already past its request's number knows that request was settled as started.
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
