//! sluice's gateway: the `sluice` command. It takes HTTP connections, buffers request bodies,
//! and forwards framed requests over Unix sockets to the Python worker processes it supervises.
//!
//! Layout:
//! - [`config`]: the YAML route table and the one-app command line, both as a [`Config`].
//! - `gateway`: the running whole: binds, apps, and what each signal does to them (reload,
//!   scale, stop).
//! - `server`: accept loops per bind (TLS handshakes included) and what every request goes
//!   through.
//! - `connection`: one client connection: HTTP/1.1 or HTTP/2 (ALPN, h2c preface), and how it
//!   ends (idle, drained).
//! - `context`: what a request carries through the gateway (its id, the real client after
//!   `proxy`'s reading of forwarded headers, its times) and the middleware that sets it up and
//!   writes the `access_log` line.
//! - `activation`: listening sockets passed by systemd (socket activation).
//! - `proxy_protocol`: the PROXY protocol header (v1, v2) a TCP load balancer puts first.
//! - `tls`: TLS termination (rustls): a TLS bind's certificate and key, swapped on SIGHUP.
//! - `admission`: the gateway-wide cap on open client connections, and the open-file limit.
//! - `clock`: a client connection's header and keep-alive timeouts.
//! - `framing`: the byte-level screen of each connection (strict HTTP/1.1 framing and limits).
//! - `strict`: the middleware that turns what the screen found, and what a parsed request says
//!   about its Host and target, into 400 / 414 / 431 before any handler runs.
//! - `forward`: the request path (body buffering, the worker exchange, streaming responses).
//! - `static_files`: each app's static directories, served without Python.
//! - `compress`: gzip and br for compressible responses, per app.
//! - `pool`: each app's live workers and its pool of worker connections (the queue).
//! - `relay`: a request queued behind another on a busy worker connection (pipelining).
//! - `shared`: the memory each worker connection shares with its worker thread, for request
//!   bodies and response chunks.
//! - `supervisor`: worker processes: spawn, ready, respawn, recycle, stop; the lifecycle diagram.
//! - `metrics` and `admin`: the per-app metrics and the admin bind that serves them with
//!   `/healthz` and `/readyz`.
//! - `error`: request errors and the one place they become responses.
//! - `shutdown`: the signals the gateway answers.

mod access_log;
mod admin;
mod app;
pub mod config;
mod context;
mod edge;
mod error;
mod forward;
mod metrics;
mod pipeline;
mod pool;
mod run;
mod server;
mod shutdown;
mod supervisor;

pub use config::{AppConfig, Config, ConfigError};
pub use edge::activation::Inherited;
pub use edge::tls::{check as check_tls, TlsError};
pub use run::run;
pub use shutdown::Stop;

/// What the fuzz targets in `fuzz/` drive: the byte-level framing scanner. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::edge::framing::{Fault, Limits, Scanner, Stop, MAX_HEAD_BYTES};
}
