//! sluice's gateway: the `sluice` command. It takes HTTP connections, buffers request bodies,
//! and forwards framed requests over Unix sockets to the Python worker processes it supervises.
//!
//! Layout, in the order a request meets it (each folder's `mod.rs` says more):
//! - `server`: accept loops per bind; `edge/`: everything between a client's socket and the
//!   request path: listening sockets (`activation`), the connection cap (`admission`), PROXY
//!   headers (`proxy_protocol`), TLS (`tls`), one connection's HTTP version and its end
//!   (`connection`), its clocks (`timeouts`), the byte-level screen (`framing`), the strict
//!   checks (`strict`), believing forwarded headers (`forwarded`), static files
//!   (`static_files`) and compression (`compress`).
//! - `pipeline`: what every request goes through, in order; `context`: what a request carries
//!   (its id, the real client, its times) and the `access_log` line written when it is done.
//! - `forward/`: the request path to Python and back: body intake, checkout of a Python thread,
//!   the response head, the response body.
//! - `pool/`: each app's live workers, the connections to their threads, the lease of one to a
//!   request and the request that may queue behind it (pipelining), one exchange's frames, the
//!   shared memory and large bodies.
//! - `app`: one app as the gateway runs it (`AppState`, its `Route`).
//! - `supervisor/`: worker processes: spawn, ready, respawn, recycle, stop.
//! - `run`: the running whole: binds, app generations, and what each signal does to them
//!   (reload, scale, stop); `shutdown`: the signals; `watch`: the files `reload` watches.
//! - [`config`]: the YAML route table and the one-app command line, both as a [`Config`].
//! - `metrics` and `admin`: per-app metrics and the admin bind (`/metrics`, `/healthz`,
//!   `/readyz`); `error`: request errors and the one place they become responses.

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
mod watch;

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
