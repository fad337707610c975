//! Believing a load balancer: who the client is, which scheme it used and which host it asked for,
//! from `Forwarded` (RFC 7239) or `X-Forwarded-For/-Proto/-Host`, but only when the peer is one
//! of `forwarded_allow_ips`. From any other peer those headers are plain headers and change
//! nothing.
//!
//! Each proxy appends the client it saw, so the list is read from the right: the rightmost entry
//! was written by our peer (trusted); while an entry names another trusted proxy, the one before
//! it is believed too. The first untrusted entry is the client (nginx's `real_ip_recursive`). A
//! client can put anything at the left of the list, and nothing left of the first untrusted entry
//! is ever used. An entry that does not parse ends the walk where it is.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderValue, FORWARDED};
use ipnet::IpNet;
use sluice_proto::Scheme;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// What the request looks like from the outermost trusted proxy's side. `None` fields: nothing
/// believable was sent, keep the connection's own value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Forwarded {
    pub(crate) client: Option<SocketAddr>,
    pub(crate) scheme: Option<Scheme>,
    pub(crate) host: Option<HeaderValue>,
}

pub(crate) fn is_trusted(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|net| net.contains(&ip))
}

/// Whether a connection's peer may speak for its clients (forwarded headers, a PROXY protocol
/// header). A peer on a Unix socket (`None`) is a process on this machine allowed to open the
/// socket's file, and is trusted as 127.0.0.1 would be: an nginx in front is the usual one.
pub(crate) fn trusts_peer(allow: &[IpNet], peer: Option<SocketAddr>) -> bool {
    let ip = peer.map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |p| p.ip());
    is_trusted(allow, ip)
}

/// The forwarded view of a request that came from `peer`, if `peer` is trusted.
pub(crate) fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, allow: &[IpNet]) -> Forwarded {
    if !trusts_peer(allow, peer) {
        return Forwarded::default();
    }
    if headers.contains_key(FORWARDED) {
        return from_forwarded(headers, allow);
    }
    from_x_forwarded(headers, allow)
}

/// All values of a list header, split at commas, in order.
fn list<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// Walks `nodes` from the right while they name trusted proxies; returns the index of the entry
/// that stands for the client, and its address when it is one.
fn walk<'a>(
    nodes: impl DoubleEndedIterator<Item = (usize, Option<&'a str>)>,
    allow: &[IpNet],
) -> Option<(usize, Option<SocketAddr>)> {
    let mut found = None;
    for (index, node) in nodes.rev() {
        let addr = node.and_then(parse_node);
        found = Some((index, addr));
        match addr {
            Some(addr) if is_trusted(allow, addr.ip()) => continue,
            _ => break,
        }
    }
    found
}

fn from_x_forwarded(headers: &HeaderMap, allow: &[IpNet]) -> Forwarded {
    let hops = list(headers, X_FORWARDED_FOR);
    let protos = list(headers, X_FORWARDED_PROTO);
    let hosts = list(headers, X_FORWARDED_HOST);
    let chosen = walk(hops.iter().map(|h| Some(*h)).enumerate(), allow);
    // A proto or host list written hop by hop lines up with the address list; otherwise only
    // its last entry, written by our peer, is believed.
    let at = |values: &[&'_ str]| -> Option<String> {
        match chosen {
            Some((index, _)) if values.len() == hops.len() => values.get(index),
            _ => values.last(),
        }
        .map(|v| v.to_string())
    };
    Forwarded {
        client: chosen.and_then(|(_, addr)| addr),
        scheme: at(&protos).as_deref().and_then(parse_scheme),
        host: at(&hosts).as_deref().and_then(parse_host),
    }
}

fn from_forwarded(headers: &HeaderMap, allow: &[IpNet]) -> Forwarded {
    let mut elements = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let Ok(value) = value.to_str() else {
            return Forwarded::default();
        };
        match parse_forwarded(value) {
            Some(parsed) => elements.extend(parsed),
            // One malformed header makes the whole chain unreadable: believe none of it.
            None => return Forwarded::default(),
        }
    }
    let chosen = walk(
        elements.iter().map(|e| e.node_for.as_deref()).enumerate(),
        allow,
    );
    let Some((index, client)) = chosen else {
        return Forwarded::default();
    };
    let element = &elements[index];
    Forwarded {
        client,
        scheme: element.proto.as_deref().and_then(parse_scheme),
        host: element.host.as_deref().and_then(parse_host),
    }
}

#[derive(Debug, Default)]
struct Element {
    node_for: Option<String>,
    proto: Option<String>,
    host: Option<String>,
}

