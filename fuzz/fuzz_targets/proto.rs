//! Fuzzes the gateway <-> worker frame decoder (`sluice_proto::decode`, and the request and
//! response head parsers behind it): on any bytes, in reads of any size, it never panics and
//! decodes the same frames, and each frame it decodes encodes back to the very bytes it came
//! from, but for the few values the codec reads leniently (see [`canonical`]).
//!
//! Input: one byte that seeds the lengths of the reads in the third feeding, then the stream.

#![no_main]

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::read_lengths;
use sluice_proto::shared::{CELLS, CELL_BYTES, SHARED_BODY_BYTES};
use sluice_proto::{
    decode, encode_control, encode_end, encode_error, encode_request_head, encode_response_head,
    encode_shared_body, encode_shared_chunk, encode_stop, frame_header, Frame, Kind, ProtoError,
    RequestHead, RequestMeta, FRAME_HEADER_BYTES, MAX_CHUNK_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let [seed, ref stream @ ..] = *data else {
        return;
    };
    let whole = Decoded::pieces(stream, std::iter::once(stream.len()));
    let bytewise = Decoded::pieces(stream, std::iter::repeat(1));
    assert_eq!(bytewise, whole, "one byte per read");
    let split = Decoded::pieces(stream, read_lengths(seed));
    assert_eq!(split, whole, "reads of varying length (seed {seed})");
    for (frame, range) in &whole.frames {
        if let Some(encoded) = encode(frame) {
            let original = &stream[range.clone()];
            assert_eq!(encoded, canonical(frame, original), "{frame:?}");
        }
    }
});

/// The frames a stream decodes to, each with where its bytes are, and the error that ended
/// it, if any.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<(Frame, Range<usize>)>,
    error: Option<ProtoError>,
}

impl Decoded {
    /// Feeds `stream` into one buffer in reads of the given lengths, decoding all it can after
    /// each, as the gateway and the worker do; stops at the first error.
    fn pieces(stream: &[u8], lengths: impl Iterator<Item = usize>) -> Decoded {
        let mut decoded = Decoded {
            frames: Vec::new(),
            error: None,
        };
        let mut buf = BytesMut::new();
        let mut fed = 0;
        for length in lengths {
            if fed == stream.len() {
                break;
            }
            let piece = &stream[fed..(fed + length).min(stream.len())];
            buf.extend_from_slice(piece);
            fed += piece.len();
            loop {
                let start = fed - buf.len();
                match decode(&mut buf) {
                    Ok(Some(frame)) => decoded.frames.push((frame, start..fed - buf.len())),
                    Ok(None) => break,
                    Err(err) => {
                        decoded.error = Some(err);
                        return decoded;
                    }
                }
            }
        }
        decoded
    }
}

fn pairs(headers: &[(Bytes, Bytes)]) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.iter().map(|(name, value)| (&name[..], &value[..]))
}

/// `frame` as its sender's encoder writes it; `None` where the encoder takes less than the
/// decoder lets through (long error messages are cut, shared-memory offsets are asserted in
/// range: their readers check them before use).
fn encode(frame: &Frame) -> Option<BytesMut> {
    let mut dst = BytesMut::new();
    match frame {
        Frame::RequestHead(head) => {
            let meta = RequestMeta {
                request_id: &head.request_id,
                method: &head.method,
                target: &head.target,
                version: head.version,
                scheme: head.scheme,
                peer: head.peer,
                local: head.local,
                body_len: head.body_len,
                has_body: head.has_body,
                queued: head.queued,
            };
            encode_request_head(&mut dst, &meta, pairs(&head.headers))
                .expect("a decoded request head encodes");
        }
        Frame::ResponseHead(head) => {
            encode_response_head(&mut dst, head.status, &head.reason, pairs(&head.headers))
                .expect("a decoded response head encodes");
        }
        Frame::RequestBody(body) | Frame::ResponseBody(body) => {
            let kind = match frame {
                Frame::RequestBody(_) => Kind::RequestBody,
                _ => Kind::ResponseBody,
            };
            dst.put_slice(&frame_header(kind, body.len()));
            dst.put_slice(body);
        }
        Frame::ResponseEnd => encode_end(&mut dst),
        Frame::Error(_, message) if message.len() > MAX_CHUNK_BYTES => return None,
        Frame::Error(kind, message) => encode_error(&mut dst, *kind, message),
        Frame::Ready(json) => encode_control(&mut dst, Kind::Ready, json),
        Frame::Fatal(json) => encode_control(&mut dst, Kind::Fatal, json),
        Frame::Stop(grace_ms) => encode_stop(&mut dst, *grace_ms),
        Frame::RequestBodyShared(len) if *len as usize > SHARED_BODY_BYTES => return None,
        Frame::RequestBodyShared(len) => encode_shared_body(&mut dst, *len as usize),
        Frame::ResponseBodyShared { cell, len } => {
            if *cell as usize >= CELLS || *len as usize > CELL_BYTES {
                return None;
            }
            encode_shared_chunk(&mut dst, *cell as usize, *len as usize);
        }
    }
    Some(dst)
}

/// The bytes `frame` was decoded from, with what the decoder reads leniently written as the
/// encoder writes it: any non-zero `has_body` byte means yes, an unknown error kind means
/// `Raised`, and the payload of an end frame is ignored.
fn canonical(frame: &Frame, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match frame {
        Frame::RequestHead(head) => {
            let at = has_body_offset(head);
            bytes[at] = u8::from(bytes[at] != 0);
        }
        Frame::Error(kind, _) => bytes[FRAME_HEADER_BYTES] = *kind as u8,
        Frame::ResponseEnd => bytes = frame_header(Kind::ResponseEnd, 0).to_vec(),
        _ => {}
    }
    bytes
}

/// Where a request head frame's `has_body` byte is (see `proto/src/head.rs`).
fn has_body_offset(head: &RequestHead) -> usize {
    let addr = |addr: Option<std::net::SocketAddr>| match addr {
        None => 1,
        Some(addr) if addr.is_ipv4() => 1 + 4 + 2,
        Some(_) => 1 + 16 + 2,
    };
    FRAME_HEADER_BYTES
        + 2
        + head.request_id.len()
        + 2
        + head.method.len()
        + 4
        + head.target.len()
        + 2
        + addr(head.peer)
        + addr(head.local)
        + 8
}
