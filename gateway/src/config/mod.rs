//! Configuration: the YAML route table (`sluice run/check --config`) and the one-app command line
//! (`sluice serve`) both become a [`Config`]. Every YAML error names file, line and column.
//!
//! Layout:
//! - this file: what the gateway runs from ([`Config`], [`AppConfig`], [`EdgeConfig`], binds)
//!   and [`ConfigError`].
//! - `settings`: an app's settings as either front end gives them, and the one mapping from
//!   them to an [`AppConfig`]. Every default is written there, and only there.
//! - `file`: the YAML front end: reading a file, its checks, and errors that point into it.
//! - `interpolate`: the environment's `${VAR}` and `${VAR:-default}` in a file's values, and
//!   places in the file as written.
//! - `cli`: the command line (`sluice serve`, `run`, `check`); `serve`'s flags become the same
//!   settings a YAML app does.
//! - `binds`: how a bind is written (`8000`, `HOST:PORT`, `unix:PATH`, a YAML mapping with TLS
//!   files) and which binds clash.
//! - `values`: how the other values are written, as text and as YAML scalars: durations, sizes,
//!   octal modes, address lists, static mappings, HTTP versions; paths against a base directory.
//! - `describe`: the route table as `sluice check` prints it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod binds;
mod cli;
mod describe;
mod file;
mod interpolate;
mod settings;
mod values;

pub use cli::{Cli, Command, ReloadArgs, ServeArgs};

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
    /// `reload`: watch the apps' Python files (and the YAML file) and reload on a change, as
    /// SIGHUP does; for development. Off unless set.
    pub reload: bool,
    /// `reload_paths`: more files and directories `reload` watches (any file type), resolved.
    pub reload_paths: Vec<PathBuf>,
}

impl Config {
    /// Where each app's code is: its `chdir`, or the current directory (the workers start in
    /// it), absolute. What `reload` watches for `*.py` files.
    pub fn code_dirs(&self) -> Vec<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        (self.apps.iter())
            .map(|app| app.chdir.clone().unwrap_or_else(|| cwd.clone()))
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .collect()
    }
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

/// A TLS bind's files, by gunicorn's names: the certificate chain (leaf first) and its private
/// key, PEM; and, for client-certificate verification, the CAs a client's certificate must
/// chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub ca_certs: Option<PathBuf>,
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

/// The HTTP versions a bind speaks (`http`, `--http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersions {
    /// HTTP/1.1 and HTTP/2: by ALPN over TLS, by the client's preface in clear text (h2c with
    /// prior knowledge).
    Auto,
    /// HTTP/1.1 (and 1.0) only.
    Http1,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge in clear text.
    Http2,
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
