//! Request and response heads: what a WSGI environ and a WSGI `start_response` need, as raw bytes.
//!
//! Header names and values travel as the exact bytes received (WSGI treats them as latin-1, not
//! UTF-8), so nothing is re-encoded on the way. Every length is checked against what is left of
//! the frame before anything is allocated for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::{Kind, ProtoError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl HttpVersion {
    /// The `SERVER_PROTOCOL` string.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The borrowed fields the gateway encodes; headers are passed beside it.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    pub request_id: &'a [u8],
    pub method: &'a [u8],
    /// The request-target exactly as received (path and query, still percent-encoded).
    pub target: &'a [u8],
    pub version: HttpVersion,
    pub scheme: Scheme,
    /// The client's address; `None` over a Unix socket, which has none.
    pub peer: Option<SocketAddr>,
    /// The address the client connected to; `None` for a Unix socket.
    pub local: Option<SocketAddr>,
    /// The exact number of body bytes that follow in `RequestBody` frames.
    pub body_len: u64,
    /// Whether the client framed a body (Content-Length or chunked): decides if the app sees
    /// `CONTENT_LENGTH` at all on an empty body.
    pub has_body: bool,
    /// Non-zero for a request sent behind another still in flight on the connection: its
    /// number in the shared memory's queue word (see `shared::queue`), which the worker must
    /// claim before it starts the request.
    pub queued: u32,
}

/// A decoded request head. The byte fields share the frame's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub request_id: Bytes,
    pub method: Bytes,
    pub target: Bytes,
    pub version: HttpVersion,
    pub scheme: Scheme,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub body_len: u64,
    pub has_body: bool,
    pub queued: u32,
    pub headers: Vec<(Bytes, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The reason phrase the app gave ("OK"), possibly non-standard.
    pub reason: Bytes,
    pub headers: Vec<(Bytes, Bytes)>,
}

fn put_addr(dst: &mut BytesMut, addr: Option<SocketAddr>) {
    let Some(addr) = addr else {
        // A Unix socket's: no address at all.
        dst.put_u8(0);
        return;
    };
    match addr.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(4);
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(6);
            dst.put_slice(&ip.octets());
        }
    }
    dst.put_u16(addr.port());
}

fn put_bytes16(dst: &mut BytesMut, bytes: &[u8]) -> Result<(), ProtoError> {
    let len = u16::try_from(bytes.len()).map_err(|_| ProtoError::FieldTooLong(bytes.len()))?;
    dst.put_u16(len);
    dst.put_slice(bytes);
    Ok(())
}

fn put_bytes32(dst: &mut BytesMut, bytes: &[u8]) {
    dst.put_u32(bytes.len() as u32);
    dst.put_slice(bytes);
}

/// Headers: a `u32` count, then for each a `u16`-prefixed name and a `u32`-prefixed value. The
/// count is patched in after the loop so any iterator works.
fn put_headers<'h>(
    dst: &mut BytesMut,
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), ProtoError> {
    let at = dst.len();
    dst.put_u32(0);
    let mut count = 0u32;
    for (name, value) in headers {
        put_bytes16(dst, name)?;
        put_bytes32(dst, value);
        count += 1;
    }
    dst[at..at + 4].copy_from_slice(&count.to_be_bytes());
    Ok(())
}

pub(crate) fn put_request_head<'h>(
    dst: &mut BytesMut,
    meta: &RequestMeta<'_>,
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), ProtoError> {
    put_bytes16(dst, meta.request_id)?;
    put_bytes16(dst, meta.method)?;
    put_bytes32(dst, meta.target);
    dst.put_u8(match meta.version {
        HttpVersion::Http10 => 0,
        HttpVersion::Http11 => 1,
        HttpVersion::Http2 => 2,
    });
    dst.put_u8(match meta.scheme {
        Scheme::Http => 0,
        Scheme::Https => 1,
    });
    put_addr(dst, meta.peer);
    put_addr(dst, meta.local);
    dst.put_u64(meta.body_len);
    dst.put_u8(meta.has_body as u8);
    dst.put_u32(meta.queued);
    put_headers(dst, headers)
}

pub(crate) fn put_response_head<'h>(
    dst: &mut BytesMut,
    status: u16,
    reason: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), ProtoError> {
    dst.put_u16(status);
    put_bytes16(dst, reason)?;
    put_headers(dst, headers)
}

