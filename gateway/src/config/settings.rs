//! An app's settings as given, and the one mapping from them to an [`AppConfig`]. A YAML app
//! deserialises straight into [`AppSettings`]; `sluice serve` fills one from its flags. Every
//! default is written here, once: the mapping applies them, and the command line's `--help`
//! shows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::binds::BindSpec;
use super::values::{self, resolve_path, resolve_python, AllowIps};
use super::{AccessLog, AppConfig, BindConfig, Config, EdgeConfig, HttpVersions};

pub const DEFAULT_WORKERS: usize = 1;
pub const DEFAULT_THREADS: usize = 1;
pub const DEFAULT_PYTHON: &str = "python3";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_REQUESTS_JITTER: u64 = 0;
/// The bind of `sluice serve` without `--bind` (the file has no default: every app names one).
pub const DEFAULT_SERVE_BIND: &str = "127.0.0.1:8000";
/// The mode of a Unix-socket bind's file when none is configured: the owner and its group may
/// connect (an nginx in the group), nobody else.
pub const DEFAULT_UNIX_MODE: u32 = 0o660;
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
pub const DEFAULT_COMPRESS: bool = false;
pub const DEFAULT_COMPRESS_MIN_SIZE: u64 = 1024;
pub const DEFAULT_ACCESS_LOG: AccessLog = AccessLog::Off;
pub const DEFAULT_HTTP: HttpVersions = HttpVersions::Auto;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_RELOAD: bool = false;

/// The gateway's runtime threads when none are configured: half the CPUs this process may use,
/// at least one. The Python workers do most of the work and need the rest; on 2 CPUs one
/// thread served small requests 12-14% faster than two (less hand-over between threads).
pub fn default_gateway_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The peers whose forwarded headers are believed when none are configured: this host.
pub fn default_forwarded_allow_ips() -> Vec<ipnet::IpNet> {
    vec![
        ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ipnet::IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// One app's settings as given; `None` for what was left out. The fields are the YAML keys, in
/// the order an unknown-key error lists them.
///
/// Five of them each front end writes in its own form, so they reach [`AppSettings::into_app`]
/// checked, as [`Resolved`]: `app`, `bind`, `static` and `forwarded_allow_ips` (here in their
/// YAML forms, with places for messages), and `unix_mode` (which goes into the binds). The
/// command line leaves those five `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppSettings {
    /// Optional here so that a missing one is reported at the app, not where its mapping ends.
    pub(super) app: Option<String>,
    pub(super) chdir: Option<PathBuf>,
    pub(super) bind: Option<Spanned<Vec<Spanned<BindSpec>>>>,
    pub(super) workers: Option<usize>,
    #[serde(alias = "thread_workers")]
    pub(super) threads: Option<usize>,
    pub(super) python: Option<String>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) graceful_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) queue_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::size")]
    pub(super) max_body: Option<u64>,
    pub(super) max_requests: Option<u64>,
    pub(super) max_requests_jitter: Option<u64>,
    #[serde(default, deserialize_with = "values::size")]
    pub(super) max_rss: Option<u64>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) worker_lifetime: Option<Duration>,
    pub(super) limit_request_line: Option<usize>,
    pub(super) limit_request_fields: Option<usize>,
    pub(super) limit_request_field_size: Option<usize>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) keepalive: Option<Duration>,
    #[serde(default, deserialize_with = "values::size")]
    pub(super) min_body_rate: Option<u64>,
    #[serde(default, deserialize_with = "values::size")]
    pub(super) response_buffer: Option<u64>,
    #[serde(rename = "static")]
    pub(super) static_dirs: Option<Spanned<IndexMap<String, String>>>,
    #[serde(default, deserialize_with = "values::duration")]
    pub(super) static_hashed_max_age: Option<Duration>,
    pub(super) compress: Option<bool>,
    #[serde(default, deserialize_with = "values::size")]
    pub(super) compress_min_size: Option<u64>,
    pub(super) forwarded_allow_ips: Option<Spanned<AllowIps>>,
    pub(super) access_log: Option<AccessLog>,
    #[serde(default, deserialize_with = "values::http_versions")]
    pub(super) http: Option<HttpVersions>,
    #[serde(default, deserialize_with = "values::unix_mode")]
    pub(super) unix_mode: Option<u32>,
    pub(super) h2_max_concurrent_streams: Option<u32>,
}

