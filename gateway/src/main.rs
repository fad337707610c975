//! The `sluice` command: parse the command line, set up logging, load the configuration, run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use sluice_gateway::config::{self, AccessLog, AppConfig, Config, EdgeConfig};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Serve Python WSGI apps: an HTTP front end and worker supervisor in one program"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one WSGI app given as module:callable.
    Serve(Box<ServeArgs>),
    /// Serve the apps of a YAML configuration file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a YAML configuration file and print its route table.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The WSGI callable, module:callable (e.g. myproject.wsgi:application).
    app: String,
    /// Address to listen on (HOST:PORT, [IPv6]:PORT, a bare PORT for 0.0.0.0:PORT, or
    /// unix:PATH); repeatable.
    #[arg(short, long = "bind", default_value = "127.0.0.1:8000")]
    bind: Vec<String>,
    /// Every --bind takes a PROXY protocol header (v1 or v2) before each connection's first byte,
    /// believed from --forwarded-allow-ips (behind AWS NLB or HAProxy in TCP mode).
    #[arg(long)]
    proxy_protocol: bool,
    /// Permission bits of unix: bind sockets, in octal.
    #[arg(long, default_value = "0660", value_parser = config::parse_unix_mode)]
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
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
    /// Python threads per worker process.
    #[arg(long = "thread-workers", visible_alias = "threads", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    thread_workers: u32,
    /// The interpreter that runs the workers (a virtualenv's python works as is).
    #[arg(long, default_value = config::DEFAULT_PYTHON)]
    python: String,
    /// Directory the workers start in; it is put first on sys.path.
    #[arg(long)]
    chdir: Option<PathBuf>,
    /// The app's name in logs (default: the module name).
    #[arg(long)]
    name: Option<String>,
    /// How long a request may run in Python before a 504 (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
    timeout: std::time::Duration,
    /// How long in-flight requests get on shutdown.
    #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
    graceful_timeout: std::time::Duration,
    /// How long a request may wait for a free Python thread before a 503.
    #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
    queue_timeout: std::time::Duration,
    /// Largest request body accepted (e.g. 10MiB); larger ones get 413.
    #[arg(long, default_value = "10MiB", value_parser = config::parse_size)]
    max_body: u64,
    /// Replace a worker after it has served this many requests (0: never).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// Add up to this many requests, at random per worker, to max_requests, so workers are not
    /// all replaced at once.
    #[arg(long, default_value_t = 0)]
    max_requests_jitter: u64,
    /// Replace a worker whose resident memory grows above this (e.g. 512MiB), checked every second.
    #[arg(long, value_parser = config::parse_size)]
    max_rss: Option<u64>,
    /// Replace a worker after it has run this long (e.g. 1h).
    #[arg(long, value_parser = config::parse_duration)]
    worker_lifetime: Option<std::time::Duration>,
    /// Longest request line in bytes; longer gets 414.
    #[arg(long, default_value_t = config::DEFAULT_LIMIT_REQUEST_LINE, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    limit_request_line: usize,
    /// Most header fields in a request; more gets 431.
    #[arg(long, default_value_t = config::DEFAULT_LIMIT_REQUEST_FIELDS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    limit_request_fields: usize,
    /// Largest header field in bytes; larger gets 431.
    #[arg(long, default_value_t = config::DEFAULT_LIMIT_REQUEST_FIELD_SIZE, value_parser = clap::value_parser!(u32).range(1..=config::MAX_LIMIT_REQUEST_FIELD_SIZE as i64).map(|n| n as usize))]
    limit_request_field_size: usize,
    /// How long a client has to send a whole request head (from accept, or from its first byte
    /// on a kept-alive connection).
    #[arg(long, default_value = "10s", value_parser = config::parse_duration)]
    header_timeout: std::time::Duration,
    /// How long an idle keep-alive connection waits for the first byte of its next request.
    #[arg(long, default_value = "5s", value_parser = config::parse_duration)]
    keepalive: std::time::Duration,
    /// Slowest request body upload accepted, bytes per second averaged after a 5 s grace
    /// (0: no minimum).
    #[arg(long, default_value = "1KiB", value_parser = config::parse_size)]
    min_body_rate: u64,
    /// Response bytes held per response for a slow reader, so the app's thread is freed early.
    #[arg(long, default_value = "4MiB", value_parser = config::parse_size)]
    response_buffer: u64,
    /// Serve a directory without Python: URL_PREFIX=DIR, e.g. /static/=./staticfiles; repeatable.
    #[arg(long = "static", value_parser = config::parse_static)]
    static_dirs: Vec<(String, PathBuf)>,
    /// Cache static files with a content hash in their name this long, as immutable (e.g. 365d).
    #[arg(long, value_parser = config::parse_duration)]
    static_hashed_max_age: Option<std::time::Duration>,
    /// Compress compressible responses (gzip, br) for clients that accept it.
    #[arg(long)]
    compress: bool,
    /// Smallest response that is compressed.
    #[arg(long, default_value = "1KiB", value_parser = config::parse_size)]
    compress_min_size: u64,
    /// Peers whose X-Forwarded-* and Forwarded headers are believed: addresses and CIDRs,
    /// comma-separated, or * for all.
    #[arg(long, default_value = "127.0.0.1,::1")]
    forwarded_allow_ips: String,
    /// Access log to stdout.
    #[arg(long, value_enum, default_value_t = AccessLog::Off)]
    access_log: AccessLog,
    /// HTTP versions served: 1 (HTTP/1.1 only), 2 (HTTP/2 only), or auto (both: ALPN over TLS,
    /// prior knowledge in clear text).
    #[arg(long, default_value = "auto", value_parser = config::HttpVersions::parse)]
    http: config::HttpVersions,
    /// Streams an HTTP/2 connection may have open at once.
    #[arg(long, default_value_t = config::DEFAULT_H2_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    h2_max_concurrent_streams: u32,
    /// Admin address for /metrics, /healthz and /readyz (off unless set).
    #[arg(long, value_parser = config::parse_bind)]
    admin: Option<std::net::SocketAddr>,
    /// Open client connections the gateway holds at most.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
    /// Threads of the gateway's async runtime [default: half the CPUs, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    gateway_threads: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, String> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let name = self.name.unwrap_or_else(|| {
            let module = self.app.split(':').next().unwrap_or("app");
            module.split('.').next().unwrap_or(module).to_owned()
        });
        let forwarded_allow_ips = config::parse_allow_ips(&self.forwarded_allow_ips)
            .map_err(|e| format!("--forwarded-allow-ips: {e}"))?;
        for (prefix, dir) in &self.static_dirs {
            if !cwd.join(dir).is_dir() {
                return Err(format!(
                    "--static {prefix}={}: not a directory",
                    dir.display()
                ));
            }
        }
        let tls = match (self.certfile, self.keyfile) {
            (Some(certfile), Some(keyfile)) => Some(config::TlsFiles {
                certfile: cwd.join(certfile),
                keyfile: cwd.join(keyfile),
                ca_certs: self.ca_certs.map(|ca| cwd.join(ca)),
            }),
            _ => None,
        };
        let binds = self
            .bind
            .iter()
            .map(|text| {
                let addr =
                    config::parse_bind_addr(&cwd, text).map_err(|e| format!("--bind: {e}"))?;
                Ok(config::BindConfig {
                    addr,
                    tls: tls.clone(),
                    unix_mode: self.unix_mode,
                    proxy_protocol: self.proxy_protocol,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Config {
            source: None,
            apps: vec![AppConfig {
                name,
                app: self.app,
                chdir: self.chdir.map(|dir| cwd.join(dir)),
                binds,
                workers: self.workers as usize,
                threads: self.thread_workers as usize,
                python: config::resolve_python(&cwd, &self.python),
                timeout: self.timeout,
                graceful_timeout: self.graceful_timeout,
                queue_timeout: self.queue_timeout,
                max_body: self.max_body,
                max_requests: Some(self.max_requests).filter(|&n| n > 0),
                max_requests_jitter: self.max_requests_jitter,
                max_rss: self.max_rss.filter(|&n| n > 0),
                worker_lifetime: self.worker_lifetime.filter(|d| !d.is_zero()),
                edge: EdgeConfig {
                    limit_request_line: self.limit_request_line,
                    limit_request_fields: self.limit_request_fields,
                    limit_request_field_size: self.limit_request_field_size,
                    header_timeout: self.header_timeout,
                    keepalive: self.keepalive,
                    min_body_rate: self.min_body_rate,
                    response_buffer: self.response_buffer,
                    static_dirs: self
                        .static_dirs
                        .into_iter()
                        .map(|(prefix, dir)| (prefix, cwd.join(dir)))
                        .collect(),
                    static_hashed_max_age: self.static_hashed_max_age.filter(|d| !d.is_zero()),
                    compress: self.compress,
                    compress_min_size: self.compress_min_size,
                    forwarded_allow_ips,
                    access_log: self.access_log,
                    http: self.http,
                    h2_max_concurrent_streams: self.h2_max_concurrent_streams,
                },
            }],
            admin: self.admin,
            max_connections: self.max_connections,
            gateway_threads: self
                .gateway_threads
                .unwrap_or_else(config::default_gateway_threads),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        },
        Command::Run { config } => match Config::load(&config) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        },
        Command::Check { config } => {
            let loaded = Config::load(&config).map_err(|err| err.to_string());
            let checked = loaded.and_then(|parsed| {
                sluice_gateway::check_tls(&parsed)
                    .map(|()| parsed)
                    .map_err(|err| format!("{}: {err}", config.display()))
            });
            return match checked {
                Ok(parsed) => {
                    println!("{} is valid\n", config.display());
                    print!("{}", parsed.describe());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    // Before any thread starts: it clears the variables systemd set.
    let inherited = sluice_gateway::Inherited::from_env();
    batch_scheduling();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.gateway_threads)
        .thread_name("sluice-gateway")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sluice_gateway::run(config, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Puts this thread, and so every thread and worker process the gateway starts after it (both
/// inherit the policy), under SCHED_BATCH. A gateway thread woken by a worker's answer no longer
/// preempts the Python thread that sent it, which is about to block by itself (on its next
/// request or the GIL); the gateway runs then and finds several answers waiting instead of one.
/// The other way round, a worker thread woken by a request no longer preempts the gateway in the
/// middle of a burst of requests; before, the two took turns one request at a time. Only who
/// runs first on a wake-up changes, not the CPU share, and an idle CPU still takes a woken thread
/// at once: it matters only when the cores are all busy. Measured on 2 CPUs with the bench's
/// 64 connections (2 alternating 5 s runs each, every thread put back under SCHED_OTHER with
/// `chrt` for the other): Django 9.9k/10.6k -> 12.7k/13.3k req/s, Flask 9.9k/11.8k ->
/// 13.9k/13.0k, the gateway 41-47 -> 30-34 CPU µs per request. Best effort: a sandbox that
/// forbids it leaves the default policy.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) on this thread (pid 0) with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(
            "cannot run SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}
