//! The command line: `sluice serve` serves one app from its flags; `run` and `check` read a YAML
//! file. `serve`'s flags fill the same [`AppSettings`] a YAML app deserialises into, and go
//! through the same mapping; the defaults `--help` shows are written from the same constants.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use super::binds::{parse_bind, parse_bind_addr};
use super::settings::{
    default_forwarded_allow_ips, AppSettings, GatewaySettings, Resolved, DEFAULT_ACCESS_LOG,
    DEFAULT_COMPRESS_MIN_SIZE, DEFAULT_GRACEFUL_TIMEOUT, DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_HTTP, DEFAULT_KEEPALIVE, DEFAULT_LIMIT_REQUEST_FIELDS,
    DEFAULT_LIMIT_REQUEST_FIELD_SIZE, DEFAULT_LIMIT_REQUEST_LINE, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUESTS_JITTER, DEFAULT_MIN_BODY_RATE, DEFAULT_PYTHON,
    DEFAULT_QUEUE_TIMEOUT, DEFAULT_RESPONSE_BUFFER_BYTES, DEFAULT_SERVE_BIND, DEFAULT_THREADS,
    DEFAULT_TIMEOUT, DEFAULT_UNIX_MODE, DEFAULT_WORKERS, MAX_LIMIT_REQUEST_FIELD_SIZE,
};
use super::values::{
    allow_ips_text, duration_text, parse_allow_ips, parse_duration, parse_size, parse_static,
    parse_unix_mode, resolve_path, size_text, unix_mode_text,
};
use super::{AccessLog, BindConfig, Config, HttpVersions, TlsFiles};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Serve Python WSGI apps: an HTTP front end and worker supervisor in one program"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve one WSGI app given as module:callable.
    Serve(Box<ServeArgs>),
    /// Serve the apps of a YAML configuration file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        reload: ReloadArgs,
    },
    /// Validate a YAML configuration file and print its route table.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

impl Cli {
    /// Parses the process's command line, with every `serve` option also read from the
    /// environment (see [`Cli::command_with_env`]); a bad value is clap's usage error, exit 2.
    pub fn parse_with_env() -> Cli {
        let matches = Cli::command_with_env().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }

    /// The command line where every `serve` option can also be set as `SLUICE_<NAME>` (its long
    /// name in capitals, `-` as `_`: `SLUICE_WORKERS`, `SLUICE_THREAD_WORKERS`), as Granian
    /// reads `GRANIAN_*`; a flag on the command line wins. Without `--workers` or
    /// `SLUICE_WORKERS`, `WEB_CONCURRENCY` (gunicorn's and the buildpacks' convention) gives the
    /// worker count.
    pub fn command_with_env() -> clap::Command {
        let web_concurrency = std::env::var_os("SLUICE_WORKERS").is_none()
            && std::env::var_os("WEB_CONCURRENCY").is_some();
        let command = Cli::command().mut_subcommand("serve", |serve| {
            serve.mut_args(|arg| {
                let id = arg.get_id().as_str().to_owned();
                if arg.is_positional() || matches!(id.as_str(), "help" | "version") {
                    arg
                } else if id == "workers" && web_concurrency {
                    arg.env("WEB_CONCURRENCY")
                } else {
                    arg.env(format!("SLUICE_{}", id.to_ascii_uppercase()))
                }
            })
        });
        // `run` reads its apps from the file; only the reload flags come from here too.
        command.mut_subcommand("run", |run| {
            run.mut_arg("reload", |arg| arg.env("SLUICE_RELOAD"))
                .mut_arg("reload_paths", |arg| arg.env("SLUICE_RELOAD_PATHS"))
        })
    }
}

/// `--reload` and `--reload-paths`, of `serve` and `run`.
#[derive(Args, Debug, Default)]
pub struct ReloadArgs {
    /// Watch the app's Python files (and the YAML file) and reload on a change, as SIGHUP does:
    /// new workers with the new code, then the old ones drain. For development.
    #[arg(long)]
    reload: bool,
    /// More files or directories --reload watches (any file type); repeatable, or
    /// comma-separated. For `run`, they replace the file's reload_paths.
    #[arg(long, value_name = "PATH", value_delimiter = ',')]
    reload_paths: Vec<PathBuf>,
}

