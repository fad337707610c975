//! Frames: a 5-byte header (`u32` big-endian payload length, `u8` kind) and a payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::head::{self, RequestHead, RequestMeta, ResponseHead};
use crate::shared::{CELLS, CELL_BYTES, SHARED_BODY_BYTES};
use crate::wire::{Kind, ProtoError, FRAME_HEADER_BYTES, MAX_CHUNK_BYTES, MAX_FRAME_BYTES};

/// Why the worker gave up on a request (an `Error` frame). Before a response head it becomes a
/// 500; after one, the gateway cuts the response off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AppErrorKind {
    /// The app raised.
    Raised = 1,
    /// The app broke WSGI: bad status or header, body past Content-Length, no start_response.
    BadResponse = 2,
    /// The body ended before the Content-Length the app declared.
    ShortBody = 3,
}

impl AppErrorKind {
    fn from_u8(byte: u8) -> AppErrorKind {
        match byte {
            2 => AppErrorKind::BadResponse,
            3 => AppErrorKind::ShortBody,
            _ => AppErrorKind::Raised,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    RequestHead(RequestHead),
    RequestBody(Bytes),
    ResponseHead(ResponseHead),
    ResponseBody(Bytes),
    ResponseEnd,
    /// The message is for logs only; it never reaches a client.
    Error(AppErrorKind, Bytes),
    /// JSON, see PROTOCOL.md.
    Ready(Bytes),
    /// JSON with the Python traceback, see PROTOCOL.md.
    Fatal(Bytes),
    /// Finish what you hold within this many milliseconds, then exit.
    Stop(u32),
    /// The request body is this many bytes at the start of the shared region.
    RequestBodyShared(u32),
    /// A response body chunk of `len` bytes in shared response cell `cell`.
    ResponseBodyShared {
        cell: u32,
        len: u32,
    },
}

/// The 5-byte header of a frame whose payload the caller writes itself (a body chunk written
/// straight from its own buffer, without copying it into the frame buffer).
pub fn frame_header(kind: Kind, payload_len: usize) -> [u8; FRAME_HEADER_BYTES] {
    debug_assert!(payload_len <= MAX_FRAME_BYTES);
    let len = (payload_len as u32).to_be_bytes();
    [len[0], len[1], len[2], len[3], kind as u8]
}

/// The payload length a frame header at the front of `buf` declares, once its four length
/// bytes are in (unchecked against [`MAX_FRAME_BYTES`]: [`decode`] refuses that).
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    let len: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(len) as usize)
}

/// Takes one whole frame off the front of `buf`; `Ok(None)` means "not yet, read more".
/// Body payloads are split off without copying.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
    let Some(len) = declared_len(buf).filter(|_| buf.len() >= FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    if len > MAX_FRAME_BYTES {
        return Err(ProtoError::TooLarge(len));
    }
    let kind = Kind::from_u8(buf[4]).ok_or(ProtoError::UnknownKind(buf[4]))?;
    if buf.len() < FRAME_HEADER_BYTES + len {
        buf.reserve(FRAME_HEADER_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    let payload = buf.split_to(len).freeze();
    let frame = match kind {
        Kind::RequestHead => Frame::RequestHead(head::parse_request_head(payload)?),
        Kind::RequestBody => Frame::RequestBody(payload),
        Kind::ResponseHead => Frame::ResponseHead(head::parse_response_head(payload)?),
        Kind::ResponseBody => Frame::ResponseBody(payload),
        Kind::ResponseEnd => Frame::ResponseEnd,
        Kind::Error => {
            if payload.is_empty() {
                return Err(ProtoError::Malformed(kind, "empty"));
            }
            let code = AppErrorKind::from_u8(payload[0]);
            Frame::Error(code, payload.slice(1..))
        }
        Kind::Ready => Frame::Ready(payload),
        Kind::Fatal => Frame::Fatal(payload),
        Kind::Stop => match payload[..] {
            [a, b, c, d] => Frame::Stop(u32::from_be_bytes([a, b, c, d])),
            _ => return Err(ProtoError::Malformed(kind, "stop takes a 4-byte grace")),
        },
        Kind::RequestBodyShared => match payload[..] {
            [a, b, c, d] => Frame::RequestBodyShared(u32::from_be_bytes([a, b, c, d])),
            _ => return Err(ProtoError::Malformed(kind, "takes a 4-byte length")),
        },
        Kind::ResponseBodyShared => match payload[..] {
            [a, b, c, d, e, f, g, h] => Frame::ResponseBodyShared {
                cell: u32::from_be_bytes([a, b, c, d]),
                len: u32::from_be_bytes([e, f, g, h]),
            },
            _ => return Err(ProtoError::Malformed(kind, "takes a cell and a length")),
        },
    };
    Ok(Some(frame))
}

/// Writes a header with a zero length, returning where it starts; [`finish`] patches the length
/// once the payload is in, so variable-size payloads are written in one pass.
fn begin(dst: &mut BytesMut, kind: Kind) -> usize {
    let start = dst.len();
    dst.put_slice(&frame_header(kind, 0));
    start
}

/// Patches in the length of the frame begun at `start`; a head that came out too long (or that
/// failed half-way) is taken out of `dst` again, which is left as it was before it.
fn finish(dst: &mut BytesMut, start: usize, put: Result<(), ProtoError>) -> Result<(), ProtoError> {
    let len = dst.len() - start - FRAME_HEADER_BYTES;
    let checked = put.and_then(|()| {
        if len > MAX_FRAME_BYTES {
            return Err(ProtoError::TooLarge(len));
        }
        Ok(())
    });
    match checked {
        Ok(()) => dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes()),
        Err(_) => dst.truncate(start),
    }
    checked
}

/// A request head frame; an error (and `dst` as it was) if a field or the whole head is too
/// long for the frame format, which the gateway's limits keep from happening.
pub fn encode_request_head<'h>(
    dst: &mut BytesMut,
    meta: &RequestMeta<'_>,
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), ProtoError> {
    let start = begin(dst, Kind::RequestHead);
    let put = head::put_request_head(dst, meta, headers);
    finish(dst, start, put)
}

