//! Configuration: the YAML route table (`sluice run/check --config`) and the one-app command line
//! (`sluice serve`) both become a [`Config`]. Every YAML error names file, line and column.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_PYTHON: &str = "python3";
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The gateway's runtime threads when none are configured: half the CPUs this process may use,
/// at least one. The Python workers do most of the work and need the rest; on 2 CPUs one
/// thread served small requests 12-14% faster than two (less hand-over between threads).
pub fn default_gateway_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages (`None` for the command line).
    pub source: Option<PathBuf>,
    pub apps: Vec<AppConfig>,
    /// The admin bind (`/metrics`, `/healthz`, `/readyz`); off unless set.
    pub admin: Option<SocketAddr>,
    /// Open client connections the whole gateway holds at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// Threads of the gateway's async runtime (HTTP, static files, forwarding).
    pub gateway_threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    pub name: String,
    /// `module:callable`.
    pub app: String,
    pub chdir: Option<PathBuf>,
    pub binds: Vec<BindConfig>,
    pub workers: usize,
    pub threads: usize,
    pub python: PathBuf,
    /// How long a request may run in Python before it gets a 504 and its worker is replaced.
    pub timeout: Duration,
    /// How long in-flight requests get on shutdown.
    pub graceful_timeout: Duration,
    /// How long a request may wait for a free Python thread before it gets a 503.
    pub queue_timeout: Duration,
    pub max_body: u64,
    /// Replace a worker after this many requests (plus up to `max_requests_jitter`), if set.
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    /// Replace a worker whose resident memory is above this many bytes, if set.
    pub max_rss: Option<u64>,
    /// Replace a worker after it has run this long, if set.
    pub worker_lifetime: Option<Duration>,
    /// What the gateway does at the edge for this app, before and around Python.
    pub edge: EdgeConfig,
}

/// Where a bind listens: a TCP address, or a Unix socket's path (`unix:/run/app.sock`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The mode of a Unix-socket bind's file when none is configured: the owner and its group may
/// connect (an nginx in the group), nobody else.
pub const DEFAULT_UNIX_MODE: u32 = 0o660;

/// One address an app listens on, and how connections to it are secured.
#[derive(Debug, Clone, PartialEq)]
pub struct BindConfig {
    pub addr: BindAddr,
    /// TLS terminated here with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// The permission bits of a Unix socket's file.
    pub unix_mode: u32,
    /// Connections start with a PROXY protocol header (v1 or v2), believed from
    /// `forwarded_allow_ips`.
    pub proxy_protocol: bool,
}

impl BindConfig {
    pub fn plain(addr: SocketAddr) -> BindConfig {
        BindConfig {
            addr: BindAddr::Tcp(addr),
            tls: None,
            unix_mode: DEFAULT_UNIX_MODE,
            proxy_protocol: false,
        }
    }
}

impl fmt::Display for BindConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tls {
            None => write!(f, "{}", self.addr)?,
            Some(tls) => write!(f, "{} (TLS: {})", self.addr, tls)?,
        }
        if self.proxy_protocol {
            write!(f, " (PROXY protocol)")?;
        }
        Ok(())
    }
}

/// A TLS bind's files, by gunicorn's names: the certificate chain (leaf first) and its private
/// key, PEM; and, for client-certificate verification, the CAs a client's certificate must
/// chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub ca_certs: Option<PathBuf>,
}

impl fmt::Display for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certfile {}, keyfile {}",
            self.certfile.display(),
            self.keyfile.display()
        )?;
        if let Some(ca) = &self.ca_certs {
            write!(f, ", client certificates verified against {}", ca.display())?;
        }
        Ok(())
    }
}

/// The app's settings for the HTTP edge: limits, slow clients, static files, proxy headers, logs.
/// The names are gunicorn's where gunicorn has the setting.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Longest request line (method, target, version) in bytes; longer gets 414.
    pub limit_request_line: usize,
    /// Most header fields in a request; more gets 431.
    pub limit_request_fields: usize,
    /// Largest single header field (name, colon, value) in bytes; larger gets 431.
    pub limit_request_field_size: usize,
    /// How long a client has to send a whole request head: from accept on a new connection,
    /// from the head's first byte on a kept-alive one. Past it: 408 (if it began one) and close.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open waiting for the first byte of its
    /// next request.
    pub keepalive: Duration,
    /// Slowest request body upload accepted, in bytes per second, averaged from the end of the
    /// head after a few seconds' grace (0: no minimum). A body slower than this is cut off with
    /// 408.
    pub min_body_rate: u64,
    /// Response body bytes the gateway holds per response for a client that reads slower than
    /// the app writes; the app's thread is free once the rest fits in this.
    pub response_buffer: u64,
    /// URL prefix (starting and ending with `/`) to directory, served without Python.
    pub static_dirs: Vec<(String, PathBuf)>,
    /// `max-age` sent with `immutable` for static files whose name carries a content hash
    /// (e.g. `app.3f2a9c1b0e4d.css`); off unless set.
    pub static_hashed_max_age: Option<Duration>,
    /// Compress compressible responses (gzip, br) when the client accepts it.
    pub compress: bool,
    /// Responses smaller than this are not compressed.
    pub compress_min_size: u64,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed.
    pub forwarded_allow_ips: Vec<ipnet::IpNet>,
    pub access_log: AccessLog,
    /// The HTTP versions the app's binds speak.
    pub http: HttpVersions,
    /// Streams an HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
}

