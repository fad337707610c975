//! Both sides of the shared memory together: the gateway's moves on the mapping it created, the
//! worker's on its own mapping of the same memfd, as in the two processes.

use std::fs::File;
use std::sync::{Arc, Barrier};

use bytes::Bytes;

use super::*;

/// The gateway's region and the worker's mapping of the same memory.
fn both_sides() -> (Arc<Region>, Region) {
    let (file, gateway) = Region::create().unwrap();
    let worker = Region::map(&file).unwrap();
    (gateway, worker)
}

#[test]
fn areas_do_not_overlap() {
    assert!(flag_offset(CELLS - 1) + 4 <= QUEUE_OFFSET);
    assert_eq!(QUEUE_OFFSET % 8, 0);
    assert!(QUEUE_OFFSET + 8 <= cell_offset(0));
    assert_eq!(cell_offset(0) % 4096, 0);
    assert_eq!(cell_offset(CELLS - 1) + CELL_BYTES, SHARED_BYTES);
}

#[test]
fn memory_smaller_than_the_layout_is_not_mapped() {
    let file: File = Region::create().unwrap().0;
    file.set_len(4096).unwrap();
    assert!(Region::map(&file).is_err());
}

#[test]
fn a_request_body_goes_from_the_gateway_to_the_worker() {
    let (gateway, worker) = both_sides();
    let chunks = [Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
    assert_eq!(gateway.put_request_body(&chunks), 7);
    let mut got = [0u8; 7];
    worker.copy_request_body(&mut got).unwrap();
    assert_eq!(&got, b"abcdefg");

    let whole = Bytes::from(vec![7u8; SHARED_BODY_BYTES]);
    assert_eq!(
        gateway.put_request_body(std::slice::from_ref(&whole)),
        SHARED_BODY_BYTES
    );
    let mut got = vec![0u8; SHARED_BODY_BYTES];
    worker.copy_request_body(&mut got).unwrap();
    assert!(got == whole);

    let mut over = vec![0u8; SHARED_BODY_BYTES + 1];
    let err = worker.copy_request_body(&mut over).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn response_cells_are_taken_read_in_place_released_and_reused() {
    let (gateway, worker) = both_sides();
    let mut chunks = Vec::new();
    for i in 0..CELLS {
        let data = vec![i as u8 + 1; 1000 * (i + 1)];
        // From cell 1 on: the worker tries the cell after the one it used last first.
        let cell = worker.put_chunk(1, &data).unwrap();
        assert_eq!(cell, (1 + i) % CELLS);
        let chunk = gateway
            .response_chunk(cell as u32, data.len() as u32)
            .unwrap();
        assert!(chunk == data, "cell {cell}");
        chunks.push((cell, chunk));
    }
    // No free cell: the worker does not wait, the chunk goes through the socket.
    assert_eq!(worker.put_chunk(0, b"more"), None);

    // A part of a chunk still being written holds its cell.
    let (cell, chunk) = chunks.remove(2);
    let part = chunk.slice(5..8);
    drop(chunk);
    assert_eq!(worker.put_chunk(0, b"more"), None, "a part is still held");
    drop(part);

    // Given back: the next chunk goes there, whatever cell the worker tries first.
    assert_eq!(worker.put_chunk(cell + 1, b"again"), Some(cell));
    let again = gateway.response_chunk(cell as u32, 5).unwrap();
    assert_eq!(&again[..], b"again");
    drop(chunks);
    assert_eq!(worker.put_chunk(cell, b"x"), Some((cell + 1) % CELLS));
}

#[test]
fn chunks_outside_the_cells_are_refused() {
    let (gateway, _worker) = both_sides();
    assert!(gateway.response_chunk(CELLS as u32, 1).is_err());
    assert!(gateway.response_chunk(0, CELL_BYTES as u32 + 1).is_err());
    assert!(gateway
        .response_chunk(CELLS as u32 - 1, CELL_BYTES as u32)
        .is_ok());
}

#[test]
fn a_queued_request_is_claimed_or_canceled_never_both() {
    let (gateway, worker) = both_sides();
    // Claimed by the worker: too late to take back.
    let first = gateway.queue_next().unwrap();
    assert!(worker.claim(first));
    assert!(!gateway.cancel(first));

    // Taken back: the worker skips it, and nothing more is queued until it has.
    let second = gateway.queue_next().unwrap();
    assert_ne!(second, first);
    assert!(gateway.cancel(second));
    assert_eq!(gateway.queue_next(), None, "not yet skipped");
    assert!(!worker.claim(second));

    // Settled by the gateway: it runs, and can no longer be taken back.
    let third = gateway.queue_next().unwrap();
    gateway.settle(third);
    assert!(!gateway.cancel(third));
    assert!(worker.claim(third));

    // Settled and already followed by another: the worker still runs the earlier one.
    let fourth = gateway.queue_next().unwrap();
    gateway.settle(fourth);
    let fifth = gateway.queue_next().unwrap();
    assert!(worker.claim(fourth));
    assert!(worker.claim(fifth));
    assert!(!gateway.cancel(fifth));
}

#[test]
fn a_cancel_racing_a_claim_is_decided_once() {
    let (gateway, worker) = both_sides();
    let barrier = Barrier::new(2);
    let (mut canceled, mut claimed) = (0, 0);
    for _ in 0..2000 {
        let number = gateway.queue_next().expect("the last one was settled");
        let (cancel, claim) = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                barrier.wait();
                worker.claim(number)
            });
            barrier.wait();
            (gateway.cancel(number), worker.join().unwrap())
        });
        assert_ne!(cancel, claim, "request {number}");
        canceled += usize::from(cancel);
        claimed += usize::from(claim);
    }
    assert_eq!(canceled + claimed, 2000);
}