/// A response head frame; an error (and `dst` as it was) if the app's headers do not fit in
/// one frame or a name is over 64 KiB.
pub fn encode_response_head<'h>(
    dst: &mut BytesMut,
    status: u16,
    reason: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), ProtoError> {
    let start = begin(dst, Kind::ResponseHead);
    let put = head::put_response_head(dst, status, reason, headers);
    finish(dst, start, put)
}

pub fn encode_end(dst: &mut BytesMut) {
    dst.put_slice(&frame_header(Kind::ResponseEnd, 0));
}

pub fn encode_error(dst: &mut BytesMut, kind: AppErrorKind, message: &[u8]) {
    // Messages are for logs; keep them well inside a frame.
    let message = &message[..message.len().min(MAX_CHUNK_BYTES)];
    dst.put_slice(&frame_header(Kind::Error, 1 + message.len()));
    dst.put_u8(kind as u8);
    dst.put_slice(message);
}

/// `Ready` and `Fatal`, whose payloads are JSON.
pub fn encode_control(dst: &mut BytesMut, kind: Kind, payload: &[u8]) {
    debug_assert!(matches!(kind, Kind::Ready | Kind::Fatal));
    let payload = &payload[..payload.len().min(MAX_FRAME_BYTES)];
    dst.put_slice(&frame_header(kind, payload.len()));
    dst.put_slice(payload);
}

/// `RequestBodyShared`: the body the gateway put at the start of the shared region.
pub fn encode_shared_body(dst: &mut BytesMut, len: usize) {
    assert!(len <= SHARED_BODY_BYTES, "shared body of {len} bytes");
    dst.put_slice(&frame_header(Kind::RequestBodyShared, 4));
    dst.put_u32(len as u32);
}

/// `ResponseBodyShared`: a chunk of `len` bytes the worker put in shared response cell `cell`.
pub fn encode_shared_chunk(dst: &mut BytesMut, cell: usize, len: usize) {
    assert!(cell < CELLS && len <= CELL_BYTES);
    dst.put_slice(&frame_header(Kind::ResponseBodyShared, 8));
    dst.put_u32(cell as u32);
    dst.put_u32(len as u32);
}

