//! The strict checks: the first thing every request meets, before the forwarder or any other
//! handler. It applies the verdict of the connection's byte-level screen (see `framing`) and checks
//! what the parsed request shows best: exactly one valid Host, and an origin-form target. A request
//! that fails gets 400, 414, 431 or 501 with `Connection: close`, and never reaches Python. One
//! that passes carries its target as sent ([`RawTarget`]) where hyper got it percent-encoded.

use std::sync::Arc;

use axum::extract::Request;
use http::{header, Method, Uri, Version};

use crate::config::EdgeConfig;
use crate::context::ConnInfo;
use crate::edge::framing::{Fault, RawTarget, Screen};
use crate::error::GatewayError;

/// Every check of [`check`]; a refusal is logged at debug.
pub(crate) fn enforce(request: &mut Request, edge: &EdgeConfig) -> Result<(), GatewayError> {
    match check(request, edge) {
        Ok(raw_target) => {
            if let Some(raw_target) = raw_target {
                request.extensions_mut().insert(raw_target);
            }
            Ok(())
        }
        Err(err) => {
            let peer = request.extensions().get::<ConnInfo>().map(|info| info.peer);
            tracing::debug!(?peer, "rejected: {err}");
            Err(err)
        }
    }
}

/// Every check, in order; the screen's verdict first, since it covers the whole head.
fn check(request: &Request, edge: &EdgeConfig) -> Result<Option<RawTarget>, GatewayError> {
    if request.version() == Version::HTTP_2 {
        check_http2(request, edge)?;
        return Ok(None);
    }
    // Without a screen (a router driven directly, without a socket) only the parsed checks run.
    let raw_target = match request.extensions().get::<Arc<Screen>>() {
        Some(screen) => screen.next_verdict().map_err(rejection)?,
        None => None,
    };
    check_target(request.method(), request.uri())?;
    check_host(request)?;
    Ok(raw_target)
}

/// An HTTP/2 request (RFC 9113 §8.3), whose framing and pseudo-header fields the h2 crate has
/// checked: a path in origin form (or `*` for OPTIONS), an authority in `:authority` or Host
/// (the same one if both are there), and header fields within the HTTP/1.1 limits, which
/// get 431 as there.
fn check_http2(request: &Request, edge: &EdgeConfig) -> Result<(), GatewayError> {
    let headers = request.headers();
    if headers.len() > edge.limit_request_fields
        || headers.iter().any(|(name, value)| {
            name.as_str().len() + 2 + value.len() > edge.limit_request_field_size
        })
    {
        return Err(GatewayError::HeaderFieldsTooLarge);
    }
    let uri = request.uri();
    check_path(request.method(), uri)?;
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(GatewayError::Malformed("more than one Host")),
        (host, _) => host.map(|h| h.as_bytes()),
    };
    let authority = match (authority, host) {
        (None, None) => return Err(GatewayError::Malformed("HTTP/2 request without :authority")),
        (Some(a), Some(h)) if a != h => {
            return Err(GatewayError::Malformed(":authority and Host disagree"))
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
    };
    if !valid_host(authority) {
        return Err(GatewayError::Malformed("invalid :authority"));
    }
    Ok(())
}

fn rejection(fault: Option<Fault>) -> GatewayError {
    match fault {
        Some(Fault::RequestLineTooLong) => GatewayError::RequestLineTooLong,
        Some(Fault::FieldTooLarge | Fault::TooManyFields | Fault::HeadTooLarge) => {
            GatewayError::HeaderFieldsTooLarge
        }
        Some(Fault::UnknownTransferCoding) => GatewayError::UnknownTransferCoding,
        Some(fault) => GatewayError::Malformed(fault.describe()),
        None => {
            // hyper found a head where the screen has not finished one: they disagree about
            // where a message ends, which is exactly what must never reach the app.
            tracing::warn!("the framing screen is out of step with the HTTP parser; closing");
            GatewayError::Malformed("framing out of step")
        }
    }
}

/// Origin-form only (RFC 9112 §3.2.1), or `*` for OPTIONS (§3.2.4). sluice is no proxy, so the
/// absolute form (§3.2.2), whose authority could disagree with Host, and the authority form of
/// CONNECT (§3.2.3) are refused.
fn check_target(method: &Method, uri: &Uri) -> Result<(), GatewayError> {
    if uri.scheme().is_some() {
        return Err(GatewayError::Malformed("absolute-form target"));
    }
    if uri.authority().is_some() || method == Method::CONNECT {
        return Err(GatewayError::Malformed("authority-form target (CONNECT)"));
    }
    check_path(method, uri)
}

