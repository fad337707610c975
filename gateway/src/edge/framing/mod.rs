//! The byte-level screen of every client connection: a sans-I/O scanner of HTTP/1.1 message
//! framing (RFC 9112) that sees each byte a client sends before hyper does, and the I/O wrapper
//! that runs it.
//!
//! hyper (through httparse) is lenient where a front end must not be: it takes a bare LF as a
//! line ending, merges duplicate identical `Content-Length` fields, drops `Content-Length` when
//! `Transfer-Encoding` is present, accepts `gzip, chunked`, and skips chunk extensions unread.
//! Once hyper has parsed a head, some of that is no longer visible (the dropped
//! `Content-Length`), so the scanner reads the raw bytes instead. It follows the message
//! framing itself (head, then a `Content-Length` or chunked body, then the next head), so
//! body bytes are never mistaken for a head across keep-alive and pipelining.
//!
//! What it finds reaches the client in one of two ways:
//! - A fault in a head is recorded in the connection's [`Screen`]; the bytes still go to hyper,
//!   which parses the head and hands the request to the `strict` middleware, which answers with
//!   the fault's status (400, 414 or 431) and closes. Nothing is forwarded.
//! - A fault in a body (chunk framing, trailers) also ends the stream hyper reads: the read that
//!   carries the bad byte is cut just before it, and the next read fails. hyper fails the request
//!   body, the forwarder, which buffers every body before Python sees it, answers 400 and closes.
//!
//! The scanner only adds strictness: whatever hyper rejects on its own it still rejects. For a
//! well-formed message both agree on where it ends, which is what keeps them in step; if hyper
//! ever parsed a head the scanner has not finished, the middleware fails closed.
//!
//! Cost: one pass over head and chunk-size lines, a counter for body bytes, no allocation.
//!
//! Layout: `scanner` is the pure scanner (bytes in, verdict out); `screen` runs it on a client
//! stream and holds what hyper and the `strict` middleware see of it.

mod scanner;
mod screen;

// `pub` for `crate::fuzzing` to re-export; `edge` itself is private to the crate.
pub use scanner::{Fault, Limits, Scanner, Stop, MAX_HEAD_BYTES};
pub(crate) use screen::{request_target, RawTarget, Screen, Screened};
