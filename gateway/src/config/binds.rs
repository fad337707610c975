//! How a bind is written: gunicorn's text (`8000`, `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`) on
//! the command line and in YAML, and in YAML also a mapping with TLS files or the PROXY
//! protocol; and which binds cannot both be listened on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::values::resolve_path;
use super::{BindAddr, BindConfig, TlsFiles};

/// A bind as gunicorn takes it: a bare port means every IPv4 interface.
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("invalid bind {text:?}: {e}; use PORT, HOST:PORT or [IPv6]:PORT"))?;
    addrs
        .next()
        .ok_or_else(|| format!("bind {text:?} resolves to no address"))
}

/// A bind as gunicorn takes it, `unix:PATH` included (relative to `base`).
pub fn parse_bind_addr(base: &Path, text: &str) -> Result<BindAddr, String> {
    match text.trim().strip_prefix("unix:") {
        Some("") => Err(format!("invalid bind {text:?}: unix: needs a path")),
        Some(path) => Ok(BindAddr::Unix(resolve_path(base, path))),
        None => parse_bind(text).map(BindAddr::Tcp),
    }
}

/// Two binds that cannot both be listened on: the same address, or the same port where one side
/// is the wildcard of the same family. Port 0 is a fresh port each time, so it never clashes.
pub(super) fn binds_clash(a: &BindAddr, b: &BindAddr) -> bool {
    match (a, b) {
        (BindAddr::Tcp(a), BindAddr::Tcp(b)) => {
            a.port() != 0
                && a.port() == b.port()
                && a.is_ipv4() == b.is_ipv4()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        (BindAddr::Unix(a), BindAddr::Unix(b)) => a == b,
        _ => false,
    }
}

/// `8000`, `"8000"`, `"127.0.0.1:8000"`, `"[::1]:8000"` or `"localhost:8000"`; for an app, also
/// `{addr: ..., certfile: ..., keyfile: ..., ca_certs: ..., proxy_protocol: true}` for TLS or
/// the PROXY protocol.
#[derive(Debug, Clone)]
pub(super) enum BindSpec {
    Port(u16),
    Text(String),
    Map {
        addr: Box<BindSpec>,
        certfile: Option<String>,
        keyfile: Option<String>,
        ca_certs: Option<String>,
        proxy_protocol: bool,
    },
}

impl BindSpec {
    /// A TCP address (the admin bind's kind).
    pub(super) fn addr(&self) -> Result<SocketAddr, String> {
        match self.bind_addr(Path::new("."))? {
            BindAddr::Tcp(addr) => Ok(addr),
            BindAddr::Unix(_) => Err("a HOST:PORT, not a Unix socket".into()),
        }
    }

    fn bind_addr(&self, base: &Path) -> Result<BindAddr, String> {
        match self {
            BindSpec::Port(port) => Ok(BindAddr::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                *port,
            ))),
            BindSpec::Text(text) => parse_bind_addr(base, text),
            BindSpec::Map { addr, .. } => addr.bind_addr(base),
        }
    }

    /// The bind, its paths resolved against `base`.
    pub(super) fn bind(
        &self,
        base: &Path,
        unix_mode: u32,
        backlog: u32,
    ) -> Result<BindConfig, String> {
        let addr = self.bind_addr(base)?;
        let BindSpec::Map {
            certfile,
            keyfile,
            ca_certs,
            proxy_protocol,
            ..
        } = self
        else {
            return Ok(BindConfig {
                addr,
                tls: None,
                unix_mode,
                backlog,
                proxy_protocol: false,
            });
        };
        let tls = match (certfile, keyfile) {
            (Some(certfile), Some(keyfile)) => Some(TlsFiles {
                certfile: resolve_path(base, certfile),
                keyfile: resolve_path(base, keyfile),
                ca_certs: ca_certs.as_deref().map(|ca| resolve_path(base, ca)),
            }),
            (None, None) if ca_certs.is_none() => None,
            (None, None) => {
                return Err(format!(
                    "bind {addr}: `ca_certs` needs `certfile` and `keyfile`"
                ))
            }
            (Some(_), None) => return Err(format!("bind {addr}: `certfile` needs `keyfile`")),
            (None, Some(_)) => return Err(format!("bind {addr}: `keyfile` needs `certfile`")),
        };
        Ok(BindConfig {
            addr,
            tls,
            unix_mode,
            backlog,
            proxy_protocol: *proxy_protocol,
        })
    }
}

