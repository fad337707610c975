//! What the gateway answers when there is no room, and where it keeps its worker sockets.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_tests::{get, http, wait_for, BodyEnd, Conn, Request, Sluice, DEADLINE};

/// DESIGN.md: no free Python thread within the queue timeout gets a 503 with Retry-After.
#[test]
fn no_free_thread_within_the_queue_timeout_is_503_with_retry_after() {
    let sluice = Sluice::serve("suite:app")
        .workers(1)
        .threads(1)
        .arg("--queue-timeout")
        .arg("1s")
        .start();
    // Hold the only Python thread: /stream sends its first chunk, then waits for a file that only
    // this test creates, so the thread is busy for as long as the test needs.
    let go = sluice.state_file("go-q1");
    let mut held = Conn::connect(sluice.addr()).unwrap();
    let (head, mut body) = held.stream(&Request::get("/stream?token=q1")).unwrap();
    assert_eq!(head.status, 200);
    body.read_until(b"first\n").unwrap();

    let asked = Instant::now();
    let resp = http::request(sluice.addr(), &Request::get("/pid")).expect("an answer, not a hang");
    let waited = asked.elapsed();
    assert_eq!(resp.status(), 503, "{:?} {:?}", resp.head, resp.text());
    assert_eq!(resp.header("Retry-After"), Some("1"));
    // It waited in the queue for the timeout, rather than being turned away at once.
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );

    // Once the thread is free, the held response completes and requests are served again.
    std::fs::write(&go, b"1").unwrap();
    let (rest, end) = body.read_to_end().unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), "last\n");
    assert_eq!(end, BodyEnd::Complete);
    assert_eq!(get(sluice.addr(), "/pid").status(), 200);
}

/// The worker sockets (and the worker module copy) live in a directory only sluice's user can
/// enter, and it is gone when sluice stops.
#[test]
fn worker_sockets_live_in_a_private_directory_removed_on_exit() {
    let mut sluice = Sluice::serve("suite:app").workers(1).threads(1).start();
    let worker = sluice.worker_pids()[0];
    // The worker's configuration, JSON in its last argument, names its socket.
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let config = cmdline
        .split(|&b| b == 0)
        .rfind(|arg| !arg.is_empty())
        .expect("an argument");
    let config: serde_json::Value = serde_json::from_slice(config).expect("JSON configuration");
    let socket = PathBuf::from(config["socket"].as_str().expect("a socket path"));
    assert!(socket.exists(), "{socket:?}");
    let dir = socket.parent().unwrap().to_owned();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{dir:?} has mode {mode:o}");

    sluice.signal(libc::SIGTERM);
    assert_eq!(sluice.wait_exit(DEADLINE).code(), Some(0));
    wait_for(DEADLINE, "the private directory to be removed", || {
        (!dir.exists()).then_some(())
    });
}