pub const DEFAULT_LIMIT_REQUEST_LINE: usize = 8190;
pub const DEFAULT_LIMIT_REQUEST_FIELDS: usize = 100;
pub const DEFAULT_LIMIT_REQUEST_FIELD_SIZE: usize = 8190;
/// The largest `limit_request_field_size`: a field's name travels to the worker with a 16-bit
/// length (and the whole head is capped at `MAX_HEAD_BYTES` by the framing screen anyway).
pub const MAX_LIMIT_REQUEST_FIELD_SIZE: usize = 65535;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;
pub const DEFAULT_RESPONSE_BUFFER_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_COMPRESS_MIN_SIZE: u64 = 1024;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            limit_request_line: DEFAULT_LIMIT_REQUEST_LINE,
            limit_request_fields: DEFAULT_LIMIT_REQUEST_FIELDS,
            limit_request_field_size: DEFAULT_LIMIT_REQUEST_FIELD_SIZE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            response_buffer: DEFAULT_RESPONSE_BUFFER_BYTES,
            static_dirs: Vec::new(),
            static_hashed_max_age: None,
            compress: false,
            compress_min_size: DEFAULT_COMPRESS_MIN_SIZE,
            forwarded_allow_ips: default_forwarded_allow_ips(),
            access_log: AccessLog::Off,
            http: HttpVersions::Auto,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// The HTTP versions a bind speaks (`http`, `--http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersions {
    /// HTTP/1.1 and HTTP/2: by ALPN over TLS, by the client's preface in clear text (h2c with
    /// prior knowledge).
    #[default]
    Auto,
    /// HTTP/1.1 (and 1.0) only.
    Http1,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge in clear text.
    Http2,
}

impl HttpVersions {
    pub fn parse(text: &str) -> Result<HttpVersions, String> {
        match text.trim() {
            "auto" => Ok(HttpVersions::Auto),
            "1" | "1.1" => Ok(HttpVersions::Http1),
            "2" => Ok(HttpVersions::Http2),
            other => Err(format!("invalid http {other:?}; use 1, 2 or auto")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersions::Auto => "auto",
            HttpVersions::Http1 => "1",
            HttpVersions::Http2 => "2",
        }
    }
}

fn http_versions<'de, D: Deserializer<'de>>(de: D) -> Result<Option<HttpVersions>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => HttpVersions::parse(&n.to_string()),
        NumberOrText::Float(f) => HttpVersions::parse(&f.to_string()),
        NumberOrText::Text(text) => HttpVersions::parse(&text),
    }
    .map(Some)
    .map_err(serde::de::Error::custom)
}

/// The access log's format; each line goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    Off,
    /// nginx's and gunicorn's combined format, with the request id and times appended.
    Combined,
    /// One JSON object per request.
    Json,
}

pub fn default_forwarded_allow_ips() -> Vec<ipnet::IpNet> {
    vec![
        ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ipnet::IpNet::from(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
    ]
}

/// gunicorn's `forwarded_allow_ips`: a comma-separated list of addresses and CIDR networks,
/// or `*` for every peer.
pub fn parse_allow_ips(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let mut nets = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        nets.extend(parse_allow_ip(item)?);
    }
    Ok(nets)
}

fn parse_allow_ip(item: &str) -> Result<Vec<ipnet::IpNet>, String> {
    if item == "*" {
        return Ok(vec![
            "0.0.0.0/0".parse().expect("valid"),
            "::/0".parse().expect("valid"),
        ]);
    }
    if let Ok(net) = item.parse::<ipnet::IpNet>() {
        return Ok(vec![net.trunc()]);
    }
    item.parse::<IpAddr>()
        .map(|ip| vec![ipnet::IpNet::from(ip)])
        .map_err(|_| format!("invalid address or network {item:?}; use e.g. 10.0.0.0/8, ::1 or *"))
}

/// `--static /static/=DIR`: a URL prefix and the directory it serves.
pub fn parse_static(text: &str) -> Result<(String, PathBuf), String> {
    let (prefix, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid static mapping {text:?}; use /static/=DIR"))?;
    Ok((normalize_static_prefix(prefix)?, PathBuf::from(dir)))
}

/// A static prefix as the router matches it: starting and ending with `/`.
fn normalize_static_prefix(prefix: &str) -> Result<String, String> {
    let prefix = prefix.trim();
    if !prefix.starts_with('/') {
        return Err(format!("static prefix {prefix:?} must start with /"));
    }
    if prefix.contains(['?', '#', '%', '\\']) || prefix.split('/').any(|p| p == "..") {
        return Err(format!("static prefix {prefix:?} must be a plain path"));
    }
    Ok(if prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    })
}

