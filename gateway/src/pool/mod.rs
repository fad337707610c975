//! Each app's connections to its workers: a registry of live workers and a deadpool of Unix
//! socket connections to them.
//!
//! The pool is the queue. It holds at most workers × threads connections and every worker serves
//! one connection per thread, so a connection handed out is a Python thread that is free now;
//! waiting for one is waiting for a thread. New connections go to the live worker with the
//! fewest, never past its thread count, so load spreads across processes by itself. (When none
//! is free, a short request may instead queue behind one in flight: see `lease`.)
//!
//! - `workers`: the live workers of an app, and how each is killed.
//! - `conn`: a connection to one worker thread, and the pool's manager that makes them.
//! - `lease`: a connection lent to one request, and the request that may queue behind it
//!   (pipelining).
//! - `exchange`: writing a framed request and reading framed answers on a connection.
//! - `shared`: the memory each connection shares with its worker thread.
//! - `large_bodies`: large response body frames, read into buffers that are used again.

mod conn;
mod exchange;
pub(crate) mod large_bodies;
mod lease;
pub(crate) mod shared;
mod workers;

pub(crate) use conn::{build, prune, Manager, Pool};
pub(crate) use exchange::{closed, read_frame, shared_chunk, write_request};
pub(crate) use lease::{Lease, QueueOutcome, Relays, Reservation};
pub(crate) use workers::{Kill, Worker, Workers};
