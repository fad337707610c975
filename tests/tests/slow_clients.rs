//! Slow and hostile clients (issue 5): the header timeout, the keep-alive idle timeout, the
//! minimum body rate, the cap on open connections, a slow reader that must not hold a Python
//! thread, and a slowloris attack beside ordinary clients.
//!
//! The attack test measures throughput, so it runs alone: every other test here holds
//! [`EXCLUSIVE`] shared, the attack holds it exclusively.

use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{
    apps_dir, ensure_open_file_limit, get, http, open_files, stdlib_python, test_bytes, wait_for,
    BodyEnd, Conn, Load, Request, Sluice, SluiceHandle, Trickle, TrickleKind, TrickleSpec,
    DEADLINE, START_DEADLINE,
};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `slowclients:app` on one worker process (so its counts are whole) with `threads` threads.
fn start(threads: usize, args: &[&str]) -> SluiceHandle {
    args.iter()
        .fold(
            Sluice::serve("slowclients:app").workers(1).threads(threads),
            |sluice, arg| sluice.arg(arg),
        )
        .start()
}

fn stats(sluice: &SluiceHandle) -> Value {
    get(sluice.addr(), "/stats").json()
}

/// Requests for `path` that reached Python.
fn hits(sluice: &SluiceHandle, path: &str) -> u64 {
    stats(sluice)["hits"][path].as_u64().unwrap_or(0)
}

/// Longer than any cut-off these tests expect, by far: a server that never cuts a trickling
/// client off fails the test instead of hanging it.
const TRICKLE_DEADLINE: Duration = Duration::from_secs(60);

/// Sends `byte` every `every` until the server answers or closes the connection, and asserts
/// that it answered 408 or nothing, no sooner than `timeout` after `since` nor very much later.
fn assert_cut_off(conn: &mut Conn, byte: u8, every: Duration, since: Instant, timeout: Duration) {
    let took = loop {
        // A failed write or read is the server having closed (a reset, when our bytes were
        // still arriving as it closed).
        if conn.send_raw(&[byte]).is_err() || !conn.nothing_pending(every).unwrap_or(false) {
            break since.elapsed();
        }
        assert!(
            since.elapsed() < TRICKLE_DEADLINE,
            "the server let a trickling client go on for {TRICKLE_DEADLINE:?}"
        );
    };
    let status = conn.read_head().ok().map(|head| head.status);
    assert!(
        matches!(status, None | Some(408)),
        "a trickling client cut off after {took:?} got {status:?}"
    );
    assert!(
        at_least(took, timeout) && took < timeout + Duration::from_secs(15),
        "cut off after {took:?}, against a timeout of {timeout:?}"
    );
}

/// The timer cannot fire early, but is rounded to the millisecond.
fn at_least(took: Duration, timeout: Duration) -> bool {
    took + Duration::from_millis(50) >= timeout
}