/// A configuration error with its place in the file, printed as `FILE:LINE:COLUMN: message`
/// followed by the offending lines.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub snippet: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    python: Option<String>,
    admin: Option<Spanned<BindSpec>>,
    max_connections: Option<usize>,
    gateway_threads: Option<Spanned<usize>>,
    apps: Spanned<IndexMap<String, Spanned<FileApp>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    /// Optional here so that a missing one is reported at the app, not where its mapping ends.
    app: Option<String>,
    chdir: Option<String>,
    bind: Option<Spanned<Vec<Spanned<BindSpec>>>>,
    workers: Option<usize>,
    #[serde(alias = "thread_workers")]
    threads: Option<usize>,
    python: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    graceful_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    queue_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "size")]
    max_body: Option<u64>,
    max_requests: Option<u64>,
    max_requests_jitter: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    max_rss: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    worker_lifetime: Option<Duration>,
    limit_request_line: Option<usize>,
    limit_request_fields: Option<usize>,
    limit_request_field_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    keepalive: Option<Duration>,
    #[serde(default, deserialize_with = "size")]
    min_body_rate: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    response_buffer: Option<u64>,
    #[serde(rename = "static")]
    static_dirs: Option<Spanned<IndexMap<String, String>>>,
    #[serde(default, deserialize_with = "duration")]
    static_hashed_max_age: Option<Duration>,
    compress: Option<bool>,
    #[serde(default, deserialize_with = "size")]
    compress_min_size: Option<u64>,
    forwarded_allow_ips: Option<Spanned<AllowIps>>,
    access_log: Option<AccessLog>,
    #[serde(default, deserialize_with = "http_versions")]
    http: Option<HttpVersions>,
    #[serde(default, deserialize_with = "unix_mode")]
    unix_mode: Option<u32>,
    h2_max_concurrent_streams: Option<u32>,
}

/// `forwarded_allow_ips` as a list or as gunicorn's comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AllowIps {
    List(Vec<String>),
    Text(String),
}

/// `8000`, `"8000"`, `"127.0.0.1:8000"`, `"[::1]:8000"` or `"localhost:8000"`; for an app, also
/// `{addr: ..., certfile: ..., keyfile: ..., ca_certs: ..., proxy_protocol: true}` for TLS or
/// the PROXY protocol.
#[derive(Debug, Clone)]
enum BindSpec {
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
    fn addr(&self) -> Result<SocketAddr, String> {
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
    fn bind(&self, base: &Path, unix_mode: u32) -> Result<BindConfig, String> {
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

/// The app (and its line) that already holds a bind clashing with `addr`, if any.
fn taken_by<'s>(seen: &'s [(BindAddr, String, u64)], addr: &BindAddr) -> Option<(&'s str, u64)> {
    seen.iter()
        .find(|(seen, _, _)| match (seen, addr) {
            (BindAddr::Tcp(a), BindAddr::Tcp(b)) => binds_clash(*a, *b),
            (BindAddr::Unix(a), BindAddr::Unix(b)) => a == b,
            _ => false,
        })
        .map(|(_, app, line)| (app.as_str(), *line))
}

/// A bind as gunicorn takes it, `unix:PATH` included (relative to `base`).
pub fn parse_bind_addr(base: &Path, text: &str) -> Result<BindAddr, String> {
    match text.trim().strip_prefix("unix:") {
        Some("") => Err(format!("invalid bind {text:?}: unix: needs a path")),
        Some(path) => Ok(BindAddr::Unix(resolve_path(base, path))),
        None => parse_bind(text).map(BindAddr::Tcp),
    }
}

/// A Unix socket file's mode, in octal as chmod takes it: `660`, `0660`, `0o660`.
pub fn parse_unix_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|&mode| mode <= 0o777)
        .ok_or_else(|| format!("invalid unix_mode {text:?}; give octal permission bits like 0660"))
}

fn unix_mode<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    // A number is read by its digits, so `unix_mode: 660` is rw-rw---- like `"0660"`.
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => parse_unix_mode(&n.to_string()),
        NumberOrText::Float(f) => parse_unix_mode(&f.to_string()),
        NumberOrText::Text(text) => parse_unix_mode(&text),
    }
    .map(Some)
    .map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Float(f64),
    Text(String),
}

/// A duration: `30s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds >= 0.0 && seconds.is_finite() {
            return Ok(Duration::from_secs_f64(seconds));
        }
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 30s, 500ms, 2m"))
}