impl ReloadArgs {
    /// `config` with these flags over its own reload settings (a flag wins over the file);
    /// paths resolved against the current directory.
    pub fn apply(self, mut config: Config) -> Config {
        config.reload |= self.reload;
        if !self.reload_paths.is_empty() {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            config.reload_paths = (self.reload_paths.iter())
                .map(|path| resolve_path(&cwd, path))
                .collect();
        }
        config
    }
}

/// The defaults `--help` shows where a flag takes text, which clap also reads back when the
/// flag is left out; written once, from the constants in `settings`.
struct Shown {
    unix_mode: String,
    timeout: String,
    graceful_timeout: String,
    queue_timeout: String,
    max_body: String,
    header_timeout: String,
    keepalive: String,
    min_body_rate: String,
    response_buffer: String,
    compress_min_size: String,
    forwarded_allow_ips: String,
}

static SHOWN: LazyLock<Shown> = LazyLock::new(|| Shown {
    unix_mode: unix_mode_text(DEFAULT_UNIX_MODE),
    timeout: duration_text(DEFAULT_TIMEOUT),
    graceful_timeout: duration_text(DEFAULT_GRACEFUL_TIMEOUT),
    queue_timeout: duration_text(DEFAULT_QUEUE_TIMEOUT),
    max_body: size_text(DEFAULT_MAX_BODY_BYTES),
    header_timeout: duration_text(DEFAULT_HEADER_TIMEOUT),
    keepalive: duration_text(DEFAULT_KEEPALIVE),
    min_body_rate: size_text(DEFAULT_MIN_BODY_RATE),
    response_buffer: size_text(DEFAULT_RESPONSE_BUFFER_BYTES),
    compress_min_size: size_text(DEFAULT_COMPRESS_MIN_SIZE),
    forwarded_allow_ips: allow_ips_text(&default_forwarded_allow_ips()),
});