impl<'de> Deserialize<'de> for BindSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<BindSpec, D::Error> {
        de.deserialize_any(BindSpecVisitor)
    }
}

struct BindSpecVisitor;

impl<'de> serde::de::Visitor<'de> for BindSpecVisitor {
    type Value = BindSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a port, \"HOST:PORT\", \"unix:PATH\", or {addr: ..., certfile: ..., keyfile: ...}",
        )
    }

    fn visit_u64<E: serde::de::Error>(self, port: u64) -> Result<BindSpec, E> {
        u16::try_from(port)
            .map(BindSpec::Port)
            .map_err(|_| E::custom(format!("port {port} is not in 0-65535")))
    }

    fn visit_i64<E: serde::de::Error>(self, port: i64) -> Result<BindSpec, E> {
        u64::try_from(port)
            .map_err(|_| E::custom(format!("port {port} is not in 0-65535")))
            .and_then(|port| self.visit_u64(port))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<BindSpec, E> {
        Ok(BindSpec::Text(text.to_owned()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<BindSpec, A::Error> {
        const FIELDS: &[&str] = &["addr", "certfile", "keyfile", "ca_certs", "proxy_protocol"];
        let (mut addr, mut certfile, mut keyfile, mut ca_certs) = (None, None, None, None);
        let mut proxy_protocol = false;
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "addr" => {
                    addr = Some(map.next_value::<BindSpec>()?);
                    continue;
                }
                "proxy_protocol" => {
                    proxy_protocol = map.next_value::<bool>()?;
                    continue;
                }
                "certfile" => &mut certfile,
                "keyfile" => &mut keyfile,
                "ca_certs" => &mut ca_certs,
                other => return Err(serde::de::Error::unknown_field(other, FIELDS)),
            };
            *slot = Some(map.next_value::<String>()?);
        }
        let addr = match addr {
            Some(BindSpec::Map { .. }) => {
                return Err(serde::de::Error::custom(
                    "`addr` must be a port or HOST:PORT",
                ))
            }
            Some(addr) => addr,
            None => return Err(serde::de::Error::missing_field("addr")),
        };
        Ok(BindSpec::Map {
            addr: Box::new(addr),
            certfile,
            keyfile,
            ca_certs,
            proxy_protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_never_clashes_and_wildcards_do() {
        let any = |p| BindAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
        let local = |p| BindAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
        assert!(!binds_clash(&local(0), &local(0)));
        assert!(binds_clash(&any(80), &local(80)));
        assert!(!binds_clash(&local(80), &local(81)));
        assert!(!binds_clash(
            &local(80),
            &BindAddr::Tcp("[::1]:80".parse().unwrap())
        ));
        let unix = |p: &str| BindAddr::Unix(p.into());
        assert!(binds_clash(&unix("/s"), &unix("/s")));
        assert!(!binds_clash(&unix("/s"), &unix("/t")));
    }

    #[test]
    fn text_binds() {
        assert_eq!(parse_bind("8000").unwrap(), "0.0.0.0:8000".parse().unwrap());
        assert_eq!(parse_bind("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_bind("nonsense:port").is_err());
        assert_eq!(
            parse_bind_addr(Path::new("/etc"), "unix:run/a.sock"),
            Ok(BindAddr::Unix("/etc/run/a.sock".into()))
        );
        assert!(parse_bind_addr(Path::new("/"), "unix:").is_err());
    }
}