/// What each front end reads in its own form and checks with its own messages, ready for
/// [`AppSettings::into_app`]: the app's name and callable, its binds, its static directories
/// (prefixes normalised, directories resolved and found) and the peers it trusts, if given.
pub(super) struct Resolved {
    pub(super) name: String,
    pub(super) callable: String,
    pub(super) binds: Vec<BindConfig>,
    pub(super) static_dirs: Vec<(String, PathBuf)>,
    pub(super) forwarded_allow_ips: Option<Vec<ipnet::IpNet>>,
}

impl AppSettings {
    /// The app's configuration: these settings over the defaults, paths resolved against
    /// `base`, and a zero recycling limit or static max-age read as off.
    pub(super) fn into_app(self, resolved: Resolved, base: &Path) -> AppConfig {
        let edge = self.edge(resolved.static_dirs, resolved.forwarded_allow_ips);
        AppConfig {
            name: resolved.name,
            app: resolved.callable,
            chdir: self.chdir.map(|dir| resolve_path(base, dir)),
            binds: resolved.binds,
            workers: self.workers.unwrap_or(DEFAULT_WORKERS),
            threads: self.threads.unwrap_or(DEFAULT_THREADS),
            python: resolve_python(base, self.python.as_deref().unwrap_or(DEFAULT_PYTHON)),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            graceful_timeout: self.graceful_timeout.unwrap_or(DEFAULT_GRACEFUL_TIMEOUT),
            queue_timeout: self.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT),
            max_body: self.max_body.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_requests: self.max_requests.filter(|&n| n > 0),
            max_requests_jitter: self
                .max_requests_jitter
                .unwrap_or(DEFAULT_MAX_REQUESTS_JITTER),
            max_rss: self.max_rss.filter(|&n| n > 0),
            worker_lifetime: self.worker_lifetime.filter(|d| !d.is_zero()),
            edge,
        }
    }

    fn edge(
        &self,
        static_dirs: Vec<(String, PathBuf)>,
        forwarded_allow_ips: Option<Vec<ipnet::IpNet>>,
    ) -> EdgeConfig {
        EdgeConfig {
            limit_request_line: self
                .limit_request_line
                .unwrap_or(DEFAULT_LIMIT_REQUEST_LINE),
            limit_request_fields: self
                .limit_request_fields
                .unwrap_or(DEFAULT_LIMIT_REQUEST_FIELDS),
            limit_request_field_size: self
                .limit_request_field_size
                .unwrap_or(DEFAULT_LIMIT_REQUEST_FIELD_SIZE),
            header_timeout: self.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT),
            keepalive: self.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
            min_body_rate: self.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
            response_buffer: self
                .response_buffer
                .unwrap_or(DEFAULT_RESPONSE_BUFFER_BYTES),
            static_dirs,
            static_hashed_max_age: self.static_hashed_max_age.filter(|d| !d.is_zero()),
            compress: self.compress.unwrap_or(DEFAULT_COMPRESS),
            compress_min_size: self.compress_min_size.unwrap_or(DEFAULT_COMPRESS_MIN_SIZE),
            forwarded_allow_ips: forwarded_allow_ips.unwrap_or_else(default_forwarded_allow_ips),
            access_log: self.access_log.unwrap_or(DEFAULT_ACCESS_LOG),
            http: self.http.unwrap_or(DEFAULT_HTTP),
            h2_max_concurrent_streams: self
                .h2_max_concurrent_streams
                .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        }
    }
}

/// The gateway-wide settings as given, checked by their front end.
pub(super) struct GatewaySettings {
    pub(super) admin: Option<SocketAddr>,
    pub(super) max_connections: Option<usize>,
    pub(super) gateway_threads: Option<usize>,
    pub(super) reload: Option<bool>,
    /// Resolved by the front end.
    pub(super) reload_paths: Vec<PathBuf>,
}

impl GatewaySettings {
    /// The whole configuration: `apps` and these settings over the defaults.
    pub(super) fn into_config(self, source: Option<PathBuf>, apps: Vec<AppConfig>) -> Config {
        Config {
            source,
            apps,
            admin: self.admin,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            gateway_threads: self.gateway_threads.unwrap_or_else(default_gateway_threads),
            reload: self.reload.unwrap_or(DEFAULT_RELOAD),
            reload_paths: self.reload_paths,
        }
    }
}