#[derive(Args)]
pub struct ServeArgs {
    /// The WSGI callable, module:callable (e.g. myproject.wsgi:application).
    app: String,
    /// Address to listen on (HOST:PORT, [IPv6]:PORT, a bare PORT for 0.0.0.0:PORT, or
    /// unix:PATH); repeatable.
    #[arg(short, long = "bind", default_value = DEFAULT_SERVE_BIND)]
    bind: Vec<String>,
    /// Every --bind takes a PROXY protocol header (v1 or v2) before each connection's first byte,
    /// believed from --forwarded-allow-ips (behind AWS NLB or HAProxy in TCP mode).
    #[arg(long)]
    proxy_protocol: bool,
    /// Permission bits of unix: bind sockets, in octal.
    #[arg(long, default_value = SHOWN.unix_mode.as_str(), value_parser = parse_unix_mode)]
    unix_mode: u32,
    /// TLS certificate chain (PEM, leaf first): every --bind serves HTTPS.
    #[arg(long, requires = "keyfile")]
    certfile: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "certfile")]
    keyfile: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; clients without one are
    /// refused.
    #[arg(long, requires = "certfile")]
    ca_certs: Option<PathBuf>,
    /// Worker processes.
    #[arg(short, long, default_value_t = DEFAULT_WORKERS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    workers: usize,
    /// Python threads per worker process.
    #[arg(long = "thread-workers", visible_alias = "threads", default_value_t = DEFAULT_THREADS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    thread_workers: usize,
    /// The interpreter that runs the workers (a virtualenv's python works as is).
    #[arg(long, default_value = DEFAULT_PYTHON)]
    python: String,
    /// Directory the workers start in; it is put first on sys.path.
    #[arg(long)]
    chdir: Option<PathBuf>,
    /// The app's name in logs (default: the module name).
    #[arg(long)]
    name: Option<String>,
    /// How long a request may run in Python before a 504 (e.g. 30s).
    #[arg(long, default_value = SHOWN.timeout.as_str(), value_parser = parse_duration)]
    timeout: Duration,
    /// How long in-flight requests get on shutdown.
    #[arg(long, default_value = SHOWN.graceful_timeout.as_str(), value_parser = parse_duration)]
    graceful_timeout: Duration,
    /// How long a request may wait for a free Python thread before a 503.
    #[arg(long, default_value = SHOWN.queue_timeout.as_str(), value_parser = parse_duration)]
    queue_timeout: Duration,
    /// Largest request body accepted (e.g. 10MiB); larger ones get 413.
    #[arg(long, default_value = SHOWN.max_body.as_str(), value_parser = parse_size)]
    max_body: u64,
    /// Replace a worker after it has served this many requests (0: never).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// Add up to this many requests, at random per worker, to max_requests, so workers are not
    /// all replaced at once.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS_JITTER)]
    max_requests_jitter: u64,
    /// Replace a worker whose resident memory grows above this (e.g. 512MiB), checked every second.
    #[arg(long, value_parser = parse_size)]
    max_rss: Option<u64>,
    /// Replace a worker after it has run this long (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    worker_lifetime: Option<Duration>,
    /// Longest request line in bytes; longer gets 414.
    #[arg(long, default_value_t = DEFAULT_LIMIT_REQUEST_LINE, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    limit_request_line: usize,
    /// Most header fields in a request; more gets 431.
    #[arg(long, default_value_t = DEFAULT_LIMIT_REQUEST_FIELDS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    limit_request_fields: usize,
    /// Largest header field in bytes; larger gets 431.
    #[arg(long, default_value_t = DEFAULT_LIMIT_REQUEST_FIELD_SIZE, value_parser = clap::value_parser!(u32).range(1..=MAX_LIMIT_REQUEST_FIELD_SIZE as i64).map(|n| n as usize))]
    limit_request_field_size: usize,
    /// How long a client has to send a whole request head (from accept, or from its first byte
    /// on a kept-alive connection).
    #[arg(long, default_value = SHOWN.header_timeout.as_str(), value_parser = parse_duration)]
    header_timeout: Duration,
    /// How long an idle keep-alive connection waits for the first byte of its next request.
    #[arg(long, default_value = SHOWN.keepalive.as_str(), value_parser = parse_duration)]
    keepalive: Duration,
    /// Slowest request body upload accepted, bytes per second averaged after a 5 s grace
    /// (0: no minimum).
    #[arg(long, default_value = SHOWN.min_body_rate.as_str(), value_parser = parse_size)]
    min_body_rate: u64,
    /// Response bytes held per response for a slow reader, so the app's thread is freed early.
    #[arg(long, default_value = SHOWN.response_buffer.as_str(), value_parser = parse_size)]
    response_buffer: u64,
    /// Serve a directory without Python: URL_PREFIX=DIR, e.g. /static/=./staticfiles; repeatable.
    #[arg(long = "static", value_parser = parse_static)]
    static_dirs: Vec<(String, PathBuf)>,
    /// Cache static files with a content hash in their name this long, as immutable (e.g. 365d).
    #[arg(long, value_parser = parse_duration)]
    static_hashed_max_age: Option<Duration>,
    /// Compress compressible responses (gzip, br) for clients that accept it.
    #[arg(long)]
    compress: bool,
    /// Smallest response that is compressed.
    #[arg(long, default_value = SHOWN.compress_min_size.as_str(), value_parser = parse_size)]
    compress_min_size: u64,
    /// Peers whose X-Forwarded-* and Forwarded headers are believed: addresses and CIDRs,
    /// comma-separated, or * for all.
    #[arg(long, default_value = SHOWN.forwarded_allow_ips.as_str())]
    forwarded_allow_ips: String,
    /// Access log to stdout.
    #[arg(long, value_enum, default_value_t = DEFAULT_ACCESS_LOG)]
    access_log: AccessLog,
    /// HTTP versions served: 1 (HTTP/1.1 only), 2 (HTTP/2 only), or auto (both: ALPN over TLS,
    /// prior knowledge in clear text).
    #[arg(long, default_value = DEFAULT_HTTP.as_str(), value_parser = HttpVersions::parse)]
    http: HttpVersions,
    /// Streams an HTTP/2 connection may have open at once.
    #[arg(long, default_value_t = DEFAULT_H2_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    h2_max_concurrent_streams: u32,
    /// Admin address for /metrics, /healthz and /readyz (off unless set).
    #[arg(long, value_parser = parse_bind)]
    admin: Option<std::net::SocketAddr>,
    /// Open client connections the gateway holds at most.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
    /// Threads of the gateway's async runtime [default: half the CPUs, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    gateway_threads: Option<usize>,
    #[command(flatten)]
    reload: ReloadArgs,
}

