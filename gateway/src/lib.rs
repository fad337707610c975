//! sluice's gateway: the `sluice` command. It takes HTTP connections, buffers request bodies,
//! and forwards framed requests over Unix sockets to the Python worker processes it supervises.
//!
//! Layout:
//! - [`config`]: the YAML route table and the one-app command line, both as a [`Config`].
//! - `gateway`: the running whole: binds, apps, and what each signal does to them (reload,
//!   scale, stop).
//! - `server`: accept loops and HTTP/1.1 connections per bind.
//! - `framing`: the byte-level screen of each connection (strict HTTP/1.1 framing and limits).
//! - `strict`: the middleware that turns what the screen found, and what a parsed request says
//!   about its Host and target, into 400 / 414 / 431 before any handler runs.
//! - `forward`: the request path (body buffering, the worker exchange, streaming responses).
//! - `pool`: each app's live workers and its pool of worker connections (the queue).
//! - `supervisor`: worker processes: spawn, ready, respawn, recycle, stop; the lifecycle diagram.
//! - `error`: request errors and the one place they become responses.
//! - `shutdown`: the signals the gateway answers.

pub mod config;
mod error;
mod forward;
mod framing;
mod gateway;
mod pool;
mod server;
mod shutdown;
mod strict;
mod supervisor;

pub use config::{AppConfig, Config, ConfigError};
pub use gateway::run;
pub use shutdown::Stop;
