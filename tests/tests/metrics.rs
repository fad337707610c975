//! The admin bind: `/metrics` moves by exactly the traffic sent, the worker gauges tell the truth,
//! restarts are counted by reason, and `/healthz` and `/readyz` answer as a load balancer needs.

use sluice_tests::{get, try_wait_for, wait_for, Conn, Request, Sluice, SluiceHandle, DEADLINE};

/// The value of one series (`name{labels}` exactly as exposed), or 0 if it is absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn scrape(sluice: &SluiceHandle) -> String {
    let response = get(sluice.admin_addr(), "/metrics");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        response.head
    );
    response.text()
}

/// Scrapes until nothing of `app` is in flight, so every request sent has been counted.
fn settled(sluice: &SluiceHandle, app: &str) -> String {
    wait_for(DEADLINE, "no requests in flight", || {
        let text = scrape(sluice);
        (value(
            &text,
            &format!("sluice_requests_in_flight{{app=\"{app}\"}}"),
        ) == 0.0)
            .then_some(text)
    })
}

fn requests(text: &str, class: &str) -> f64 {
    value(
        text,
        &format!("sluice_requests_total{{app=\"shop\",class=\"{class}\"}}"),
    )
}

fn admin_sluice() -> Sluice {
    Sluice::serve("suite:app")
        .arg("--name")
        .arg("shop")
        .arg("--admin")
        .arg("127.0.0.1:0")
}

#[test]
fn counters_move_by_exactly_the_traffic_sent() {
    let sluice = admin_sluice()
        .workers(2)
        .threads(2)
        .arg("--max-body")
        .arg("100")
        .start();
    let before = settled(&sluice, "shop");

    let mut conn = Conn::connect(sluice.addr()).unwrap();
    for _ in 0..7 {
        assert_eq!(
            conn.request(&Request::get("/environ")).unwrap().status(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            conn.request(&Request::get("/nowhere")).unwrap().status(),
            404
        );
    }
    for _ in 0..2 {
        assert_eq!(conn.request(&Request::get("/raise")).unwrap().status(), 500);
    }
    // Refused by the gateway: counted as a 4xx, never queued for Python.
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let too_big = conn
        .request(&Request::post("/echo", vec![b'x'; 1000]))
        .unwrap();
    assert_eq!(too_big.status(), 413);
    // Refused by the strict checks (two Host fields): a 4xx too.
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_raw(b"GET /environ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response("GET").unwrap().status(), 400);

    let after = settled(&sluice, "shop");
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(requests(&after, "2xx") - requests(&before, "2xx"), 7.0);
    assert_eq!(requests(&after, "4xx") - requests(&before, "4xx"), 5.0);
    assert_eq!(requests(&after, "5xx") - requests(&before, "5xx"), 2.0);
    assert_eq!(requests(&after, "3xx") - requests(&before, "3xx"), 0.0);
    assert_eq!(
        delta("sluice_request_duration_seconds_count{app=\"shop\"}"),
        14.0
    );
    assert_eq!(
        delta("sluice_queue_wait_seconds_count{app=\"shop\"}"),
        12.0,
        "{after}"
    );
    // Every request took less than a minute: all of them are in the last finite bucket.
    assert_eq!(
        delta("sluice_request_duration_seconds_bucket{le=\"60.0\",app=\"shop\"}"),
        14.0,
        "{after}"
    );
    assert_eq!(value(&after, "sluice_workers_alive{app=\"shop\"}"), 2.0);
    assert_eq!(
        value(&after, "sluice_python_threads{app=\"shop\",state=\"idle\"}"),
        4.0
    );
    assert_eq!(
        value(&after, "sluice_python_threads{app=\"shop\",state=\"busy\"}"),
        0.0
    );
}

/// With every thread busy, a request goes out behind the one a thread is answering (see the
/// gateway's `pool::lease`). On one thread and many clients that is most requests: each must get its
/// own answer, and reach Python exactly once.
#[test]
fn requests_queued_behind_a_busy_thread_get_their_own_answers() {
    const CLIENTS: usize = 6;
    const EACH: usize = 150;
    let sluice = admin_sluice()
        .workers(1)
        .threads(1)
        .env("SUITE_RECORD", "seen")
        .start();
    let addr = sluice.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                for i in 0..EACH {
                    let body = format!("client {c} request {i}");
                    let resp = conn
                        .request(&Request::post(&format!("/echo?c={c}&i={i}"), body.clone()))
                        .unwrap();
                    assert_eq!((resp.status(), resp.text()), (200, body));
                }
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .expect("a client got another's answer or none");
    }
    let text = settled(&sluice, "shop");
    let queued = value(&text, "sluice_requests_queued_behind_total{app=\"shop\"}");
    assert!(
        queued > 0.0,
        "no request was queued behind another:\n{text}"
    );
    let seen = std::fs::read_to_string(sluice.state_file("seen")).unwrap();
    let mut lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), CLIENTS * EACH, "requests that reached Python");
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(
        lines.len(),
        CLIENTS * EACH,
        "a request reached Python twice"
    );
}