impl ServeArgs {
    /// The configuration these flags give: one app, mapped as a YAML app is, with paths
    /// resolved against the current directory.
    pub fn into_config(mut self) -> Result<Config, String> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let resolved = self.resolve(&cwd)?;
        let gateway = GatewaySettings {
            admin: self.admin,
            max_connections: Some(self.max_connections),
            gateway_threads: self.gateway_threads,
            reload: None,
            reload_paths: Vec::new(),
        };
        let reload = std::mem::take(&mut self.reload);
        let app = self.into_settings().into_app(resolved, &cwd);
        Ok(reload.apply(gateway.into_config(None, vec![app])))
    }

    /// What the command line writes in its own form: the app's name (the module's by default),
    /// the trusted peers, the static directories and the binds, which all share the TLS flags.
    fn resolve(&self, cwd: &Path) -> Result<Resolved, String> {
        let name = self.name.clone().unwrap_or_else(|| {
            let module = self.app.split(':').next().unwrap_or("app");
            module.split('.').next().unwrap_or(module).to_owned()
        });
        let forwarded_allow_ips = parse_allow_ips(&self.forwarded_allow_ips)
            .map_err(|e| format!("--forwarded-allow-ips: {e}"))?;
        let mut static_dirs = Vec::new();
        for (prefix, dir) in &self.static_dirs {
            let resolved = resolve_path(cwd, dir);
            if !resolved.is_dir() {
                let dir = dir.display();
                return Err(format!("--static {prefix}={dir}: not a directory"));
            }
            static_dirs.push((prefix.clone(), resolved));
        }
        let tls = match (&self.certfile, &self.keyfile) {
            (Some(certfile), Some(keyfile)) => Some(TlsFiles {
                certfile: resolve_path(cwd, certfile),
                keyfile: resolve_path(cwd, keyfile),
                ca_certs: self.ca_certs.as_ref().map(|ca| resolve_path(cwd, ca)),
            }),
            _ => None,
        };
        let binds = self
            .bind
            .iter()
            .map(|text| {
                let addr = parse_bind_addr(cwd, text).map_err(|e| format!("--bind: {e}"))?;
                Ok(BindConfig {
                    addr,
                    tls: tls.clone(),
                    unix_mode: self.unix_mode,
                    proxy_protocol: self.proxy_protocol,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Resolved {
            name,
            callable: self.app.clone(),
            binds,
            static_dirs,
            forwarded_allow_ips: Some(forwarded_allow_ips),
        })
    }

    /// The flags as the settings a YAML app gives.
    fn into_settings(self) -> AppSettings {
        AppSettings {
            chdir: self.chdir,
            workers: Some(self.workers),
            threads: Some(self.thread_workers),
            python: Some(self.python),
            timeout: Some(self.timeout),
            graceful_timeout: Some(self.graceful_timeout),
            queue_timeout: Some(self.queue_timeout),
            max_body: Some(self.max_body),
            max_requests: Some(self.max_requests),
            max_requests_jitter: Some(self.max_requests_jitter),
            max_rss: self.max_rss,
            worker_lifetime: self.worker_lifetime,
            limit_request_line: Some(self.limit_request_line),
            limit_request_fields: Some(self.limit_request_fields),
            limit_request_field_size: Some(self.limit_request_field_size),
            header_timeout: Some(self.header_timeout),
            keepalive: Some(self.keepalive),
            min_body_rate: Some(self.min_body_rate),
            response_buffer: Some(self.response_buffer),
            static_hashed_max_age: self.static_hashed_max_age,
            compress: self.compress.then_some(true),
            compress_min_size: Some(self.compress_min_size),
            access_log: Some(self.access_log),
            http: Some(self.http),
            h2_max_concurrent_streams: Some(self.h2_max_concurrent_streams),
            // Given in the command line's own forms, in `resolve`.
            ..AppSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["sluice", "serve"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Serve(serve) = cli.command else {
            unreachable!("parsed as serve")
        };
        serve.into_config()
    }

    /// `sluice serve a:b ARGS` as the process would parse it, environment included.
    fn serve_with_env(args: &[&str]) -> Result<ServeArgs, String> {
        let line = ["sluice", "serve", "a:b"].iter().chain(args);
        let matches = Cli::command_with_env()
            .try_get_matches_from(line)
            .map_err(|e| e.to_string())?;
        match Cli::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Serve(serve) => Ok(*serve),
            _ => unreachable!("parsed as serve"),
        }
    }

    /// The only test that sets these variables, and the only one that reads the environment.
    #[test]
    fn options_come_from_the_environment_and_flags_win() {
        std::env::remove_var("SLUICE_WORKERS");
        std::env::set_var("WEB_CONCURRENCY", "3");
        assert_eq!(serve_with_env(&[]).unwrap().workers, 3);
        std::env::set_var("SLUICE_WORKERS", "2");
        std::env::set_var("SLUICE_THREAD_WORKERS", "7");
        std::env::set_var("SLUICE_TIMEOUT", "5s");
        std::env::set_var("SLUICE_PROXY_PROTOCOL", "true");
        let serve = serve_with_env(&[]).unwrap();
        assert_eq!(serve.workers, 2, "SLUICE_WORKERS before WEB_CONCURRENCY");
        assert_eq!(serve.thread_workers, 7);
        assert_eq!(serve.timeout, Duration::from_secs(5));
        assert!(serve.proxy_protocol);
        let serve = serve_with_env(&["--workers", "5", "--timeout", "9s"]).unwrap();
        assert_eq!((serve.workers, serve.timeout), (5, Duration::from_secs(9)));
        std::env::set_var("SLUICE_WORKERS", "none");
        let err = serve_with_env(&[]).err().expect("a bad value is refused");
        assert!(err.contains("none"), "{err}");
        for name in [
            "SLUICE_WORKERS",
            "WEB_CONCURRENCY",
            "SLUICE_THREAD_WORKERS",
            "SLUICE_TIMEOUT",
            "SLUICE_PROXY_PROTOCOL",
        ] {
            std::env::remove_var(name);
        }
        assert_eq!(serve_with_env(&[]).unwrap().workers, DEFAULT_WORKERS);

        // The reload flags, for `serve` and for `run`.
        std::env::set_var("SLUICE_RELOAD", "true");
        std::env::set_var("SLUICE_RELOAD_PATHS", "/a,/b");
        let reload = serve_with_env(&[]).unwrap().reload;
        assert!(reload.reload);
        assert_eq!(
            reload.reload_paths,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let matches = Cli::command_with_env()
            .try_get_matches_from(["sluice", "run", "--config", "f.yaml"])
            .unwrap();
        let Command::Run { reload, .. } = Cli::from_arg_matches(&matches).unwrap().command else {
            unreachable!("parsed as run")
        };
        assert!(reload.reload);
        assert_eq!(reload.reload_paths.len(), 2);
        std::env::set_var("SLUICE_RELOAD", "false");
        assert!(!serve_with_env(&[]).unwrap().reload.reload);
        std::env::remove_var("SLUICE_RELOAD");
        std::env::remove_var("SLUICE_RELOAD_PATHS");
        assert!(!serve_with_env(&[]).unwrap().reload.reload);
    }

    #[test]
    fn reload_is_off_unless_asked_and_the_flags_win_over_the_file() {
        let config = serve(&["a:b"]).unwrap();
        assert!(!config.reload && config.reload_paths.is_empty());
        let config = serve(&[
            "a:b",
            "--reload",
            "--reload-paths",
            "/x,/y",
            "--reload-paths",
            "/z",
        ])
        .unwrap();
        assert!(config.reload);
        assert_eq!(
            config.reload_paths,
            ["/x", "/y", "/z"].map(PathBuf::from).to_vec()
        );

        let file = Config::parse(
            Path::new("/etc/sluice/sluice.yaml"),
            "reload: true\nreload_paths: [templates]\napps:\n  a:\n    app: x:y\n    bind: [1]\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let line = ["sluice", "run", "--config", "f.yaml"].iter().chain(args);
            match Cli::try_parse_from(line).unwrap().command {
                Command::Run { reload, .. } => reload.apply(file.clone()),
                _ => unreachable!("parsed as run"),
            }
        };
        let config = run(&[]);
        assert!(config.reload, "the file's");
        assert_eq!(
            config.reload_paths,
            [PathBuf::from("/etc/sluice/templates")]
        );
        let config = run(&["--reload-paths", "/p"]);
        assert_eq!(config.reload_paths, [PathBuf::from("/p")]);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_left_out_give_what_a_yaml_app_gets() {
        let from_flags = serve(&["named:alpha", "--bind", "8000"]).unwrap();
        let from_file = Config::parse(
            Path::new("/etc/sluice/sluice.yaml"),
            "apps:\n  named:\n    app: named:alpha\n    bind: [8000]\n",
        )
        .unwrap();
        assert_eq!(from_flags.apps, from_file.apps);
        assert_eq!(from_flags.admin, from_file.admin);
        assert_eq!(from_flags.max_connections, from_file.max_connections);
        assert_eq!(from_flags.gateway_threads, from_file.gateway_threads);
        assert_eq!(from_flags.source, None);
    }

    #[test]
    fn help_shows_the_defaults_as_before() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let shown = |id: &str| {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
            let values: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            values.join(" ")
        };
        for (id, want) in [
            ("bind", "127.0.0.1:8000"),
            ("unix_mode", "0660"),
            ("timeout", "30s"),
            ("graceful_timeout", "30s"),
            ("queue_timeout", "30s"),
            ("max_body", "10MiB"),
            ("header_timeout", "10s"),
            ("keepalive", "5s"),
            ("min_body_rate", "1KiB"),
            ("response_buffer", "4MiB"),
            ("compress_min_size", "1KiB"),
            ("forwarded_allow_ips", "127.0.0.1,::1"),
            ("access_log", "off"),
            ("http", "auto"),
            ("python", "python3"),
        ] {
            assert_eq!(shown(id), want, "{id}");
        }
    }

    #[test]
    fn flags_map_onto_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let config = serve(&[
            "shop.wsgi:application",
            "--bind",
            "unix:/tmp/shop.sock",
            "--unix-mode",
            "600",
            "--chdir",
            root,
            "--static",
            &format!("/s={root}"),
            "--max-requests",
            "0",
            "--max-rss",
            "0",
            "--compress",
            "--forwarded-allow-ips",
            "*",
            "--workers",
            "3",
        ])
        .unwrap();
        let app = &config.apps[0];
        assert_eq!(app.name, "shop");
        assert_eq!(app.binds[0].addr.to_string(), "unix:/tmp/shop.sock");
        assert_eq!(app.binds[0].unix_mode, 0o600);
        assert_eq!(app.chdir.as_deref(), Some(dir.path()));
        assert_eq!(
            app.edge.static_dirs,
            vec![("/s/".into(), dir.path().into())]
        );
        assert_eq!((app.max_requests, app.max_rss), (None, None));
        assert!(app.edge.compress);
        assert_eq!(app.edge.forwarded_allow_ips.len(), 2);
        assert_eq!(app.workers, 3);

        let err = serve(&["x:y", "--static", "/s=/no/such/dir"]).unwrap_err();
        assert_eq!(err, "--static /s/=/no/such/dir: not a directory");
        let err = serve(&["x:y", "--forwarded-allow-ips", "10.0.0.300"]).unwrap_err();
        assert!(
            err.starts_with("--forwarded-allow-ips: invalid address"),
            "{err}"
        );
        let err = serve(&["x:y", "--bind", "unix:"]).unwrap_err();
        assert!(err.starts_with("--bind: invalid bind"), "{err}");
    }
}
