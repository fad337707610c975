//! sluice's gateway: the `sluice` command. It takes HTTP connections, buffers request bodies,
//! and forwards framed requests over Unix sockets to the Python worker processes it supervises.
//!
//! Layout:
//! - [`config`]: the YAML route table and the one-app command line, both as a [`Config`].
//! - `gateway`: the running whole: binds, apps, and what each signal does to them (reload,
//!   scale, stop).
//! - `server`: accept loops and HTTP/1.1 connections per bind.
//! - `forward`: the request path (body buffering, the worker exchange, streaming responses).
//! - `static_files`: each app's static directories, served without Python.
//! - `compress`: gzip and br for compressible responses, per app.
//! - `pool`: each app's live workers and its pool of worker connections (the queue).
//! - `supervisor`: worker processes: spawn, ready, respawn, recycle, stop; the lifecycle diagram.
//! - `error`: request errors and the one place they become responses.
//! - `shutdown`: the signals the gateway answers.

mod compress;
pub mod config;
mod error;
mod forward;
mod gateway;
mod pool;
mod server;
mod shutdown;
mod static_files;
mod supervisor;

pub use config::{AppConfig, Config, ConfigError};
pub use gateway::run;
pub use shutdown::Stop;
