//! Behind a load balancer and in the logs: forwarded headers believed only from
//! `forwarded_allow_ips`, the request id (reused when sane, generated otherwise, given to the app,
//! returned, logged), and the access log in both formats.

use serde_json::Value;
use sluice_tests::{wait_for, Conn, Request, Response, Sluice, SluiceHandle, DEADLINE};

fn environ(sluice: &SluiceHandle, request: Request) -> (Response, Value) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let response = conn.request(&request).unwrap();
    assert_eq!(response.status(), 200, "{}", response.text());
    let env = response.json();
    (response, env)
}

fn s<'a>(env: &'a Value, key: &str) -> Option<&'a str> {
    env.get(key).and_then(Value::as_str)
}

fn forwarded_request() -> Request {
    Request::get("/environ")
        .header("X-Forwarded-For", "6.6.6.6, 203.0.113.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "shop.example.com")
}

#[test]
fn forwarded_headers_from_a_trusted_peer_set_the_client_scheme_and_host() {
    // The default forwarded_allow_ips is 127.0.0.1 and ::1: the test client is trusted.
    let sluice = Sluice::serve("suite:app").start();
    let (_, env) = environ(&sluice, forwarded_request());
    // 203.0.113.7 is what our trusted peer saw; 6.6.6.6 is only what that client claimed.
    assert_eq!(s(&env, "REMOTE_ADDR"), Some("203.0.113.7"));
    assert_eq!(s(&env, "wsgi.url_scheme"), Some("https"));
    assert_eq!(s(&env, "HTTPS"), Some("on"));
    assert_eq!(s(&env, "HTTP_HOST"), Some("shop.example.com"));
    assert_eq!(s(&env, "SERVER_NAME"), Some("shop.example.com"));
    assert_eq!(s(&env, "SERVER_PORT"), Some("443"));
    // The headers themselves still reach the app.
    assert_eq!(
        s(&env, "HTTP_X_FORWARDED_FOR"),
        Some("6.6.6.6, 203.0.113.7")
    );

    // RFC 7239 Forwarded, read per element, wins over X-Forwarded-*.
    let (_, env) = environ(
        &sluice,
        Request::get("/environ")
            .header(
                "Forwarded",
                "for=192.0.2.60;proto=https;host=\"api.example.com:8443\"",
            )
            .header("X-Forwarded-For", "198.51.100.1"),
    );
    assert_eq!(s(&env, "REMOTE_ADDR"), Some("192.0.2.60"));
    assert_eq!(s(&env, "wsgi.url_scheme"), Some("https"));
    assert_eq!(s(&env, "HTTP_HOST"), Some("api.example.com:8443"));
    assert_eq!(s(&env, "SERVER_PORT"), Some("8443"));

    // Without forwarded headers nothing changes.
    let (_, env) = environ(&sluice, Request::get("/environ"));
    assert_eq!(s(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(s(&env, "wsgi.url_scheme"), Some("http"));
    assert_eq!(env.get("HTTPS"), None);
}

#[test]
fn forwarded_headers_from_other_peers_are_plain_headers() {
    let sluice = Sluice::serve("suite:app")
        .arg("--forwarded-allow-ips")
        .arg("10.0.0.0/8, 192.168.1.1")
        .start();
    let (_, env) = environ(
        &sluice,
        forwarded_request().header("Forwarded", "for=192.0.2.60;proto=https"),
    );
    assert_eq!(s(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(s(&env, "wsgi.url_scheme"), Some("http"));
    assert_eq!(env.get("HTTPS"), None);
    let host = format!("{}", sluice.addr());
    assert_eq!(s(&env, "HTTP_HOST"), Some(host.as_str()));
    assert_eq!(
        s(&env, "HTTP_X_FORWARDED_FOR"),
        Some("6.6.6.6, 203.0.113.7")
    );
    assert_eq!(s(&env, "HTTP_X_FORWARDED_PROTO"), Some("https"));
    assert_eq!(
        s(&env, "HTTP_FORWARDED"),
        Some("for=192.0.2.60;proto=https")
    );
}

#[test]
fn request_ids_are_reused_when_sane_generated_otherwise_and_logged() {
    let sluice = Sluice::serve("suite:app").start();

    // None sent: one is generated, the app sees it, the response carries it.
    let (response, env) = environ(&sluice, Request::get("/environ"));
    let generated = response.header("x-request-id").expect("an id").to_owned();
    assert!(generated.len() >= 16, "{generated}");
    assert_eq!(s(&env, "HTTP_X_REQUEST_ID"), Some(generated.as_str()));
    let (again, _) = environ(&sluice, Request::get("/environ"));
    assert_ne!(again.header("x-request-id"), Some(generated.as_str()));

    // A sane incoming id is kept end to end.
    let sane = "3f2c1a9e-7b1d-4c55-9a0e-0c1b2d3e4f50";
    let (response, env) = environ(
        &sluice,
        Request::get("/environ").header("X-Request-ID", sane),
    );
    assert_eq!(response.header("x-request-id"), Some(sane));
    assert_eq!(s(&env, "HTTP_X_REQUEST_ID"), Some(sane));

    // Insane ones (spaces, quotes, too long) are replaced, for the app too.
    for insane in ["two words", "quote\"d", &"x".repeat(200)] {
        let (response, env) = environ(
            &sluice,
            Request::get("/environ").header("X-Request-ID", insane),
        );
        let id = response.header("x-request-id").unwrap();
        assert_ne!(id, insane);
        assert_eq!(s(&env, "HTTP_X_REQUEST_ID"), Some(id));
    }

    // Gateway-made responses carry it too, and a traceback is logged under it.
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let response = conn
        .request(&Request::get("/raise").header("X-Request-ID", "trace-me-42"))
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.header("x-request-id"), Some("trace-me-42"));
    // The traceback arrives line by line after the first one with the id: wait for its end.
    let last = sluice.wait_log("request_id=trace-me-42 RuntimeError", DEADLINE);
    assert!(last.contains("boom-before"), "{last}");
}

/// The access-log lines of `sluice` so far, as JSON objects.
fn json_lines(sluice: &SluiceHandle) -> Vec<Value> {
    sluice
        .log()
        .iter()
        .filter_map(|line| line.find('{').map(|at| &line[at..]))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|v| v.get("request_id").is_some())
        .collect()
}

#[test]
fn json_access_log_has_one_line_per_request_with_its_fields() {
    let sluice = Sluice::serve("suite:app")
        .arg("--name")
        .arg("shop")
        .arg("--access-log")
        .arg("json")
        .start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let ok = conn
        .request(
            &Request::get("/sleep?s=0.05&x=1")
                .header("User-Agent", "probe/1.0")
                .header("Referer", "http://example.com/")
                .header("X-Forwarded-For", "203.0.113.7"),
        )
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body_len = ok.body.len() as u64;
    let missing = conn
        .request(&Request::post("/echo", vec![b'x'; 100]).header("X-Request-ID", "post-1"))
        .unwrap();
    assert_eq!(missing.status(), 200);

    let lines = wait_for(DEADLINE, "two access-log lines", || {
        let lines = json_lines(&sluice);
        (lines.len() >= 2).then_some(lines)
    });
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["app"], "shop");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/sleep");
    assert_eq!(first["query"], "s=0.05&x=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], body_len);
    assert_eq!(first["client"], "203.0.113.7");
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(first["user_agent"], "probe/1.0");
    assert_eq!(first["referer"], "http://example.com/");
    assert_eq!(first["request_id"], ok.header("x-request-id").unwrap());
    let total = first["total_ms"].as_f64().unwrap();
    let python = first["python_ms"].as_f64().unwrap();
    let queue = first["queue_ms"].as_f64().unwrap();
    // The app slept 50 ms: that time is Python's, and within the total.
    assert!(python >= 50.0 && python <= total, "{first}");
    assert!(queue >= 0.0 && queue <= total, "{first}");
    let second = &lines[1];
    assert_eq!(
        (second["method"].as_str(), second["request_id"].as_str()),
        (Some("POST"), Some("post-1"))
    );
    assert_eq!(second["bytes"], 100);
}

#[test]
fn combined_access_log_is_nginx_shaped_and_rejections_are_logged_without_python() {
    let sluice = Sluice::serve("suite:app")
        .arg("--access-log")
        .arg("combined")
        .arg("--max-body")
        .arg("10")
        .start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let ok = conn
        .request(&Request::get("/environ?q=%22x%22").header("User-Agent", "a \"quoted\" agent"))
        .unwrap();
    assert_eq!(ok.status(), 200);
    let id = ok.header("x-request-id").unwrap().to_owned();
    let line = sluice.wait_log(&format!("rid={id}"), DEADLINE);
    // 127.0.0.1 - - [23/Nov/2026:10:04:05 +0000] "GET /environ?q=%22x%22 HTTP/1.1" 200 N "-" "a \x22quoted\x22 agent" app=suite rid=... total_ms=... queue_ms=... python_ms=... peer=...
    let at = line.find("127.0.0.1 - - [").expect("combined prefix");
    let line = &line[at..];
    let expected_request = "\"GET /environ?q=%22x%22 HTTP/1.1\" 200 ";
    assert!(line.contains(expected_request), "{line}");
    assert!(
        line.contains(&format!(" 200 {} \"-\" ", ok.body.len())),
        "{line}"
    );
    assert!(line.contains("\"a \\x22quoted\\x22 agent\""), "{line}");
    assert!(line.contains(" app=suite "), "{line}");
    assert!(!line.contains("python_ms=-"), "{line}");

    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let rejected = conn
        .request(&Request::post("/echo", vec![b'x'; 100]).header("X-Request-ID", "too-big-1"))
        .unwrap();
    assert_eq!(rejected.status(), 413);
    let line = sluice.wait_log("rid=too-big-1", DEADLINE);
    assert!(line.contains("\"POST /echo HTTP/1.1\" 413 "), "{line}");
    // It never reached Python: no queue or Python time.
    assert!(line.contains("queue_ms=- python_ms=-"), "{line}");
}

#[test]
fn no_access_log_unless_asked() {
    let sluice = Sluice::serve("suite:app").start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let ok = conn.request(&Request::get("/environ")).unwrap();
    let id = ok.header("x-request-id").unwrap().to_owned();
    conn.request(&Request::get("/environ")).unwrap();
    assert_eq!(sluice.count_log(|line| line.contains(&id)), 0);
}

#[test]
fn static_files_get_an_id_and_a_log_line_without_python_times() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "static bytes\n").unwrap();
    let sluice = Sluice::serve("suite:app")
        .arg("--static")
        .arg(format!("/static/={}", dir.path().display()))
        .arg("--access-log")
        .arg("json")
        .start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let response = conn
        .request(&Request::get("/static/a.txt").header("X-Request-ID", "static-1"))
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "static bytes\n");
    assert_eq!(response.header("x-request-id"), Some("static-1"));
    let line = wait_for(DEADLINE, "the static file's log line", || {
        json_lines(&sluice)
            .into_iter()
            .find(|line| line["request_id"] == "static-1")
    });
    assert_eq!(line["path"], "/static/a.txt");
    assert_eq!(line["bytes"], 13);
    assert_eq!(line["python_ms"], Value::Null);
    assert_eq!(line["queue_ms"], Value::Null);
}
