//! The wire between sluice's gateway and its Python workers: frame types, a sans-I/O codec,
//! and the memory each data connection shares.
//!
//! Layout:
//! - [`wire`]: the preface and version, size limits, [`Kind`] and [`ProtoError`]: the leaf the
//!   other modules build on.
//! - [`frame`]: the frame header (`u32` payload length, `u8` kind), [`Frame`], [`decode`] and the
//!   `encode_*` functions that append frames to a `BytesMut`.
//! - [`head`]: the request and response heads (method, target, headers, addresses, status).
//! - [`shared`]: the shared memory's layout and [`shared::Region`], through which both sides
//!   (the gateway creating it, the worker mapping it) make every move on it.
//! - [`pass_fd`]: the SCM_RIGHTS message that passes the shared memory with the preface.
//!
//! Nothing here does socket I/O: callers own their buffers and sockets (the gateway with tokio,
//! the worker with blocking std sockets). `PROTOCOL.md` beside this crate describes the wire.

pub mod control;
mod frame;
mod head;
pub mod pass_fd;
pub mod shared;
mod wire;

pub use frame::{
    declared_len, decode, encode_control, encode_end, encode_error, encode_request_head,
    encode_response_head, encode_shared_body, encode_shared_chunk, encode_stop, frame_header,
    AppErrorKind, Frame,
};
pub use head::{HttpVersion, RequestHead, RequestMeta, ResponseHead, Scheme};
pub use wire::{
    Kind, ProtoError, COALESCE_BYTES, FRAME_HEADER_BYTES, MAX_CHUNK_BYTES, MAX_FRAME_BYTES,
    PREFACE, PREFACE_UNSHARED, VERSION,
};