/// RFC 7239 section 4: `forwarded-element *( "," forwarded-element )`, each element
/// `pair *( ";" pair )`, a pair `token "=" ( token / quoted-string )`. `None` if malformed.
fn parse_forwarded(value: &str) -> Option<Vec<Element>> {
    let mut elements = vec![Element::default()];
    let mut rest = value.trim_start();
    loop {
        // An empty element (",," or a trailing comma) is allowed by the list syntax.
        if let Some(after) = rest.strip_prefix(',') {
            elements.push(Element::default());
            rest = after.trim_start();
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.bytes().all(is_tchar) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &quoted[end?..];
            value = out;
        } else {
            let len = rest.bytes().take_while(|&b| is_tchar(b)).count();
            if len == 0 {
                return None;
            }
            value = rest[..len].to_owned();
            rest = &rest[len..];
        }
        let element = elements.last_mut().expect("never empty");
        let slot = match key.to_ascii_lowercase().as_str() {
            "for" => &mut element.node_for,
            "proto" => &mut element.proto,
            "host" => &mut element.host,
            _ => &mut None,
        };
        if slot.is_some() {
            // A parameter repeated within one element (RFC 7239 section 4).
            return None;
        }
        *slot = Some(value);
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(';') {
            rest = after.trim_start();
        } else if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    elements.retain(|e| e.node_for.is_some() || e.proto.is_some() || e.host.is_some());
    Some(elements)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:8080`. A
/// node without a port gets port 0. `unknown` and obfuscated names are not addresses.
fn parse_node(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip.to_canonical(), 0));
    }
    text.parse::<SocketAddr>()
        .ok()
        .map(|addr| SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

fn parse_scheme(text: &str) -> Option<Scheme> {
    if text.eq_ignore_ascii_case("https") {
        Some(Scheme::Https)
    } else if text.eq_ignore_ascii_case("http") {
        Some(Scheme::Http)
    } else {
        None
    }
}

/// A host as a Host header may carry it: `name`, `name:port`, `[v6]:port`; nothing else.
fn parse_host(text: &str) -> Option<HeaderValue> {
    let ok = !text.is_empty()
        && text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    ok.then(|| HeaderValue::from_str(text).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Vec<IpNet> {
        vec![
            "127.0.0.1/32".parse().unwrap(),
            "::1/128".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn client(f: &Forwarded) -> Option<String> {
        f.client.map(|a| a.ip().to_string())
    }

    #[test]
    fn untrusted_peers_change_nothing() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;proto=https"),
        ]);
        assert_eq!(
            resolve(peer("198.51.100.1"), &h, &allow()),
            Forwarded::default()
        );
        assert_eq!(resolve(peer("127.0.0.1"), &h, &[]), Forwarded::default());
    }

    #[test]
    fn a_unix_socket_peer_is_trusted_as_localhost_is() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let f = resolve(None, &h, &allow());
        assert_eq!(client(&f).as_deref(), Some("203.0.113.7"));
        let only_lb: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(resolve(None, &h, &only_lb), Forwarded::default());
    }

    #[test]
    fn x_forwarded_headers_are_read_from_the_right() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example.com"),
        ]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        // 10.1.2.3 is one of ours; 203.0.113.7 is the client; 6.6.6.6 is whatever it claimed.
        assert_eq!(client(&f).as_deref(), Some("203.0.113.7"));
        assert_eq!(f.scheme, Some(Scheme::Https));
        assert_eq!(f.host.unwrap(), "shop.example.com");

        // Two header lines are one list; a proto list aligned with the hops is read per hop.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https, http"),
        ]);
        let f = resolve(peer("::1"), &h, &allow());
        assert_eq!(client(&f).as_deref(), Some("203.0.113.7"));
        assert_eq!(f.scheme, Some(Scheme::Https));

        // All trusted: the leftmost is the client.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.2.3")]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        assert_eq!(client(&f).as_deref(), Some("10.9.9.9"));

        // Garbage at the right stops the walk before anything is believed.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, nonsense")]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &allow()).client, None);

        // Ports and brackets.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:4711")]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        assert_eq!(f.client, Some("[2001:db8::5]:4711".parse().unwrap()));

        // A scheme or host that is not one is ignored.
        let h = headers(&[
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.com/path"),
        ]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        assert_eq!((f.scheme, f.host), (None, None));
    }

    #[test]
    fn forwarded_header_wins_and_is_read_per_element() {
        let h = headers(&[
            (
                "forwarded",
                "for=6.6.6.6;proto=http, for=\"[2001:db8::7]:1234\";proto=https;host=\"shop.example.com:8443\"",
            ),
            ("forwarded", "for=10.1.2.3;proto=http"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        assert_eq!(f.client, Some("[2001:db8::7]:1234".parse().unwrap()));
        assert_eq!(f.scheme, Some(Scheme::Https));
        assert_eq!(f.host.unwrap(), "shop.example.com:8443");

        let h = headers(&[("forwarded", "for=unknown;proto=https")]);
        let f = resolve(peer("127.0.0.1"), &h, &allow());
        assert_eq!((f.client, f.scheme), (None, Some(Scheme::Https)));

        for bad in [
            "for=1.2.3.4;for=5.6.7.8",
            "for=\"1.2.3.4",
            "for 1.2.3.4",
            "=1.2.3.4",
            "for=1.2.3.4 proto=https",
        ] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(
                resolve(peer("127.0.0.1"), &h, &allow()),
                Forwarded::default(),
                "{bad}"
            );
        }
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        assert!(is_trusted(&allow(), "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_trusted(
            &allow(),
            "::ffff:198.51.100.1".parse().unwrap()
        ));
    }
}