/// A size: `10MiB`, `512KiB`, `1GB`, or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("invalid size {text:?} ({e}); use e.g. 10MiB, 512KiB"))
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => Ok(Some(Duration::from_secs(n))),
        NumberOrText::Float(f) if f >= 0.0 && f.is_finite() => Ok(Some(Duration::from_secs_f64(f))),
        NumberOrText::Float(f) => Err(serde::de::Error::custom(format!("invalid duration {f}"))),
        NumberOrText::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => Ok(Some(n)),
        NumberOrText::Float(f) => Err(serde::de::Error::custom(format!("invalid size {f}"))),
        NumberOrText::Text(text) => parse_size(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

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

/// Two binds that cannot both be listened on: the same address, or the same port where one side
/// is the wildcard of the same family. Port 0 is a fresh port each time, so it never clashes.
fn binds_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `text` against `base`, made absolute and without `.` parts, so that a worker finds it
/// whatever its working directory.
fn resolve_path(base: &Path, text: &str) -> PathBuf {
    let joined = base.join(text);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    absolute.components().collect()
}

/// An interpreter given with a slash is a path (relative ones resolve against `base`); a bare
/// name is looked up on PATH when the worker starts.
pub fn resolve_python(base: &Path, text: &str) -> PathBuf {
    if text.contains('/') {
        resolve_path(base, text)
    } else {
        PathBuf::from(text)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
            snippet: String::new(),
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let error_at = |line: u64, column: u64, message: String| ConfigError {
            file: path.to_owned(),
            line,
            column,
            snippet: snippet(text, line, column),
            message,
        };
        let file: FileConfig = serde_saphyr::from_str(text).map_err(|err| {
            let (line, column) = err
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            // The library's message starts with its own "error: line L column C:"; keep what follows.
            let full = err.to_string();
            let first = full.lines().next().unwrap_or_default();
            let message = first
                .split_once(&format!("line {line} column {column}: "))
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_else(|| first.trim_start_matches("error: ").to_owned());
            error_at(line, column, message)
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let default_python = file.python.as_deref().unwrap_or(DEFAULT_PYTHON);

        if file.apps.value.is_empty() {
            let at = &file.apps.referenced;
            return Err(error_at(
                at.line(),
                at.column(),
                "`apps` names no app".into(),
            ));
        }
        let mut apps: Vec<AppConfig> = Vec::new();
        let mut seen: Vec<(BindAddr, String, u64)> = Vec::new();
        for (name, spanned) in &file.apps.value {
            let at = &spanned.referenced;
            let app = &spanned.value;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(error_at(
                    at.line(),
                    at.column(),
                    format!("app name {name:?} may hold only letters, digits, '-', '_' and '.'"),
                ));
            }
            let callable = match app.app.as_deref().map(str::trim) {
                None => {
                    let message = format!("app {name}: missing field `app` (module:callable)");
                    return Err(error_at(at.line(), at.column(), message));
                }
                Some("") => {
                    let message = format!("app {name}: `app` is empty; give module:callable");
                    return Err(error_at(at.line(), at.column(), message));
                }
                Some(callable) => callable.to_owned(),
            };
            let Some(bind) = &app.bind else {
                return Err(error_at(
                    at.line(),
                    at.column(),
                    format!("app {name}: missing field `bind`"),
                ));
            };
            if bind.value.is_empty() {
                let at = &bind.referenced;
                return Err(error_at(
                    at.line(),
                    at.column(),
                    format!("app {name}: `bind` is empty"),
                ));
            }
            let mut binds = Vec::new();
            for spec in &bind.value {
                let at = &spec.referenced;
                let unix_mode = app.unix_mode.unwrap_or(DEFAULT_UNIX_MODE);
                let bind = spec
                    .value
                    .bind(&base, unix_mode)
                    .map_err(|e| error_at(at.line(), at.column(), format!("app {name}: {e}")))?;
                let addr = bind.addr.clone();
                if let Some((other, line)) = taken_by(&seen, &addr) {
                    return Err(error_at(
                        at.line(),
                        at.column(),
                        format!(
                            "app {name}: bind {addr} is already taken by app {other} (line {line})"
                        ),
                    ));
                }
                seen.push((addr, name.clone(), at.line()));
                binds.push(bind);
            }
            for (field, value) in [("workers", app.workers), ("threads", app.threads)] {
                if value == Some(0) {
                    return Err(error_at(
                        at.line(),
                        at.column(),
                        format!("app {name}: `{field}` must be at least 1"),
                    ));
                }
            }
            let edge = file_edge(app, &base).map_err(|(at, message)| {
                let at = at.unwrap_or(spanned.referenced);
                error_at(at.line(), at.column(), format!("app {name}: {message}"))
            })?;
            apps.push(AppConfig {
                name: name.clone(),
                app: callable,
                chdir: app.chdir.as_deref().map(|dir| resolve_path(&base, dir)),
                binds,
                workers: app.workers.unwrap_or(1),
                threads: app.threads.unwrap_or(1),
                python: resolve_python(&base, app.python.as_deref().unwrap_or(default_python)),
                timeout: app.timeout.unwrap_or(DEFAULT_TIMEOUT),
                graceful_timeout: app.graceful_timeout.unwrap_or(DEFAULT_GRACEFUL_TIMEOUT),
                queue_timeout: app.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT),
                max_body: app.max_body.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_requests: app.max_requests.filter(|&n| n > 0),
                max_requests_jitter: app.max_requests_jitter.unwrap_or(0),
                max_rss: app.max_rss.filter(|&n| n > 0),
                worker_lifetime: app.worker_lifetime.filter(|d| !d.is_zero()),
                edge,
            });
        }
        let admin = match &file.admin {
            None => None,
            Some(spec) => {
                let at = &spec.referenced;
                if let BindSpec::Map { .. } = spec.value {
                    return Err(error_at(
                        at.line(),
                        at.column(),
                        "admin: a plain HOST:PORT (the admin bind has no TLS or PROXY protocol)"
                            .into(),
                    ));
                }
                let addr = spec
                    .value
                    .addr()
                    .map_err(|e| error_at(at.line(), at.column(), format!("admin: {e}")))?;
                if let Some((other, line)) = taken_by(&seen, &BindAddr::Tcp(addr)) {
                    return Err(error_at(
                        at.line(),
                        at.column(),
                        format!("admin bind {addr} is already taken by app {other} (line {line})"),
                    ));
                }
                Some(addr)
            }
        };
        if file.max_connections == Some(0) {
            return Err(error_at(
                1,
                1,
                "`max_connections` must be at least 1".into(),
            ));
        }
        let gateway_threads = match file.gateway_threads {
            None => default_gateway_threads(),
            Some(threads) if threads.value == 0 => {
                let at = &threads.referenced;
                return Err(error_at(
                    at.line(),
                    at.column(),
                    "`gateway_threads` must be at least 1".into(),
                ));
            }
            Some(threads) => threads.value,
        };
        Ok(Config {
            source: Some(path.to_owned()),
            apps,
            admin,
            max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            gateway_threads,
        })
    }

    /// The route table as `sluice check` prints it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for app in &self.apps {
            let binds: Vec<String> = app.binds.iter().map(|b| b.to_string()).collect();
            out.push_str(&format!(
                "{name}: {callable}\n  bind: {binds}\n  workers: {workers}, threads: {threads}, python: {python}\n  chdir: {chdir}\n  timeout: {timeout}, graceful_timeout: {graceful}, queue_timeout: {queue}, max_body: {max_body}\n  recycling: {recycling}\n{edge}",
                name = app.name,
                callable = app.app,
                binds = binds.join(", "),
                workers = app.workers,
                threads = app.threads,
                python = app.python.display(),
                chdir = app.chdir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "(current directory)".into()),
                timeout = humantime::format_duration(app.timeout),
                graceful = humantime::format_duration(app.graceful_timeout),
                queue = humantime::format_duration(app.queue_timeout),
                max_body = bytesize::ByteSize(app.max_body).display().iec(),
                recycling = app.describe_recycling(),
                edge = app.edge.describe(),
            ));
        }
        if let Some(admin) = self.admin {
            out.push_str(&format!("admin: {admin} (/metrics, /healthz, /readyz)\n"));
        }
        out.push_str(&format!(
            "max_connections: {}, gateway_threads: {}\n",
            self.max_connections, self.gateway_threads
        ));
        out
    }
}