#[test]
fn busy_threads_and_in_flight_requests_show_a_running_request() {
    let sluice = admin_sluice().workers(1).threads(3).start();
    let addr = sluice.addr();
    let slow = std::thread::spawn(move || get(addr, "/sleep?s=3").status());
    let text = wait_for(DEADLINE, "one busy thread", || {
        let text = scrape(&sluice);
        (value(&text, "sluice_python_threads{app=\"shop\",state=\"busy\"}") == 1.0).then_some(text)
    });
    assert_eq!(
        value(&text, "sluice_python_threads{app=\"shop\",state=\"idle\"}"),
        2.0
    );
    assert_eq!(value(&text, "sluice_requests_in_flight{app=\"shop\"}"), 1.0);
    assert_eq!(slow.join().unwrap(), 200);
    let text = settled(&sluice, "shop");
    assert_eq!(
        value(&text, "sluice_python_threads{app=\"shop\",state=\"busy\"}"),
        0.0
    );
}

#[test]
fn worker_restarts_are_counted_by_reason() {
    let sluice = admin_sluice()
        .arg("--max-requests")
        .arg("3")
        .arg("--timeout")
        .arg("1s")
        .start();
    let restarts = |reason: &str| {
        value(
            &scrape(&sluice),
            &format!("sluice_worker_restarts_total{{app=\"shop\",reason=\"{reason}\"}}"),
        )
    };
    let reached = |reason: &str, n: f64| {
        try_wait_for(DEADLINE, || (restarts(reason) >= n).then_some(()))
            .unwrap_or_else(|| panic!("no {reason} restart counted:\n{}", scrape(&sluice)));
    };

    // One at a time, each after the previous replacement is serving: a worker already being
    // replaced is not replaced again, whatever happens to it meanwhile.
    let serving = |pid_before: Option<u32>| {
        wait_for(DEADLINE, "a new worker in rotation", || {
            let text = scrape(&sluice);
            let pids = sluice.worker_pids();
            (value(&text, "sluice_workers_alive{app=\"shop\"}") == 1.0
                && pids.len() == 1
                && Some(pids[0]) != pid_before)
                .then(|| pids[0])
        })
    };
    let first = serving(None);
    assert_eq!(get(sluice.addr(), "/sleep?s=10").status(), 504);
    reached("timeout", 1.0);

    let second = serving(Some(first));
    // SAFETY: kill(2) on a worker of the sluice this test started.
    unsafe { libc::kill(second as libc::pid_t, libc::SIGKILL) };
    reached("crash", 1.0);

    serving(Some(second));
    for _ in 0..3 {
        assert_eq!(get(sluice.addr(), "/environ").status(), 200);
    }
    reached("max_requests", 1.0);

    // Exactly one of each: none was counted twice or under another reason.
    let text = scrape(&sluice);
    for reason in ["max_requests", "timeout", "crash"] {
        let series = format!("sluice_worker_restarts_total{{app=\"shop\",reason=\"{reason}\"}}");
        assert_eq!(value(&text, &series), 1.0, "{text}");
    }
}

#[test]
fn healthz_and_readyz_answer_and_readyz_fails_once_stopping() {
    let mut sluice = admin_sluice().start();
    let admin = sluice.admin_addr();
    let health = get(admin, "/healthz");
    assert_eq!((health.status(), health.text().as_str()), (200, "ok\n"));
    let ready = get(admin, "/readyz");
    assert_eq!((ready.status(), ready.text().as_str()), (200, "ready\n"));
    assert_eq!(get(admin, "/nothing").status(), 404);

    // A request in flight keeps the gateway draining after SIGTERM; meanwhile it is not ready.
    let addr = sluice.addr();
    let slow = std::thread::spawn(move || get(addr, "/sleep?s=3").status());
    wait_for(DEADLINE, "the slow request in flight", || {
        (value(&scrape(&sluice), "sluice_requests_in_flight{app=\"shop\"}") == 1.0).then_some(())
    });
    sluice.signal(libc::SIGTERM);
    let stopping = wait_for(DEADLINE, "readyz to fail", || {
        let ready = get(admin, "/readyz");
        (ready.status() == 503).then_some(ready)
    });
    assert_eq!(stopping.text(), "stopping\n");
    assert_eq!(get(admin, "/healthz").status(), 200);
    assert_eq!(slow.join().unwrap(), 200);
    assert!(sluice.wait_exit(DEADLINE).success());
}

#[test]
fn no_admin_bind_unless_asked() {
    let sluice = Sluice::serve("suite:app").start();
    get(sluice.addr(), "/environ");
    assert_eq!(sluice.count_log(|line| line.contains("admin listening")), 0);
}
