//! The wire's fixed vocabulary, which `frame`, `head` and `shared` all build on: the preface and
//! version, the size limits, the kinds of frame and the codec's error. A leaf: it imports none
//! of them, so they need not import each other.

/// Sent by the gateway as the first bytes of every data connection: magic, NUL, version.
pub const PREFACE: &[u8; 8] = b"SLUICE\x00\x06";
/// The worker's echo of [`PREFACE`] when it could not map the shared memory that came with it
/// (or none came): the gateway then sends every body in frames on that connection.
pub const PREFACE_UNSHARED: &[u8; 8] = b"SLUICE\x01\x06";
/// The protocol version carried in [`PREFACE`] and in the worker's ready frame. Any change to
/// the wire (frames, handshake, shared-memory layout) bumps it, so that a gateway and a worker
/// module from different builds refuse each other at start-up instead of misreading each
/// other's bytes.
pub const VERSION: u8 = 6;
/// Length field plus kind byte.
pub const FRAME_HEADER_BYTES: usize = 5;
/// The largest payload a peer may declare; checked before any memory is reserved for it.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// The largest body chunk a writer puts in one frame (or one shared response cell); larger
/// bodies travel as several.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// Body bytes up to this size are copied into the frame buffer beside their head, by either
/// side, so a small message leaves in one write; larger ones are written from their own
/// buffers. Also where the gateway starts sending request bodies through shared memory, and
/// the largest body a request queued behind another may carry (see PROTOCOL.md).
pub const COALESCE_BYTES: usize = 16 * 1024;

/// What a frame carries. Data connections carry `Request*` one way and `Response*`/`Error` the
/// other; the control channel carries `Ready`/`Fatal` from the worker and `Stop` to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    RequestHead = 1,
    RequestBody = 2,
    ResponseHead = 3,
    ResponseBody = 4,
    ResponseEnd = 5,
    Error = 6,
    Ready = 7,
    Fatal = 8,
    Stop = 9,
    /// A request body in the connection's shared memory: its 4-byte payload is the length,
    /// and the body is that many bytes from the start of the region.
    RequestBodyShared = 10,
    /// A response body chunk in one of the connection's shared response cells: its payload is
    /// the cell (`u32`) and the chunk's length (`u32`). See [`crate::shared`].
    ResponseBodyShared = 11,
}

impl Kind {
    pub(crate) fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::RequestHead,
            2 => Kind::RequestBody,
            3 => Kind::ResponseHead,
            4 => Kind::ResponseBody,
            5 => Kind::ResponseEnd,
            6 => Kind::Error,
            7 => Kind::Ready,
            8 => Kind::Fatal,
            9 => Kind::Stop,
            10 => Kind::RequestBodyShared,
            11 => Kind::ResponseBodyShared,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// A header name, method, request id or reason phrase too long for its `u16` length.
    #[error("a field of {0} bytes is over the 65535-byte limit of its kind")]
    FieldTooLong(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {0:?} frame: {1}")]
    Malformed(Kind, &'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_carries_the_version() {
        assert_eq!(PREFACE[..7], *b"SLUICE\x00");
        assert_eq!(PREFACE[7], VERSION);
        assert_eq!(PREFACE_UNSHARED[7], VERSION);
    }
}