/// A bounds-checked reader over one frame's payload.
struct Reader {
    kind: Kind,
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), ProtoError> {
        if self.buf.remaining() < n {
            return Err(ProtoError::Malformed(self.kind, "truncated"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, ProtoError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn bytes16(&mut self) -> Result<Bytes, ProtoError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn bytes32(&mut self) -> Result<Bytes, ProtoError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn addr(&mut self) -> Result<Option<SocketAddr>, ProtoError> {
        let ip = match self.u8()? {
            0 => return Ok(None),
            4 => {
                let o = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
            }
            6 => {
                let o = self.take(16)?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&o);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => return Err(ProtoError::Malformed(self.kind, "address family")),
        };
        Ok(Some(SocketAddr::new(ip, self.u16()?)))
    }
    fn headers(&mut self) -> Result<Vec<(Bytes, Bytes)>, ProtoError> {
        let count = self.u32()? as usize;
        // Each header takes at least 6 bytes, so a count the frame cannot hold is a lie.
        if count > self.buf.remaining() / 6 {
            return Err(ProtoError::Malformed(self.kind, "header count"));
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.bytes16()?;
            let value = self.bytes32()?;
            headers.push((name, value));
        }
        Ok(headers)
    }
    fn end(self) -> Result<(), ProtoError> {
        if self.buf.has_remaining() {
            return Err(ProtoError::Malformed(self.kind, "trailing bytes"));
        }
        Ok(())
    }
}

pub(crate) fn parse_request_head(payload: Bytes) -> Result<RequestHead, ProtoError> {
    let mut r = Reader {
        kind: Kind::RequestHead,
        buf: payload,
    };
    let request_id = r.bytes16()?;
    let method = r.bytes16()?;
    let target = r.bytes32()?;
    let version = match r.u8()? {
        0 => HttpVersion::Http10,
        1 => HttpVersion::Http11,
        2 => HttpVersion::Http2,
        _ => return Err(ProtoError::Malformed(Kind::RequestHead, "version")),
    };
    let scheme = match r.u8()? {
        0 => Scheme::Http,
        1 => Scheme::Https,
        _ => return Err(ProtoError::Malformed(Kind::RequestHead, "scheme")),
    };
    let peer = r.addr()?;
    let local = r.addr()?;
    let body_len = r.u64()?;
    let has_body = r.u8()? != 0;
    let queued = r.u32()?;
    let headers = r.headers()?;
    r.end()?;
    Ok(RequestHead {
        request_id,
        method,
        target,
        version,
        scheme,
        peer,
        local,
        body_len,
        has_body,
        queued,
        headers,
    })
}

pub(crate) fn parse_response_head(payload: Bytes) -> Result<ResponseHead, ProtoError> {
    let mut r = Reader {
        kind: Kind::ResponseHead,
        buf: payload,
    };
    let status = r.u16()?;
    let reason = r.bytes16()?;
    let headers = r.headers()?;
    r.end()?;
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_too_long_for_their_length_prefix_are_errors_not_panics() {
        let mut buf = BytesMut::new();
        let long_name = vec![b'x'; 70_000];
        let err = put_response_head(&mut buf, 200, b"OK", [(&long_name[..], &b"v"[..])]);
        assert_eq!(err, Err(ProtoError::FieldTooLong(70_000)));
    }

    #[test]
    fn request_head_round_trips_raw_bytes() {
        let meta = RequestMeta {
            request_id: b"req-1",
            method: b"POST",
            target: b"/caf%C3%A9?x=1&y=%FF",
            version: HttpVersion::Http11,
            scheme: Scheme::Http,
            peer: Some("127.0.0.1:50000".parse().unwrap()),
            local: Some("[::1]:8000".parse().unwrap()),
            body_len: 12,
            has_body: true,
            queued: 7,
        };
        // A latin-1 value that is not valid UTF-8 must survive untouched.
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"host", b"example.com"),
            (b"x-latin", b"caf\xe9"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ];
        let mut buf = BytesMut::new();
        put_request_head(&mut buf, &meta, headers.iter().copied()).unwrap();
        let head = parse_request_head(buf.freeze()).unwrap();
        assert_eq!(&head.request_id[..], b"req-1");
        assert_eq!(&head.method[..], b"POST");
        assert_eq!(&head.target[..], meta.target);
        assert_eq!(head.version, HttpVersion::Http11);
        assert_eq!(head.peer, meta.peer);
        assert_eq!(head.local, meta.local);
        assert_eq!(head.body_len, 12);
        assert!(head.has_body);
        assert_eq!(head.queued, 7);
        let got: Vec<(&[u8], &[u8])> = head.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(got, headers);
    }

    #[test]
    fn response_head_round_trips() {
        let mut buf = BytesMut::new();
        put_response_head(
            &mut buf,
            418,
            b"I'm a teapot",
            [(&b"set-cookie"[..], &b"a=1"[..])],
        )
        .unwrap();
        let head = parse_response_head(buf.freeze()).unwrap();
        assert_eq!(head.status, 418);
        assert_eq!(&head.reason[..], b"I'm a teapot");
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn lying_lengths_inside_a_head_are_malformed() {
        let mut buf = BytesMut::new();
        put_response_head(&mut buf, 200, b"OK", [(&b"a"[..], &b"b"[..])]).unwrap();
        // Claim a million headers in a head that holds one (status, reason, then the count).
        let count_at = 2 + 2 + 2;
        buf[count_at..count_at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(
            parse_response_head(buf.freeze()),
            Err(ProtoError::Malformed(Kind::ResponseHead, "header count"))
        );

        let mut buf = BytesMut::new();
        put_response_head(&mut buf, 200, b"OK", [(&b"a"[..], &b"b"[..])]).unwrap();
        // Claim a value longer than the head.
        let value_len_at = buf.len() - 1 - 4;
        buf[value_len_at..value_len_at + 4].copy_from_slice(&999u32.to_be_bytes());
        assert_eq!(
            parse_response_head(buf.freeze()),
            Err(ProtoError::Malformed(Kind::ResponseHead, "truncated"))
        );
    }
}