/// `Stop`: the worker finishes what it holds within `grace_ms`, then exits.
pub fn encode_stop(dst: &mut BytesMut, grace_ms: u32) {
    dst.put_slice(&frame_header(Kind::Stop, 4));
    dst.put_u32(grace_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut buf: BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    #[test]
    fn body_and_control_frames_round_trip() {
        let mut buf = BytesMut::new();
        buf.put_slice(&frame_header(Kind::ResponseBody, 5));
        buf.put_slice(b"hello");
        buf.put_slice(&frame_header(Kind::RequestBody, 0));
        encode_end(&mut buf);
        encode_error(&mut buf, AppErrorKind::BadResponse, b"bad header");
        encode_control(&mut buf, Kind::Ready, br#"{"pid":1}"#);
        encode_stop(&mut buf, 1500);
        encode_shared_body(&mut buf, 65_536);
        encode_shared_chunk(&mut buf, 3, 200_000);
        assert_eq!(
            decode_all(buf),
            vec![
                Frame::ResponseBody(Bytes::from_static(b"hello")),
                Frame::RequestBody(Bytes::new()),
                Frame::ResponseEnd,
                Frame::Error(AppErrorKind::BadResponse, Bytes::from_static(b"bad header")),
                Frame::Ready(Bytes::from_static(br#"{"pid":1}"#)),
                Frame::Stop(1500),
                Frame::RequestBodyShared(65_536),
                Frame::ResponseBodyShared {
                    cell: 3,
                    len: 200_000
                },
            ]
        );
    }

    #[test]
    fn heads_too_long_for_the_format_are_errors_and_leave_the_buffer_as_it_was() {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let long_name = vec![b'x'; 70_000];
        let err = encode_response_head(&mut buf, 200, b"OK", [(&long_name[..], &b"v"[..])]);
        assert_eq!(err, Err(ProtoError::FieldTooLong(70_000)));
        assert_eq!(&buf[..], b"kept");
        let big_value = vec![b'v'; MAX_FRAME_BYTES];
        let err = encode_response_head(&mut buf, 200, b"OK", [(&b"x"[..], &big_value[..])]);
        assert!(matches!(err, Err(ProtoError::TooLarge(_))), "{err:?}");
        assert_eq!(&buf[..], b"kept");
        encode_response_head(&mut buf, 200, b"OK", [(&b"x"[..], &b"v"[..])]).unwrap();
        let _ = buf.split_to(4);
        let Some(Frame::ResponseHead(head)) = decode(&mut buf).unwrap() else {
            panic!("not a response head");
        };
        assert_eq!(head.status, 200);
    }

    #[test]
    fn a_request_head_frame_decodes_to_its_head() {
        let meta = RequestMeta {
            request_id: b"r",
            method: b"GET",
            target: b"/",
            version: crate::HttpVersion::Http2,
            scheme: crate::Scheme::Https,
            peer: None,
            local: None,
            body_len: 0,
            has_body: false,
            queued: 0,
        };
        let mut buf = BytesMut::new();
        encode_request_head(&mut buf, &meta, [(&b"host"[..], &b"h"[..])]).unwrap();
        let Some(Frame::RequestHead(head)) = decode(&mut buf).unwrap() else {
            panic!("not a request head");
        };
        assert_eq!((&head.method[..], head.headers.len()), (&b"GET"[..], 1));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragmented_input_yields_the_same_frames() {
        let mut whole = BytesMut::new();
        encode_response_head(&mut whole, 201, b"Created", [(&b"x-a"[..], &b"1"[..])]).unwrap();
        whole.put_slice(&frame_header(Kind::ResponseBody, 3));
        whole.put_slice(b"abc");
        encode_end(&mut whole);
        let expected = decode_all(whole.clone());

        // Feed one byte at a time: every prefix must be "not yet" or a whole frame.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in whole.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, expected);
    }

    #[test]
    fn oversized_length_is_refused_before_reserving() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_u8(Kind::RequestBody as u8);
        assert_eq!(
            decode(&mut buf),
            Err(ProtoError::TooLarge(u32::MAX as usize))
        );
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn unknown_kind_and_empty_error_are_refused() {
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 200][..]);
        assert_eq!(decode(&mut buf), Err(ProtoError::UnknownKind(200)));
        let mut buf = BytesMut::from(&frame_header(Kind::Error, 0)[..]);
        assert!(matches!(
            decode(&mut buf),
            Err(ProtoError::Malformed(Kind::Error, _))
        ));
    }

    /// A poor man's fuzz run: random bytes must produce frames or errors, never a panic.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut buf = BytesMut::new();
            // A plausible header most of the time, so payload parsers get exercised too.
            buf.put_u32(len as u32);
            buf.put_u8((next() % 10) as u8);
            for _ in 0..len {
                buf.put_u8(next() as u8);
            }
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }
}
