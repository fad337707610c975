//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer that forwards
//! bytes, not requests (AWS NLB, HAProxy in TCP mode), puts before a connection's first byte to
//! say whom the connection is really from. A bind with `proxy_protocol: true` requires it; the
//! addresses are believed only from a peer in `forwarded_allow_ips`, as forwarded headers are.
//!
//! The parser is pure: it is given the bytes read so far and answers "a header, this long",
//! "not yet", or what is wrong. [`read_header`] runs it over a stream, and hands back whatever
//! came after the header for the connection to read first.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Version 2's signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest header, CRLF included (the specification's 107 bytes).
const V1_MAX_BYTES: usize = 107;
/// The largest version 2 header taken: addresses and a few TLVs (AWS adds its endpoint id).
const V2_MAX_BYTES: usize = 16 + 1024;

/// What a header says: the client's address and the one it connected to, or nothing (`UNKNOWN`,
/// `LOCAL`: the balancer's own health check, or families other than TCP over IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Header {
    pub(crate) source: Option<SocketAddr>,
    pub(crate) destination: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

fn malformed(why: &'static str) -> ProxyHeaderError {
    ProxyHeaderError::Malformed(why)
}

/// A header at the start of `buf`, with its length; `Ok(None)` when more bytes are needed.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let sig = &V2_SIGNATURE[..buf.len().min(V2_SIGNATURE.len())];
    if buf.starts_with(sig) && !buf.is_empty() {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    if buf.starts_with(&v1[..buf.len().min(v1.len())]) {
        return parse_v1(buf);
    }
    Err(ProxyHeaderError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX_BYTES {
            return Err(malformed("version 1 line too long"));
        }
        return Ok(None);
    };
    if end + 2 > V1_MAX_BYTES {
        return Err(malformed("version 1 line too long"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| malformed("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::default(),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |text: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip: IpAddr = text.parse().map_err(|_| malformed("address"))?;
                match (*family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(malformed("address of the other family")),
                }
            };
            let port = |text: &str| -> Result<u16, ProxyHeaderError> {
                // Decimal without a leading zero, as the specification writes them.
                if text.len() > 1 && text.starts_with('0') {
                    return Err(malformed("port"));
                }
                text.parse().map_err(|_| malformed("port"))
            };
            Header {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(malformed("version 1 fields")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(malformed("version 2 byte"));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX_BYTES {
        return Err(malformed("version 2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let header = match (command, family, transport) {
        // LOCAL: the balancer speaking for itself (a health check).
        (0, _, _) => Header::default(),
        (1, 1, 1) if body.len() >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header {
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            }
        }
        (1, 2, 1) if body.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header {
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            }
        }
        (1, 1 | 2, 1) => return Err(malformed("version 2 addresses cut short")),
        // UNSPEC, UNIX, or datagrams: nothing to believe about an IP client.
        (1, _, _) => Header::default(),
        _ => return Err(malformed("version 2 command")),
    };
    Ok(Some((header, 16 + len)))
}

/// Reads a header from the start of `stream`; returns it with the bytes read past it.
pub(crate) async fn read_header<T: AsyncRead + Unpin>(
    stream: &mut T,
) -> io::Result<(Header, Bytes)> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match parse(&buf) {
            Ok(Some((header, used))) => {
                let _ = buf.split_to(used);
                return Ok((header, buf.freeze()));
            }
            Ok(None) => {}
            Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        }
        if buf.len() >= V2_MAX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "PROXY header too long",
            ));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before its PROXY header",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    /// Parses `bytes`; a header found there must be "not yet" at every shorter length.
    fn whole(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
        let result = parse(bytes);
        if matches!(result, Ok(Some(_))) {
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}: {bytes:?}");
            }
        }
        result
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET /";
        let (header, used) = whole(&line[..line.len() - 5]).unwrap().unwrap();
        assert_eq!(used, line.len() - 5);
        assert_eq!(header.source, addr("203.0.113.7:56324"));
        assert_eq!(header.destination, addr("192.0.2.1:443"));
        let (header, _) = whole(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(header.source, addr("[2001:db8::1]:1"));
        assert_eq!(
            whole(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0,
            Header::default()
        );
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(whole(bad), Err(ProxyHeaderError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::Missing));
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn version_2() {
        let mut body = vec![203, 0, 113, 7, 192, 0, 2, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 2, b'h', b'i']); // a TLV, skipped
        let header = v2(1, 0x11, &body);
        let (got, used) = whole(&header).unwrap().unwrap();
        assert_eq!(used, header.len());
        assert_eq!(got.source, addr("203.0.113.7:56324"));
        assert_eq!(got.destination, addr("192.0.2.1:443"));

        let mut body6 = [0u8; 36].to_vec();
        body6[15] = 1;
        body6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        let (got, _) = whole(&v2(1, 0x21, &body6)).unwrap().unwrap();
        assert_eq!(got.source, addr("[::1]:8080"));

        assert_eq!(
            whole(&v2(0, 0x00, &[])).unwrap().unwrap().0,
            Header::default()
        );
        assert_eq!(
            whole(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0,
            Header::default()
        );
        assert!(whole(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(whole(&v2(2, 0x11, &body)).is_err());
        let mut wrong_version = v2(1, 0x11, &body);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 2000])).is_err());
    }

    #[tokio::test]
    async fn what_follows_the_header_is_kept() {
        let mut input: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\n\r\n";
        let (header, rest) = read_header(&mut input).await.unwrap();
        assert_eq!(header.source, addr("203.0.113.7:1"));
        let mut all = rest.to_vec();
        all.extend_from_slice(input);
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");
        let mut none: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_header(&mut none).await.is_err());
    }
}