/// A path in origin form, or `*` for OPTIONS alone: HTTP/1.1's target (once it is neither
/// absolute nor authority form) and HTTP/2's `:path` alike.
fn check_path(method: &Method, uri: &Uri) -> Result<(), GatewayError> {
    match uri.path() {
        "*" if method == Method::OPTIONS && uri.query().is_none() => Ok(()),
        "*" => Err(GatewayError::Malformed(
            "asterisk-form target without OPTIONS",
        )),
        path if path.starts_with('/') => Ok(()),
        _ => Err(GatewayError::Malformed("target not in origin form")),
    }
}

/// Exactly one Host in HTTP/1.1, at most one before, with a valid value (RFC 9112 §3.2).
fn check_host(request: &Request) -> Result<(), GatewayError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(GatewayError::Malformed("more than one Host")),
        (None, _) if request.version() >= Version::HTTP_11 => {
            Err(GatewayError::Malformed("HTTP/1.1 request without Host"))
        }
        (None, _) => Ok(()),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(GatewayError::Malformed("invalid Host")),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2, §3.2.3), or empty (a target without authority).
/// IP literals must be IPv6 addresses; the rarely seen IPvFuture form is refused.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let address = std::str::from_utf8(&literal[..end]).unwrap_or_default();
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match &literal[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &b""[..]),
        }
    };
    valid_reg_name(host) && port.iter().all(u8::is_ascii_digit)
}

/// reg-name: unreserved, pct-encoded and sub-delims (RFC 3986 §3.2.2).
fn valid_reg_name(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        rest = match b {
            b'%' => match tail {
                [hi, lo, tail @ ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => tail,
                _ => return false,
            },
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => tail,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => tail,
            _ => return false,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn hosts() {
        for good in [
            "",
            "example.com",
            "example.com:8080",
            "example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:1",
            "xn--caf-dma.example",
            "a%2Eb",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            "t, evil",
            "user@t",
            "t:x",
            "t:80:81",
            "t/evil",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "[v1.x]",
            "a%2",
            "a%zz",
            "caf\u{e9}",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn targets() {
        let ok = |method: Method, target: &str| check_target(&method, &target.parse().unwrap());
        assert!(ok(Method::GET, "/").is_ok());
        assert!(ok(Method::GET, "/a/b?c=d").is_ok());
        // An empty first segment is still a path (RFC 3986 §3.3), not an authority.
        assert!(ok(Method::GET, "//a/b").is_ok());
        assert!(ok(Method::OPTIONS, "*").is_ok());
        assert!(ok(Method::GET, "*").is_err());
        assert!(ok(Method::GET, "http://h/").is_err());
        assert!(ok(Method::GET, "h:80").is_err());
        assert!(ok(Method::CONNECT, "h:443").is_err());
        assert!(ok(Method::CONNECT, "/").is_err());
    }

    fn request(version: Version, hosts: &[&str]) -> Request {
        let mut builder = Request::builder().uri("/").version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn host_counts() {
        assert!(check_host(&request(Version::HTTP_11, &["t"])).is_ok());
        assert!(check_host(&request(Version::HTTP_11, &[])).is_err());
        assert!(check_host(&request(Version::HTTP_11, &["t", "t"])).is_err());
        assert!(check_host(&request(Version::HTTP_10, &[])).is_ok());
        assert!(check_host(&request(Version::HTTP_10, &["t", "u"])).is_err());
    }

    #[test]
    fn screen_faults_get_their_status() {
        let status = |fault| rejection(Some(fault)).into_response().status().as_u16();
        assert_eq!(status(Fault::RequestLineTooLong), 414);
        assert_eq!(status(Fault::FieldTooLarge), 431);
        assert_eq!(status(Fault::TooManyFields), 431);
        assert_eq!(status(Fault::HeadTooLarge), 431);
        assert_eq!(status(Fault::BareLf), 400);
        assert_eq!(status(Fault::TransferEncoding), 400);
        assert_eq!(status(Fault::UnknownTransferCoding), 501);
        assert_eq!(rejection(None).into_response().status().as_u16(), 400);
    }
}
