//! The edge: everything between a client's socket and the request path. Listening sockets
//! (systemd's included), the connection cap, PROXY headers and TLS; which HTTP version a
//! connection speaks and its clocks; the byte-level screen and the strict checks that refuse
//! bad requests before Python; believing forwarded headers; and what the gateway answers
//! itself (static files) or changes on the way out (compression).

pub(crate) mod activation;
pub(crate) mod admission;
pub(crate) mod compress;
pub(crate) mod connection;
pub(crate) mod delegate;
pub(crate) mod forwarded;
pub(crate) mod framing;
pub(crate) mod proxy_protocol;
pub(crate) mod static_files;
pub(crate) mod strict;
pub(crate) mod timeouts;
pub(crate) mod tls;
