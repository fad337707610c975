//! The gateway's side of the memory a worker connection shares with its worker thread (made in
//! `pool::conn`, passed with the preface). The memory, its layout and both sides' moves on it
//! are `sluice_proto::shared::Region`'s; the gateway makes it (`Region::create`), writes request
//! bodies to it (`put_request_body`), reads response chunks in place (`response_chunk`: bytes
//! that give their cell back when dropped), and queues, cancels and settles requests sent
//! behind another (`queue_next`, `cancel`, `settle`).
//!
//! Why at all: request bodies over 16 KiB that fit go there instead of through the socket, and
//! response chunks the worker put in its cells go to the client straight from there. Through the
//! socket, the kernel allocated, charged and freed socket buffers for every byte and copied
//! each byte twice (in and out); that cost more CPU, on each side, than the copies themselves.

pub(crate) use sluice_proto::shared::Region;
