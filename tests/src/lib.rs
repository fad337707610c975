//! The sluice end-to-end test harness: runs the real `sluice` binary (real workers, real Python
//! apps, real sockets) and talks raw HTTP/1.1 to it. The tests themselves live in `tests/tests/`.

pub mod h2flood;
pub mod harness;
pub mod http;
pub mod load;
pub mod tls;
pub mod trickle;
pub mod util;

pub use h2flood::{Flood, FloodKind, FloodReport};
pub use harness::{
    apps_dir, children_of, free_port, python_for_frameworks, sluice_bin, sluice_check,
    sluice_check_with_env, stdlib_python, CheckOutput, ConfigFile, Failure, Sluice, SluiceHandle,
    DEADLINE, START_DEADLINE,
};
pub use http::{get, send, BodyEnd, Conn, Head, Request, Response};
pub use load::{ClientSpec, Load, Outcome, Record, Tally};
pub use tls::{Pair, TestCa, TlsConn};
pub use trickle::{
    ensure_open_file_limit, open_files, Trickle, TrickleKind, TrickleReport, TrickleSpec,
};
pub use util::{
    curl, form_urlencoded, hex, sha256_hex, test_bytes, try_wait_for, wait_for, CookieJar, Hasher,
    Multipart,
};