#[test]
fn a_head_trickled_past_header_timeout_gets_408_and_is_closed() {
    let _shared = shared();
    let sluice = start(2, &["--header-timeout", "1s", "--keepalive", "30s"]);

    // One byte every 100 ms: the client is never quiet for long, so only a deadline on the
    // whole head can cut it off.
    let since = Instant::now();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_raw(b"GET /hit HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .unwrap();
    let every = Duration::from_millis(100);
    assert_cut_off(&mut conn, b'a', every, since, Duration::from_secs(1));

    // A connection that sends nothing at all is closed after the same time, without a 408
    // (it asked nothing; it may be a browser's pre-connect).
    let since = Instant::now();
    let mut silent = Conn::connect(sluice.addr()).unwrap();
    assert!(
        silent.closed_by_peer(Duration::from_secs(15)),
        "a silent connection was not closed (or got an answer) within 15 s"
    );
    let took = since.elapsed();
    assert!(
        at_least(took, Duration::from_secs(1)),
        "closed after {took:?}"
    );

    assert_eq!(hits(&sluice, "/hit"), 0, "a cut-off head reached Python");
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive() {
    let _shared = shared();
    // header_timeout far longer, so a close within it is the keep-alive clock's doing.
    let sluice = start(2, &["--keepalive", "1s", "--header-timeout", "30s"]);
    // A response sent whole, and one streamed through the pump.
    for target in ["/hit", "/stream?mb=2&token=ka"] {
        let mut conn = Conn::connect(sluice.addr()).unwrap();
        let resp = conn.request(&Request::get(target)).unwrap();
        assert_eq!(
            (resp.status(), resp.end),
            (200, BodyEnd::Complete),
            "{target}"
        );
        let since = Instant::now();
        assert!(
            conn.closed_by_peer(Duration::from_secs(15)),
            "{target}: the idle connection was not closed within 15 s with keepalive 1s"
        );
        let took = since.elapsed();
        assert!(
            at_least(took, Duration::from_secs(1)),
            "{target}: closed after {took:?}"
        );
    }
}

/// The idle wait between requests is the keep-alive's, not the header timeout's (which is what
/// hyper's own header timeout would do).
#[test]
fn an_idle_connection_outlives_header_timeout_within_keepalive() {
    let _shared = shared();
    let sluice = start(2, &["--header-timeout", "1s", "--keepalive", "30s"]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    assert_eq!(conn.request(&Request::get("/hit")).unwrap().status(), 200);
    assert!(
        conn.nothing_pending(Duration::from_millis(2500)).unwrap(),
        "an idle connection was closed within keepalive, after header_timeout"
    );
    let resp = conn.request(&Request::get("/hit")).unwrap();
    assert_eq!((resp.status(), resp.text().as_str()), (200, "ok"));
}

/// Once the first byte of the next request arrives, the rest of its head has header_timeout,
/// however short the keep-alive.
#[test]
fn the_first_byte_of_the_next_request_starts_header_timeout() {
    let _shared = shared();
    let sluice = start(2, &["--keepalive", "1s", "--header-timeout", "30s"]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    assert_eq!(conn.request(&Request::get("/hit")).unwrap().status(), 200);
    conn.send_raw(b"GET /hit HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .unwrap();
    let since = Instant::now();
    while since.elapsed() < Duration::from_millis(2500) {
        conn.send_raw(b"a").unwrap();
        assert!(
            conn.nothing_pending(Duration::from_millis(100)).unwrap(),
            "a head begun within keepalive was cut off after {:?}",
            since.elapsed()
        );
    }
    conn.send_raw(b"\r\n\r\n").unwrap();
    let resp = conn.read_response("GET").unwrap();
    assert_eq!((resp.status(), resp.text().as_str()), (200, "ok"));
}

#[test]
fn a_body_below_min_body_rate_gets_408_and_never_reaches_python() {
    let _shared = shared();
    let sluice = start(2, &["--min-body-rate", "1KiB"]);
    let head = |len: usize| {
        format!("POST /upload HTTP/1.1\r\nHost: slow\r\nContent-Length: {len}\r\n\r\n")
    };

    // A pause early in the body is within the grace: it is served.
    let body = test_bytes(64 * 1024, 5);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_raw(head(body.len()).as_bytes()).unwrap();
    conn.send_raw(&body[..body.len() / 2]).unwrap();
    assert!(
        conn.nothing_pending(Duration::from_secs(3)).unwrap(),
        "a body pausing for 3 s at its start was cut off"
    );
    conn.send_raw(&body[body.len() / 2..]).unwrap();
    let resp = conn.read_response("POST").unwrap();
    assert_eq!((resp.status(), resp.text()), (200, body.len().to_string()));

    // 5 bytes a second against a minimum of 1 KiB/s: cut off once the grace is spent.
    let mut slow = Conn::connect(sluice.addr()).unwrap();
    slow.send_raw(head(100_000).as_bytes()).unwrap();
    let since = Instant::now();
    // The grace is 5 s, and 5 bytes are a few milliseconds' worth of 1 KiB/s.
    let every = Duration::from_millis(200);
    assert_cut_off(&mut slow, b'x', every, since, Duration::from_secs(5));
    assert_eq!(
        hits(&sluice, "/upload"),
        1,
        "only the upload that kept up may reach Python"
    );
}

#[test]
fn a_connection_past_max_connections_waits_in_the_backlog_and_is_then_served() {
    let _shared = shared();
    let sluice = start(
        2,
        &[
            "--max-connections",
            "3",
            "--keepalive",
            "60s",
            "--header-timeout",
            "60s",
        ],
    );
    let mut open: Vec<Conn> = (0..3)
        .map(|_| {
            let mut conn = Conn::connect(sluice.addr()).unwrap();
            assert_eq!(conn.request(&Request::get("/hit")).unwrap().status(), 200);
            conn
        })
        .collect();

    // The kernel completes the handshake, but the gateway does not take the connection.
    let mut fourth = Conn::connect(sluice.addr()).unwrap();
    fourth.send(&Request::get("/hit")).unwrap();
    assert!(
        fourth.nothing_pending(Duration::from_millis(1500)).unwrap(),
        "a fourth connection was answered or closed while max_connections 3 were open"
    );

    // One closes: the waiting one is served, not dropped.
    drop(open.remove(0));
    let resp = fourth.read_response("GET").unwrap();
    assert_eq!((resp.status(), resp.text().as_str()), (200, "ok"));

    // The cap still counts the fourth: a fifth waits until another closes.
    let mut fifth = Conn::connect(sluice.addr()).unwrap();
    fifth.send(&Request::get("/hit")).unwrap();
    assert!(
        fifth.nothing_pending(Duration::from_millis(1000)).unwrap(),
        "a fifth connection was served with three open"
    );
    drop(fourth);
    assert_eq!(fifth.read_response("GET").unwrap().status(), 200);
    for conn in &mut open {
        assert_eq!(conn.request(&Request::get("/hit")).unwrap().status(), 200);
    }
}

/// Edge settings are read when a connection is accepted: a reload changes them for the
/// connections that come after it, and a raised `max_connections` admits those waiting.
#[test]
fn a_reload_applies_new_edge_settings_to_new_connections() {
    let _shared = shared();
    let yaml = |keepalive: &str, max_connections: usize| {
        format!(
            "python: {python:?}\nmax_connections: {max_connections}\napps:\n  slow:\n    \
             app: slowclients:app\n    chdir: {chdir:?}\n    bind: [\"127.0.0.1:0\"]\n    \
             workers: 1\n    threads: 2\n    keepalive: {keepalive}\n",
            python = stdlib_python(),
            chdir = apps_dir(),
        )
    };
    let sluice = Sluice::run_config(&yaml("30s", 2)).start();
    let addr = sluice.addr();
    let mut old = Conn::connect(addr).unwrap();
    assert_eq!(old.request(&Request::get("/hit")).unwrap().status(), 200);
    let second = Conn::connect(addr).unwrap();
    let mut waiting = Conn::connect(addr).unwrap();
    waiting.send(&Request::get("/hit")).unwrap();
    assert!(
        waiting
            .nothing_pending(Duration::from_millis(1000))
            .unwrap(),
        "a third connection was served with max_connections 2"
    );

    std::fs::write(sluice.config_path().unwrap(), yaml("1s", 3)).unwrap();
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    sluice.wait_log_after(mark, "the reload to finish", START_DEADLINE, |l| {
        l.contains("reload: done")
    });
    assert_eq!(waiting.read_response("GET").unwrap().status(), 200);

    // A connection accepted now has the new keep-alive...
    drop(second);
    let mut new = Conn::connect(addr).unwrap();
    assert_eq!(new.request(&Request::get("/hit")).unwrap().status(), 200);
    assert!(
        new.closed_by_peer(Duration::from_secs(15)),
        "a connection accepted after the reload did not get keepalive 1s"
    );
    // ...and the one accepted before keeps its own.
    assert!(
        old.nothing_pending(Duration::from_millis(2000)).unwrap(),
        "a connection accepted before the reload lost its keepalive of 30s"
    );
    assert_eq!(old.request(&Request::get("/hit")).unwrap().status(), 200);
}

/// Reads a `/stream` body to its end, checking every byte against the pattern (byte i is
/// i % 256); returns its length and how it ended.
fn read_pattern(conn: &mut Conn) -> (u64, BodyEnd) {
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    let mut at = 0u64;
    let mut first_bad = None;
    let end = conn
        .body(&head, "GET")
        .unwrap()
        .for_each(|piece| {
            for &byte in piece {
                if first_bad.is_none() && byte != at as u8 {
                    first_bad = Some(at);
                }
                at += 1;
            }
        })
        .unwrap();
    assert_eq!(first_bad, None, "the body differs from the pattern");
    (at, end)
}

const MIB: u64 = 1024 * 1024;

/// Asks for `mb` MiB of `/stream` and reads none of it (yet).
fn unread_stream(sluice: &SluiceHandle, mb: u64, token: &str) -> Conn {
    let mut reader = Conn::connect(sluice.addr()).unwrap();
    let target = format!("/stream?mb={mb}&token={token}");
    reader.send(&Request::get(&target)).unwrap();
    reader
}

/// Waits for the app's marker file `name` (`started-`, `sent-` or `closed-TOKEN`).
fn wait_marker(sluice: &SluiceHandle, name: &str) {
    wait_for(DEADLINE, &format!("the app's marker {name}"), || {
        sluice.state_file(name).exists().then_some(())
    });
}

#[test]
fn a_slow_reader_frees_the_python_thread_once_the_response_fits_in_response_buffer() {
    let _shared = shared();
    // 24 MiB is more than the kernel's socket buffers hold for a client that reads nothing, so
    // only the gateway's buffer can take the response off the app's hands.
    let sluice = start(1, &["--response-buffer", "32MiB", "--queue-timeout", "10s"]);
    let mut reader = unread_stream(&sluice, 24, "free");
    // The app has finished the response nobody reads.
    wait_marker(&sluice, "closed-free");
    // The only Python thread is free: it serves another client while the first reads nothing.
    let resp = get(sluice.addr(), "/hit");
    assert_eq!((resp.status(), resp.text().as_str()), (200, "ok"));

    let (len, end) = read_pattern(&mut reader);
    assert_eq!((len, end), (24 * MIB, BodyEnd::Complete));
}

#[test]
fn a_response_larger_than_response_buffer_holds_the_thread_until_the_client_reads() {
    let _shared = shared();
    let sluice = start(1, &["--response-buffer", "1MiB", "--queue-timeout", "1s"]);
    let mut reader = unread_stream(&sluice, 64, "held");
    wait_marker(&sluice, "started-held");
    // The app is held back: its only thread cannot take another request...
    let probe = http::request(sluice.addr(), &Request::get("/hit")).unwrap();
    assert_eq!(probe.status(), 503, "{:?}", probe.text());
    // ...and, a second after it began, it has still not handed over all of its 64 MiB, which
    // far exceed the response buffer plus the socket buffers.
    assert!(
        !sluice.state_file("sent-held").exists(),
        "the app wrote its whole response although the client read none of it"
    );

    let (len, end) = read_pattern(&mut reader);
    assert_eq!((len, end), (64 * MIB, BodyEnd::Complete));
    wait_marker(&sluice, "closed-held");
    assert_eq!(get(sluice.addr(), "/hit").status(), 200);
}

/// Issue 5's proof: 1,000 connections trickling heads and 200 trickling bodies (each reconnecting
/// when cut off) cost ordinary keep-alive clients less than 20% of their throughput, and no
/// Python thread ever serves an attacker. Windows with and without the attack alternate, so a
/// change in the machine's load (it is shared) hits both figures alike.
#[test]
fn ordinary_clients_keep_80_percent_of_their_throughput_under_a_slow_client_attack() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|p| p.into_inner());
    const HEADS: usize = 1000;
    const BODIES: usize = 200;
    const CLIENTS: usize = 4;
    const WINDOW: Duration = Duration::from_secs(6);
    // Baseline, attack, baseline, ...: odd, so baselines surround every attack window.
    const ROUNDS: usize = 7;
    ensure_open_file_limit(4 * (HEADS + BODIES) as u64);

    // Default edge settings (keepalive 5s, min_body_rate 1KiB/s) but for a header timeout short
    // enough that every trickling head is cut off, and reconnects, about twice a window: the
    // attack then costs the gateway accepts and closes too, as a real one would.
    let sluice = start(8, &["--header-timeout", "3s"]);
    let addr = sluice.addr();
    let load = Load::start(CLIENTS, addr, "/hit");
    load.wait_all_served(20, DEADLINE);
    let base_files = open_files(sluice.pid());

    let mut windows = Vec::new();
    let mut reports = Vec::new();
    for round in 0..ROUNDS {
        let attacked = round % 2 == 1;
        let trickle = attacked.then(|| {
            let spec = |kind, connections, target: &str| TrickleSpec {
                addr,
                kind,
                connections,
                target: target.into(),
            };
            let mut trickle = Trickle::start(
                vec![
                    spec(TrickleKind::Head, HEADS, "/trickle-head"),
                    spec(TrickleKind::Body, BODIES, "/trickle-body"),
                ],
                Duration::from_secs(1),
            );
            trickle.wait_open(Duration::from_secs(60));
            // Held by the gateway, not waiting in a backlog.
            wait_for(
                DEADLINE,
                "the gateway to hold the attack's connections",
                || (open_files(sluice.pid()) >= base_files + HEADS + BODIES).then_some(()),
            );
            trickle
        });
        let from = Instant::now();
        // Through the window, watch what Python is doing: never more requests in flight than
        // the ordinary clients plus this probe.
        while from.elapsed() < WINDOW {
            let stats = stats(&sluice);
            let in_flight = stats["in_flight"].as_u64().unwrap();
            assert!(
                in_flight <= CLIENTS as u64 + 1,
                "{in_flight} requests in Python with {CLIENTS} ordinary clients: {stats}"
            );
            // Pacing the probe, not waiting for a condition.
            std::thread::sleep(Duration::from_millis(250));
        }
        windows.push((attacked, from, Instant::now()));
        if let Some(trickle) = trickle {
            reports.push(trickle.stop());
            wait_for(DEADLINE, "the gateway to let go of the attack", || {
                (open_files(sluice.pid()) <= base_files + 10).then_some(())
            });
        }
    }
    let tally = load.stop();
    tally.assert_no_failures("ordinary clients");

    // Complete responses per window, and requests a second over the windows of each kind.
    let served: Vec<(bool, usize, Duration)> = windows
        .iter()
        .map(|&(attacked, from, to)| {
            let n = tally
                .records
                .iter()
                .filter(|r| r.outcome.is_ok() && r.done >= from && r.done < to)
                .count();
            (attacked, n, to - from)
        })
        .collect();
    let rate = |attacked: bool| {
        let (n, time) = served
            .iter()
            .filter(|w| w.0 == attacked)
            .fold((0, Duration::ZERO), |(n, time), w| (n + w.1, time + w.2));
        n as f64 / time.as_secs_f64()
    };
    let per_window: Vec<String> = served
        .iter()
        .map(|&(attacked, n, time)| {
            let label = if attacked { "attack" } else { "baseline" };
            format!("{label} {:.0}/s", n as f64 / time.as_secs_f64())
        })
        .collect();
    let (baseline, attacked) = (rate(false), rate(true));
    let ratio = attacked / baseline;
    eprintln!(
        "ordinary clients: baseline {baseline:.0} req/s, under attack {attacked:.0} req/s, \
         ratio {ratio:.3} ({}); attack: {reports:?}",
        per_window.join(", ")
    );
    assert!(
        ratio >= 0.8,
        "under attack the ordinary clients got {attacked:.0} req/s against {baseline:.0} \
         without: {ratio:.3} < 0.8 ({})",
        per_window.join(", ")
    );

    // No Python thread ever held an attacker: none of their requests got there, and Python never
    // had more in hand than the ordinary clients and the probe.
    let stats = stats(&sluice);
    assert_eq!(stats["hits"]["/trickle-head"], Value::Null, "{stats}");
    assert_eq!(stats["hits"]["/trickle-body"], Value::Null, "{stats}");
    let peak = stats["peak_in_flight"].as_u64().unwrap();
    assert!(peak <= CLIENTS as u64 + 1, "{stats}");
    // The body tricklers were cut off (they cannot keep 1 KiB/s at a byte a second).
    let cut_bodies: u64 = reports.iter().map(|r| r.cut_bodies).sum();
    assert!(cut_bodies > 0, "no trickling body was cut off: {reports:?}");
}