impl EdgeConfig {
    fn describe(&self) -> String {
        let mut out = format!(
            "  limits: request line {line} B, {fields} fields of {field} B, header_timeout {header}, keepalive {keepalive}, min_body_rate {rate}/s\n",
            line = self.limit_request_line,
            fields = self.limit_request_fields,
            field = self.limit_request_field_size,
            header = humantime::format_duration(self.header_timeout),
            keepalive = humantime::format_duration(self.keepalive),
            rate = bytesize::ByteSize(self.min_body_rate).display().iec(),
        );
        for (prefix, dir) in &self.static_dirs {
            out.push_str(&format!("  static: {prefix} -> {}\n", dir.display()));
        }
        let nets: Vec<String> = self
            .forwarded_allow_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        out.push_str(&format!(
            "  forwarded_allow_ips: {}, access_log: {}, compress: {}\n",
            nets.join(", "),
            match self.access_log {
                AccessLog::Off => "off",
                AccessLog::Combined => "combined",
                AccessLog::Json => "json",
            },
            if self.compress { "on" } else { "off" }
        ));
        out.push_str(&format!(
            "  http: {}, h2_max_concurrent_streams: {}\n",
            self.http.as_str(),
            self.h2_max_concurrent_streams
        ));
        out
    }
}

impl AppConfig {
    fn describe_recycling(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_requests {
            parts.push(format!(
                "max_requests {n} (+ up to {})",
                self.max_requests_jitter
            ));
        }
        if let Some(bytes) = self.max_rss {
            parts.push(format!(
                "max_rss {}",
                bytesize::ByteSize(bytes).display().iec()
            ));
        }
        if let Some(age) = self.worker_lifetime {
            parts.push(format!(
                "worker_lifetime {}",
                humantime::format_duration(age)
            ));
        }
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The edge settings of one app from the file, defaults for what it leaves out. An error comes
/// with the place of the offending value when the file has one for it.
fn file_edge(
    app: &FileApp,
    base: &Path,
) -> Result<EdgeConfig, (Option<serde_saphyr::Location>, String)> {
    let defaults = EdgeConfig::default();
    let mut static_dirs = Vec::new();
    if let Some(spanned) = &app.static_dirs {
        for (prefix, dir) in &spanned.value {
            let prefix =
                normalize_static_prefix(prefix).map_err(|e| (Some(spanned.referenced), e))?;
            let dir = resolve_path(base, dir);
            if !dir.is_dir() {
                return Err((
                    Some(spanned.referenced),
                    format!(
                        "static directory {} for {prefix} is not a directory",
                        dir.display()
                    ),
                ));
            }
            static_dirs.push((prefix, dir));
        }
    }
    let forwarded_allow_ips = match &app.forwarded_allow_ips {
        None => defaults.forwarded_allow_ips.clone(),
        Some(spanned) => match &spanned.value {
            AllowIps::Text(text) => parse_allow_ips(text),
            AllowIps::List(items) => items
                .iter()
                .map(|item| parse_allow_ip(item.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map(|nets| nets.concat()),
        }
        .map_err(|e| (Some(spanned.referenced), e))?,
    };
    for (field, value) in [
        ("limit_request_line", app.limit_request_line),
        ("limit_request_fields", app.limit_request_fields),
        ("limit_request_field_size", app.limit_request_field_size),
        (
            "h2_max_concurrent_streams",
            app.h2_max_concurrent_streams.map(|n| n as usize),
        ),
    ] {
        if value == Some(0) {
            return Err((None, format!("`{field}` must be at least 1")));
        }
    }
    if app
        .limit_request_field_size
        .is_some_and(|n| n > MAX_LIMIT_REQUEST_FIELD_SIZE)
    {
        return Err((
            None,
            format!("`limit_request_field_size` must be at most {MAX_LIMIT_REQUEST_FIELD_SIZE}"),
        ));
    }
    Ok(EdgeConfig {
        limit_request_line: app
            .limit_request_line
            .unwrap_or(defaults.limit_request_line),
        limit_request_fields: app
            .limit_request_fields
            .unwrap_or(defaults.limit_request_fields),
        limit_request_field_size: app
            .limit_request_field_size
            .unwrap_or(defaults.limit_request_field_size),
        header_timeout: app.header_timeout.unwrap_or(defaults.header_timeout),
        keepalive: app.keepalive.unwrap_or(defaults.keepalive),
        min_body_rate: app.min_body_rate.unwrap_or(defaults.min_body_rate),
        response_buffer: app.response_buffer.unwrap_or(defaults.response_buffer),
        static_dirs,
        static_hashed_max_age: app.static_hashed_max_age.filter(|d| !d.is_zero()),
        compress: app.compress.unwrap_or(defaults.compress),
        compress_min_size: app.compress_min_size.unwrap_or(defaults.compress_min_size),
        forwarded_allow_ips,
        access_log: app.access_log.unwrap_or(defaults.access_log),
        http: app.http.unwrap_or(defaults.http),
        h2_max_concurrent_streams: app
            .h2_max_concurrent_streams
            .unwrap_or(defaults.h2_max_concurrent_streams),
    })
}

/// The lines around `line` with a caret under `column`, like a compiler.
fn snippet(text: &str, line: u64, column: u64) -> String {
    if line == 0 {
        return String::new();
    }
    let line = line as usize;
    let first = line.saturating_sub(2).max(1);
    let mut out = String::new();
    for (number, content) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if number < first || number > line {
            continue;
        }
        out.push_str(&format!("{number:>4} | {content}\n"));
        if number == line {
            out.push_str(&format!(
                "     | {}^\n",
                " ".repeat((column as usize).saturating_sub(1))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/sluice/sluice.yaml"), text)
    }

    #[test]
    fn a_full_file_parses_with_defaults_and_relative_paths() {
        let config = parse(
            "python: venv/bin/python\napps:\n  shop:\n    app: shop.wsgi:application\n    chdir: shop\n    bind: [\"127.0.0.1:8000\", 8001]\n    workers: 4\n    threads: 10\n    timeout: 45s\n    max_body: 20MiB\n  api:\n    app: api:app\n    bind: [8070]\n",
        )
        .unwrap();
        let shop = &config.apps[0];
        assert_eq!(shop.name, "shop");
        assert_eq!(
            shop.binds,
            vec![
                BindConfig::plain("127.0.0.1:8000".parse().unwrap()),
                BindConfig::plain("0.0.0.0:8001".parse().unwrap())
            ]
        );
        assert_eq!(shop.chdir.as_deref(), Some(Path::new("/etc/sluice/shop")));
        assert_eq!(shop.python, PathBuf::from("/etc/sluice/venv/bin/python"));
        assert_eq!((shop.workers, shop.threads), (4, 10));
        assert_eq!(shop.timeout, Duration::from_secs(45));
        assert_eq!(shop.max_body, 20 * 1024 * 1024);
        let api = &config.apps[1];
        assert_eq!(
            (api.workers, api.threads, api.max_body),
            (1, 1, DEFAULT_MAX_BODY_BYTES)
        );
        assert_eq!(api.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [1]\n    wokers: 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (5, 5));
        assert!(
            err.to_string()
                .starts_with("/etc/sluice/sluice.yaml:5:5: unknown field `wokers`"),
            "{err}"
        );

        let err = parse(
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n  b:\n    bind: [2]\n    workers: 1\n",
        )
        .unwrap_err();
        // At app b's first line, not where its mapping happens to end.
        assert_eq!(err.line, 6, "{err}");
        assert!(err.message.contains("missing field `app`"), "{err}");

        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [8000]\n  b:\n    app: x:z\n    bind: [\"127.0.0.1:8000\"]\n").unwrap_err();
        assert_eq!(err.line, 7);
        assert!(
            err.message.contains("already taken by app a (line 4)"),
            "{err}"
        );

        let err =
            parse("apps:\n  a:\n    app: x:y\n    bind: [1]\n    timeout: soon\n").unwrap_err();
        assert_eq!(err.line, 5);
        assert!(err.message.contains("invalid duration"), "{err}");

        let err = parse("apps:\n  a:\n    app: [x\n").unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn gateway_threads_parse_default_and_refuse_zero() {
        let apps = "apps:\n  a:\n    app: x:y\n    bind: [1]\n";
        let config = parse(&format!("gateway_threads: 3\n{apps}")).unwrap();
        assert_eq!(config.gateway_threads, 3);
        assert!(config.describe().contains("gateway_threads: 3"));
        let config = parse(apps).unwrap();
        assert_eq!(config.gateway_threads, default_gateway_threads());
        assert!(default_gateway_threads() >= 1);
        let err = parse(&format!("{apps}gateway_threads: 0\n")).unwrap_err();
        assert_eq!((err.line, err.column), (5, 18), "{err}");
        assert!(err.message.contains("`gateway_threads` must be at least 1"));
    }

    #[test]
    fn recycling_settings_parse_and_zero_means_off() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    max_requests: 1000\n    max_requests_jitter: 50\n    max_rss: 512MiB\n    worker_lifetime: 1h\n  b:\n    app: x:z\n    bind: [2]\n    max_requests: 0\n",
        )
        .unwrap();
        let a = &config.apps[0];
        assert_eq!((a.max_requests, a.max_requests_jitter), (Some(1000), 50));
        assert_eq!(a.max_rss, Some(512 * 1024 * 1024));
        assert_eq!(a.worker_lifetime, Some(Duration::from_secs(3600)));
        let b = &config.apps[1];
        assert_eq!(
            (b.max_requests, b.max_rss, b.worker_lifetime),
            (None, None, None)
        );
    }

    #[test]
    fn edge_settings_parse_with_gunicorn_names_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("staticfiles")).unwrap();
        let file = dir.path().join("sluice.yaml");
        let config = Config::parse(
            &file,
            "admin: \"127.0.0.1:9100\"\nmax_connections: 500\napps:\n  a:\n    app: x:y\n    bind: [1]\n    static: {\"/static\": staticfiles}\n    static_hashed_max_age: 365d\n    forwarded_allow_ips: \"10.0.0.0/8, ::1\"\n    access_log: json\n    limit_request_line: 4094\n    keepalive: 2s\n    min_body_rate: 0\n    compress: true\n  b:\n    app: x:z\n    bind: [2]\n    forwarded_allow_ips: [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(config.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.max_connections, 500);
        let a = &config.apps[0].edge;
        assert_eq!(
            a.static_dirs,
            vec![("/static/".to_owned(), dir.path().join("staticfiles"))]
        );
        assert_eq!(
            a.static_hashed_max_age,
            Some(Duration::from_secs(365 * 86400))
        );
        assert_eq!(
            a.forwarded_allow_ips,
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        assert_eq!(a.access_log, AccessLog::Json);
        assert_eq!(a.limit_request_line, 4094);
        assert_eq!(a.limit_request_fields, DEFAULT_LIMIT_REQUEST_FIELDS);
        assert_eq!(a.keepalive, Duration::from_secs(2));
        assert_eq!(a.min_body_rate, 0);
        assert!(a.compress);
        let b = &config.apps[1].edge;
        assert_eq!(b.forwarded_allow_ips.len(), 2);
        assert!(b.forwarded_allow_ips[0].contains(&"203.0.113.9".parse::<IpAddr>().unwrap()));
        assert_eq!(b.access_log, AccessLog::Off);

        let err = Config::parse(
            &file,
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    static: {\"/s/\": missing}\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        assert!(err.message.contains("is not a directory"), "{err}");
        let err = Config::parse(
            &file,
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    forwarded_allow_ips: [\"10.0.0.300\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        let err = Config::parse(
            &file,
            "admin: 8000\napps:\n  a:\n    app: x:y\n    bind: [8000]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        assert!(parse_static("static=/x").is_err());
        assert_eq!(parse_static("/s=/x").unwrap().0, "/s/");
    }

    #[test]
    fn port_zero_never_clashes_and_wildcards_do() {
        let any = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p);
        let local = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert!(!binds_clash(local(0), local(0)));
        assert!(binds_clash(any(80), local(80)));
        assert!(!binds_clash(local(80), local(81)));
        assert!(!binds_clash(local(80), "[::1]:80".parse().unwrap()));
    }

    #[test]
    fn tls_binds_take_their_files_relative_to_the_file() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    bind:\n      - 8000\n      - {addr: \"127.0.0.1:8443\", certfile: tls/cert.pem, keyfile: /k.pem}\n      - {addr: 9443, certfile: c.pem, keyfile: k.pem, ca_certs: ca.pem}\n",
        )
        .unwrap();
        let binds = &config.apps[0].binds;
        assert_eq!(binds[0], BindConfig::plain("0.0.0.0:8000".parse().unwrap()));
        assert_eq!(
            binds[1].addr,
            BindAddr::Tcp("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            binds[1].tls,
            Some(TlsFiles {
                certfile: "/etc/sluice/tls/cert.pem".into(),
                keyfile: "/k.pem".into(),
                ca_certs: None,
            })
        );
        assert_eq!(
            binds[2].addr,
            BindAddr::Tcp("0.0.0.0:9443".parse().unwrap())
        );
        let tls = binds[2].tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_certs.as_deref(),
            Some(Path::new("/etc/sluice/ca.pem"))
        );

        for (yaml, want) in [
            ("{addr: 1, certfile: c.pem}", "`certfile` needs `keyfile`"),
            ("{addr: 1, keyfile: k.pem}", "`keyfile` needs `certfile`"),
            (
                "{addr: 1, ca_certs: ca.pem}",
                "`ca_certs` needs `certfile` and `keyfile`",
            ),
            ("{certfile: c.pem, keyfile: k.pem}", "missing field `addr`"),
            (
                "{addr: 1, certfile: c, keyfile: k, cert: x}",
                "unknown field `cert`",
            ),
            ("70000", "port 70000 is not in 0-65535"),
        ] {
            let err = parse(&format!(
                "apps:\n  a:\n    app: x:y\n    bind:\n      - {yaml}\n"
            ))
            .unwrap_err();
            assert_eq!(err.line, 5, "{yaml}: {err}");
            assert!(err.message.contains(want), "{yaml}: {err}");
        }
        let err = parse(
            "admin: {addr: 1, certfile: c, keyfile: k}\napps:\n  a:\n    app: x:y\n    bind: [2]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("the admin bind has no TLS"), "{err}");
    }

    #[test]
    fn unix_binds_resolve_against_the_file_and_clash_by_path() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    unix_mode: 600\n    bind: [\"unix:run/a.sock\", \"unix:/tmp/b.sock\"]\n",
        )
        .unwrap();
        let binds = &config.apps[0].binds;
        assert_eq!(
            binds[0].addr,
            BindAddr::Unix("/etc/sluice/run/a.sock".into())
        );
        assert_eq!(binds[0].addr.to_string(), "unix:/etc/sluice/run/a.sock");
        assert_eq!(binds[1].unix_mode, 0o600);
        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [\"unix:/s\"]\n  b:\n    app: x:z\n    bind: [\"unix:/s\"]\n")
            .unwrap_err();
        assert!(err.message.contains("already taken by app a"), "{err}");
        let err =
            parse("admin: \"unix:/s\"\napps:\n  a:\n    app: x:y\n    bind: [1]\n").unwrap_err();
        assert!(err.message.contains("not a Unix socket"), "{err}");
        assert!(parse("apps:\n  a:\n    app: x:y\n    bind: [\"unix:\"]\n").is_err());
        assert_eq!(parse_unix_mode("0o660"), Ok(0o660));
        assert_eq!(parse_unix_mode("0755"), Ok(0o755));
        assert!(parse_unix_mode("0800").is_err());
        assert!(parse_unix_mode("1777").is_err());
    }

    #[test]
    fn field_size_is_capped_by_the_worker_frame_format() {
        let yaml = |n: usize| {
            format!("apps:\n  a:\n    app: x:y\n    bind: [1]\n    limit_request_field_size: {n}\n")
        };
        assert!(parse(&yaml(MAX_LIMIT_REQUEST_FIELD_SIZE)).is_ok());
        let err = parse(&yaml(MAX_LIMIT_REQUEST_FIELD_SIZE + 1)).unwrap_err();
        assert!(err.message.contains("at most 65535"), "{err}");
    }

    #[test]
    fn sizes_durations_and_binds() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_bind("8000").unwrap(), "0.0.0.0:8000".parse().unwrap());
        assert_eq!(parse_bind("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_bind("nonsense:port").is_err());
    }
}
