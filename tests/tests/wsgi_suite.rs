//! WSGI conformance end to end: every scenario runs against `suite:app` and against
//! `suite:validated` (the same app behind `wsgiref.validate`, which turns sloppy server behaviour
//! into assertion errors), each on its own sluice with 2 workers x 4 threads.

use std::collections::HashSet;
use std::io::Write;

use serde_json::Value;
use sluice_tests::{
    get, send, sha256_hex, test_bytes, wait_for, BodyEnd, Conn, Hasher, Request, Sluice,
    SluiceHandle, DEADLINE,
};

/// The request-body limit of the suite's sluice: small, so 413 is cheap to provoke.
const MAX_BODY: usize = 1024 * 1024;

fn start(app: &str) -> SluiceHandle {
    Sluice::serve(app)
        .workers(2)
        .threads(4)
        .arg("--max-body")
        .arg(MAX_BODY.to_string())
        .start()
}

/// One `#[test]` per scenario and app, so a failure names both.
macro_rules! for_both_apps {
    ($($name:ident),* $(,)?) => {
        mod app {
            $( #[test] fn $name() { super::$name(&super::start("suite:app")); } )*
        }
        mod validated {
            $( #[test] fn $name() { super::$name(&super::start("suite:validated")); } )*
        }
    };
}

for_both_apps!(
    environ_of_a_get,
    environ_of_a_post,
    unknown_path_is_404,
    input_modes,
    input_of_a_bodyless_request_is_empty,
    chunked_upload_gets_real_content_length,
    expect_100_continue,
    expect_100_continue_over_limit_is_413_without_body,
    body_over_max_is_413,
    chunked_body_over_max_is_413,
    write_callable,
    exc_info_replaces_headers,
    raise_before_start_response_is_500_without_traceback,
    raise_after_headers_cuts_response_off,
    close_is_called_on_success,
    close_is_called_on_error,
    close_is_called_on_disconnect,
    iteration_stops_at_the_content_length,
    stream_first_chunk_arrives_before_last_is_produced,
    head_has_no_body_and_connection_survives,
    repeated_headers,
    bad_header_crlf_is_500,
    bad_header_nonlatin_is_500,
    headers_too_large_to_send_are_500,
    content_length_longer_than_body_is_cut_off,
    content_length_shorter_than_body_is_honoured,
    big_body_50_mib,
    print_and_logging_reach_the_log,
    file_wrapper,
    many_requests_on_one_keep_alive_connection,
    concurrent_requests,
);

fn environ(resp: &sluice_tests::Response) -> serde_json::Map<String, Value> {
    assert_eq!(resp.status(), 200, "body: {}", resp.text());
    match resp.json() {
        Value::Object(m) => m,
        other => panic!("environ is not an object: {other}"),
    }
}

fn s<'a>(env: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    env.get(key).and_then(Value::as_str)
}

/// Bytes as the latin-1 string the suite's JSON carries them as.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn environ_of_a_get(sluice: &SluiceHandle) {
    let addr = sluice.addr();
    let mut conn = Conn::connect(addr).unwrap();
    let target = "/environ/caf%C3%A9?x=1&y=%20&z=caf%C3%A9";
    let resp = conn
        .request(
            &Request::get(target)
                .header("X_Spoof", "1")
                .header("X-Real", "2"),
        )
        .unwrap();
    let env = environ(&resp);
    assert_eq!(s(&env, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(s(&env, "SCRIPT_NAME"), Some(""));
    // PEP 3333: PATH_INFO is percent-decoded bytes carried as latin-1 code points.
    assert_eq!(s(&env, "PATH_INFO"), Some("/environ/caf\u{c3}\u{a9}"));
    assert_eq!(s(&env, "QUERY_STRING"), Some("x=1&y=%20&z=caf%C3%A9"));
    assert_eq!(s(&env, "RAW_URI"), Some(target));
    assert_eq!(s(&env, "SERVER_NAME"), Some("127.0.0.1"));
    assert_eq!(
        s(&env, "SERVER_PORT"),
        Some(addr.port().to_string().as_str())
    );
    assert_eq!(s(&env, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
    assert_eq!(s(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(
        s(&env, "REMOTE_PORT"),
        Some(conn.local_addr().port().to_string().as_str())
    );
    assert_eq!(s(&env, "HTTP_HOST"), Some(addr.to_string().as_str()));
    assert_eq!(s(&env, "HTTP_X_REAL"), Some("2"));
    // A header spelled with `_` would collide with `X-Spoof` after the dash-to-underscore
    // mapping; it must be dropped, not smuggled in.
    assert!(!env.contains_key("HTTP_X_SPOOF"), "env: {env:?}");
    // Bodyless GET: no CONTENT_* worth the name, and never as HTTP_CONTENT_*.
    for key in ["CONTENT_TYPE", "CONTENT_LENGTH"] {
        assert!(
            s(&env, key).is_none_or(|v| v.is_empty() || (key == "CONTENT_LENGTH" && v == "0")),
            "{key} = {:?}",
            env.get(key)
        );
    }
    assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
    assert!(!env.contains_key("HTTP_CONTENT_LENGTH"));
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.input_terminated"], true);
    assert_eq!(env["wsgi.multithread"], true, "--threads 4");
    assert_eq!(env["wsgi.multiprocess"], true, "--workers 2");
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["has_wsgi.input"], true);
    assert_eq!(env["has_wsgi.errors"], true);
    assert_eq!(env["has_wsgi.file_wrapper"], true);
}

fn environ_of_a_post(sluice: &SluiceHandle) {
    let resp = send(
        sluice.addr(),
        &Request::post("/environ/x", b"hello".to_vec())
            .header("Content-Type", "text/plain; charset=utf-8"),
    );
    let env = environ(&resp);
    assert_eq!(s(&env, "REQUEST_METHOD"), Some("POST"));
    assert_eq!(s(&env, "PATH_INFO"), Some("/environ/x"));
    assert_eq!(s(&env, "QUERY_STRING"), Some(""));
    assert_eq!(s(&env, "CONTENT_TYPE"), Some("text/plain; charset=utf-8"));
    assert_eq!(s(&env, "CONTENT_LENGTH"), Some("5"));
    assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
    assert!(!env.contains_key("HTTP_CONTENT_LENGTH"));
}

fn unknown_path_is_404(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/no/such/thing");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text(), "not found");
}

/// What `wsgi.input.readline(limit)` called until empty returns for `body`.
fn readlines(body: &[u8], limit: Option<usize>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let line = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let n = limit.map_or(line, |l| line.min(l));
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

fn expected_chunks(mode: &str, body: &[u8]) -> Vec<Vec<u8>> {
    match mode {
        "read" => vec![body.to_vec()],
        "readn" => body.chunks(7).map(<[u8]>::to_vec).collect(),
        "readline" | "readlines" | "iter" => readlines(body, None),
        "readline_sized" => readlines(body, Some(5)),
        _ => unreachable!(),
    }
}

fn input_modes(sluice: &SluiceHandle) {
    // Binary bytes and lines of every length, including ones longer than any plausible internal
    // buffer, plus a final line without a newline.
    let mut big = Vec::new();
    for i in 0..400usize {
        big.extend_from_slice(&test_bytes(i * 7 % 1500, i as u32 + 1));
        big.push(b'\n');
    }
    big.extend_from_slice(
        &test_bytes(70_000, 9)
            .into_iter()
            .filter(|&b| b != b'\n')
            .collect::<Vec<_>>(),
    );
    assert!(big.len() < MAX_BODY);
    let small = b"line one\nline two\n\n\xff\xe9 binary\nno newline at end".to_vec();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    for body in [small, big] {
        for mode in [
            "read",
            "readn",
            "readline",
            "readline_sized",
            "readlines",
            "iter",
        ] {
            for chunked in [false, true] {
                let mut req = Request::post(&format!("/input?mode={mode}"), body.clone());
                if chunked {
                    req = req.chunked(&[1000, 1, 333]);
                }
                let resp = conn.request(&req).unwrap();
                assert_eq!(resp.status(), 200, "{mode}: {}", resp.text());
                let json = resp.json();
                let want: Vec<String> = expected_chunks(mode, &body)
                    .iter()
                    .map(|c| latin1(c))
                    .collect();
                let got: Vec<String> = json["chunks"]
                    .as_array()
                    .expect("chunks")
                    .iter()
                    .map(|c| c.as_str().expect("chunk str").to_string())
                    .collect();
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{mode} chunked={chunked}: chunk count"
                );
                assert!(got == want, "{mode} chunked={chunked}: chunks differ");
                assert_eq!(json["total"], body.len(), "{mode} chunked={chunked}");
                assert_eq!(json["after"], "b''", "{mode}: read after the end");
            }
        }
    }
}

fn input_of_a_bodyless_request_is_empty(sluice: &SluiceHandle) {
    // input_terminated promises read() returns at the end of the body: with no body, at once.
    let resp = get(sluice.addr(), "/input?mode=read");
    assert_eq!(resp.status(), 200);
    let json = resp.json();
    assert_eq!(json["chunks"], serde_json::json!([""]));
    assert_eq!(json["total"], 0);
    let resp = get(sluice.addr(), "/input?mode=readline");
    assert_eq!(resp.json()["chunks"], serde_json::json!([]));
}

fn chunked_upload_gets_real_content_length(sluice: &SluiceHandle) {
    let all = test_bytes(200_000, 3);
    // One connection for all of them: chunked request bodies must be consumed exactly.
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    // One-byte chunks only for a small body: each costs a few bytes of framing.
    let cases: [(&[usize], usize); 5] = [
        (&[1], 5000),
        (&[7, 3], 200_000),
        (&[4096], 200_000),
        (&[65536, 1, 1000], 200_000),
        (&[200_000], 200_000),
    ];
    for (sizes, len) in cases {
        let body = &all[..len];
        let resp = conn
            .request(&Request::post("/echo", body.to_vec()).chunked(sizes))
            .unwrap();
        assert_eq!(resp.status(), 200, "sizes {sizes:?}");
        assert_eq!(
            resp.header("X-Environ-Content-Length"),
            Some(body.len().to_string().as_str()),
            "sizes {sizes:?}"
        );
        assert_eq!(
            resp.header("X-Body-Sha256"),
            Some(sha256_hex(body).as_str()),
            "sizes {sizes:?}"
        );
        assert!(resp.body == body, "sizes {sizes:?}: echoed body differs");
    }
}

fn expect_100_continue(sluice: &SluiceHandle) {
    let body = test_bytes(100_000, 4);
    let req = Request::post("/echo", body.clone()).header("Expect", "100-continue");
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_head(&req).unwrap();
    // The client must not need the body to get this far.
    let interim = conn.read_head().unwrap();
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send_body(&req).unwrap();
    let resp = conn.read_response("POST").unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("X-Body-Sha256"),
        Some(sha256_hex(&body).as_str())
    );
    assert!(resp.body == body);
}

fn expect_100_continue_over_limit_is_413_without_body(sluice: &SluiceHandle) {
    let req = Request::post("/echo", vec![0u8; MAX_BODY + 1]).header("Expect", "100-continue");
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_head(&req).unwrap();
    // The declared length alone decides: the final 413 comes without the body being sent.
    let resp = conn.read_response("POST").unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.interim.is_empty(), "no 100 Continue before a 413");
}

/// Push `req`'s body from another thread (the server may stop reading it half-way, which would
/// block a single-threaded client forever) and read the response here.
fn send_refusable(conn: &mut Conn, req: &Request) -> sluice_tests::Response {
    conn.send_head(req).unwrap();
    let mut writer = conn.writer().unwrap();
    let body = req.body_bytes();
    let pusher = std::thread::spawn(move || {
        // Errors are expected once the server gives up on the body.
        let _ = writer.write_all(&body);
    });
    let resp = conn.read_response(&req.method).unwrap();
    drop(conn.writer().map(|w| w.shutdown(std::net::Shutdown::Both)));
    pusher.join().unwrap();
    resp
}

fn body_over_max_is_413(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let resp = send_refusable(&mut conn, &Request::post("/echo", vec![b'x'; MAX_BODY + 1]));
    assert_eq!(resp.status(), 413);
    // Exactly at the limit is fine.
    let resp = send(sluice.addr(), &Request::post("/echo", vec![b'y'; MAX_BODY]));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body.len(), MAX_BODY);
}

fn chunked_body_over_max_is_413(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let req = Request::post("/echo", vec![b'x'; MAX_BODY + 1]).chunked(&[65536]);
    let resp = send_refusable(&mut conn, &req);
    assert_eq!(resp.status(), 413);
    let req = Request::post("/echo", vec![b'y'; MAX_BODY]).chunked(&[65536]);
    let resp = send(sluice.addr(), &req);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body.len(), MAX_BODY);
}

fn write_callable(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/write");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "one,two,three");
    assert_eq!(resp.end, BodyEnd::Complete);
}

fn exc_info_replaces_headers(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/exc_info");
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text(), "handled");
}

fn raise_before_start_response_is_500_without_traceback(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/raise");
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.end, BodyEnd::Complete);
    let body = resp.text();
    assert!(
        !body.contains("boom-before"),
        "body leaks the error: {body}"
    );
    assert!(
        !body.contains("Traceback"),
        "body leaks a traceback: {body}"
    );
    sluice.wait_log("boom-before", DEADLINE);
    sluice.wait_log("Traceback", DEADLINE);
}

fn raise_after_headers_cuts_response_off(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/raise-after");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.end,
        BodyEnd::CutOff,
        "an error after the head must not look like a complete body (got {:?})",
        resp.text()
    );
    assert!(!resp.text().contains("boom-after"));
    sluice.wait_log("boom-after", DEADLINE);
}

fn wait_for_file(sluice: &SluiceHandle, name: &str) {
    let path = sluice.state_file(name);
    wait_for(DEADLINE, &format!("{}", path.display()), || {
        path.exists().then_some(())
    });
}

fn close_is_called_on_success(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/close?token=ok&mode=ok");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "chunk-1\nchunk-2\nchunk-3\n");
    assert_eq!(resp.end, BodyEnd::Complete);
    wait_for_file(sluice, "closed-ok");
}

fn close_is_called_on_error(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/close?token=err&mode=error");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.end, BodyEnd::CutOff);
    wait_for_file(sluice, "closed-err");
    sluice.wait_log("close-error-err", DEADLINE);
}

fn close_is_called_on_disconnect(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    {
        let (head, mut body) = conn
            .stream(&Request::get("/close?token=gone&mode=slow"))
            .unwrap();
        assert_eq!(head.status, 200);
        let got = body.read_until(b"tick-1\n").unwrap();
        assert!(sluice_tests::http::contains(&got, b"tick-1\n"));
    }
    assert!(!sluice.state_file("closed-gone").exists());
    drop(conn);
    // The generator would tick for 60 s; the marker within the deadline means the server
    // noticed the disconnect and closed the iterable.
    wait_for_file(sluice, "closed-gone");
}

/// PEP 3333: the server "should stop iterating over the response when enough data has been
/// sent". The iterable declares 8 bytes and yields them first: it is closed, never resumed.
fn iteration_stops_at_the_content_length(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/close?token=len&mode=length");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "chunk-1\n");
    assert_eq!(resp.end, BodyEnd::Complete);
    wait_for_file(sluice, "closed-len");
    // close() runs after iteration stops, so a resumed generator would have left its marker.
    assert!(!sluice.state_file("resumed-len").exists());
}

fn stream_first_chunk_arrives_before_last_is_produced(sluice: &SluiceHandle) {
    let go = sluice.state_file("go-s1");
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let (head, mut body) = conn.stream(&Request::get("/stream?token=s1")).unwrap();
    assert_eq!(head.status, 200);
    let first = body.read_until(b"first\n").unwrap();
    assert_eq!(first, b"first\n");
    // The app cannot produce "last" until go-s1 exists, and only we create it: receiving
    // "first" now proves the server did not buffer the whole body.
    assert!(!go.exists());
    std::fs::write(&go, b"1").unwrap();
    let (rest, end) = body.read_to_end().unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), "last\n");
    assert_eq!(end, BodyEnd::Complete);
}

fn head_has_no_body_and_connection_survives(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let resp = conn.request(&Request::head("/big?mb=1")).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("Content-Length"), Some("1048576"));
    assert!(resp.body.is_empty());
    // Any body bytes sent after the HEAD head would be parsed as this response's status line.
    let resp = conn.request(&Request::get("/pid")).unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().parse::<u32>().is_ok(), "{:?}", resp.text());
}

fn repeated_headers(sluice: &SluiceHandle) {
    let resp = send(
        sluice.addr(),
        &Request::get("/headers")
            .header("X-Multi", "a")
            .header("X-Multi", "b")
            .header("Cookie", "c=1")
            .header("Cookie", "d=2"),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header_all("Set-Cookie"),
        vec!["a=1; Path=/", "b=2; Path=/"]
    );
    let json = resp.json();
    assert_eq!(json["HTTP_X_MULTI"], "a, b");
    // Cookies are joined with "; " (RFC 6265), not ", ".
    assert_eq!(json["HTTP_COOKIE"], "c=1; d=2");
}

fn bad_header(sluice: &SluiceHandle, kind: &str) {
    let mark = sluice.log_len();
    let resp = get(sluice.addr(), &format!("/bad-header?kind={kind}"));
    assert_eq!(resp.status(), 500, "{kind}");
    assert!(
        resp.header("X-Injected").is_none(),
        "header injection: {:?}",
        resp.head
    );
    assert!(resp.header("X-Bad").is_none(), "{:?}", resp.head);
    assert!(!resp.text().contains("must not be sent"));
    // Named by sluice's check ("X-Bad"), or by wsgiref.validate's, which gets to a CR/LF first.
    sluice.wait_log_after(mark, "a complaint about X-Bad", DEADLINE, |l| {
        l.contains("X-Bad") || l.contains("Bad header value")
    });
}

fn bad_header_crlf_is_500(sluice: &SluiceHandle) {
    bad_header(sluice, "crlf");
}

fn bad_header_nonlatin_is_500(sluice: &SluiceHandle) {
    bad_header(sluice, "nonlatin");
}

/// Response headers too large for a frame to the gateway: the app's start_response raises, the
/// client gets 500, and the worker and the gateway go on serving.
fn headers_too_large_to_send_are_500(sluice: &SluiceHandle) {
    let mark = sluice.log_len();
    let resp = get(sluice.addr(), "/bad-header?kind=huge");
    assert_eq!(resp.status(), 500);
    assert!(resp.header("X-Bad").is_none(), "{:?}", resp.head);
    sluice.wait_log_after(mark, "the reason in the log", DEADLINE, |l| {
        l.contains("response headers cannot be sent")
    });
    assert_eq!(get(sluice.addr(), "/environ").status(), 200);
}

fn content_length_longer_than_body_is_cut_off(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/content-length?declared=10&actual=5");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("Content-Length"), Some("10"));
    assert_eq!(resp.end, BodyEnd::CutOff);
    assert_eq!(resp.body, b"xxxxx");
}

fn content_length_shorter_than_body_is_honoured(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let resp = conn
        .request(&Request::get("/content-length?declared=5&actual=10"))
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body, b"xxxxx");
    assert_eq!(resp.end, BodyEnd::Complete);
    // The surplus must not leak into the connection: the next response on it is either a clean
    // one or the server closed the connection.
    match conn.request(&Request::get("/pid")) {
        Ok(resp) => assert_eq!(resp.status(), 200, "{:?}", resp.head),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
            ),
            "surplus bytes leaked into the next response: {e}"
        ),
    }
}

fn big_body_50_mib(sluice: &SluiceHandle) {
    let mib: Vec<u8> = (0..=255u8).cycle().take(1024 * 1024).collect();
    let mut want = Hasher::new();
    for _ in 0..50 {
        want.update(&mib);
    }
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let (head, body) = conn.stream(&Request::get("/big?mb=50")).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("52428800"));
    let mut got = Hasher::new();
    let end = body.for_each(|d| got.update(d)).unwrap();
    assert_eq!(end, BodyEnd::Complete);
    assert_eq!(got.len(), 50 * 1024 * 1024);
    assert_eq!(got.hex(), want.hex());
}

fn print_and_logging_reach_the_log(sluice: &SluiceHandle) {
    let resp = get(sluice.addr(), "/print?token=p7q");
    assert_eq!(resp.status(), 200);
    for what in ["stdout-p7q", "stderr-p7q", "log-p7q", "errors-p7q"] {
        let line = sluice
            .wait_log_line(DEADLINE, |l| l.contains(what) && l.contains("app=suite"))
            .unwrap_or_else(|| {
                panic!(
                    "no log line with {what:?} and app=suite; output:\n{}",
                    sluice.log_text()
                )
            });
        eprintln!("found: {line}");
    }
}

fn file_wrapper(sluice: &SluiceHandle) {
    let want: Vec<u8> = (0..300 * 1024usize)
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect();
    // Twice: the first request creates the file, the second serves an existing one.
    for _ in 0..2 {
        let resp = get(sluice.addr(), "/file");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.end, BodyEnd::Complete);
        assert_eq!(resp.body.len(), want.len());
        assert_eq!(sha256_hex(&resp.body), sha256_hex(&want));
    }
}

fn many_requests_on_one_keep_alive_connection(sluice: &SluiceHandle) {
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let local = conn.local_addr();
    let mut pids = HashSet::new();
    for i in 0..200u32 {
        let resp = if i % 2 == 0 {
            conn.request(&Request::get("/pid")).unwrap()
        } else {
            let body = test_bytes(i as usize * 13, i);
            let resp = conn.request(&Request::post("/echo", body.clone())).unwrap();
            assert!(resp.body == body, "request {i}");
            resp
        };
        assert_eq!(resp.status(), 200, "request {i}");
        assert!(
            !resp.head.has_token("Connection", "close"),
            "request {i}: server closed a keep-alive connection"
        );
        if i % 2 == 0 {
            pids.insert(resp.text());
        }
    }
    assert_eq!(conn.local_addr(), local);
    assert!(!pids.is_empty());
}

fn concurrent_requests(sluice: &SluiceHandle) {
    let addr = sluice.addr();
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                for i in 0..10u32 {
                    let resp = conn.request(&Request::get("/sleep?s=0.05")).unwrap();
                    assert_eq!(resp.status(), 200);
                    assert_eq!(resp.text(), "slept");
                    let body = test_bytes(10_000 + i as usize, t * 100 + i);
                    let resp = send(addr, &Request::post("/echo", body.clone()));
                    assert_eq!(resp.status(), 200);
                    assert!(resp.body == body, "thread {t} request {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

/// Not parametrized: the flags must follow the worker configuration, so a single-process,
/// single-thread sluice must say so.
#[test]
fn wsgi_flags_follow_worker_config() {
    let sluice = Sluice::serve("suite:app").workers(1).threads(1).start();
    let env = environ(&get(sluice.addr(), "/environ"));
    assert_eq!(env["wsgi.multithread"], false);
    assert_eq!(env["wsgi.multiprocess"], false);
    assert_eq!(env["wsgi.run_once"], false);
}

/// A client that leaves while its request is in Python must take the answer with it. Once, the
/// worker connection went back to the pool with that answer still to come, and the next request
/// on it got the previous client's response.
#[test]
fn an_answer_never_reaches_the_next_client_when_its_own_left() {
    let sluice = Sluice::serve("suite:app").workers(1).threads(1).start();
    let mut gone = Conn::connect(sluice.addr()).unwrap();
    gone.send(&Request::get("/sleep?s=1&token=left")).unwrap();
    let marker = sluice.state_file("sleeping-left");
    wait_for(DEADLINE, "the app to start the request", || {
        marker.exists().then_some(())
    });
    drop(gone);
    for _ in 0..3 {
        let resp = send(sluice.addr(), &Request::post("/echo", "mine"));
        assert_eq!((resp.status(), resp.text().as_str()), (200, "mine"));
    }
}

/// A request queued behind one that turns out slow must not wait for it while another thread is
/// free: past a few milliseconds the gateway takes it back and it goes to the free thread. Fast
/// requests from several clients keep both threads busy while one thread is held until the
/// test lets it go; every fast request must be answered before that, and reach Python once.
#[test]
fn no_request_waits_behind_a_held_one_while_a_thread_is_free() {
    const CLIENTS: usize = 4;
    const EACH: usize = 300;
    let sluice = Sluice::serve("suite:app")
        .workers(1)
        .threads(2)
        .env("SUITE_RECORD", "seen")
        .start();
    let addr = sluice.addr();
    let (done_tx, done) = std::sync::mpsc::channel();
    let started = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    for c in 0..CLIENTS {
        let (done_tx, started) = (done_tx.clone(), started.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::connect(addr).unwrap();
            for i in 0..EACH {
                let resp = conn.request(&Request::get(&format!("/pid?c={c}&i={i}")));
                assert_eq!(resp.unwrap().status(), 200);
                if i == 10 {
                    started.wait();
                }
            }
            done_tx.send(()).unwrap();
        });
    }
    // The held request goes out while the clients keep the threads busy.
    started.wait();
    let held = std::thread::spawn(move || send(addr, &Request::get("/hold?token=h")));
    for _ in 0..CLIENTS {
        done.recv_timeout(DEADLINE)
            .expect("a fast request waited behind the held one");
    }
    assert!(
        !held.is_finished(),
        "the held request ended before it was let go"
    );
    std::fs::write(sluice.state_file("go-h"), b"1").unwrap();
    let resp = held.join().unwrap();
    assert_eq!((resp.status(), resp.text().as_str()), (200, "held"));
    let seen = std::fs::read_to_string(sluice.state_file("seen")).unwrap();
    let fast: Vec<&str> = seen.lines().filter(|l| l.contains("/pid")).collect();
    let mut unique = fast.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        (fast.len(), unique.len()),
        (CLIENTS * EACH, CLIENTS * EACH),
        "fast requests that reached Python, and distinct ones"
    );
}

/// The error frame of an app that raises right after its first chunk often arrives in the same
/// read as the head. It must still end the response at once: once, it was decoded, dropped, and
/// the response hung until the request timeout.
#[test]
fn an_error_right_behind_the_head_cuts_the_response_off_at_once() {
    let sluice = Sluice::serve("suite:app")
        .arg("--timeout")
        .arg("120s")
        .start();
    for attempt in 0..30 {
        let mut conn = Conn::connect(sluice.addr()).unwrap();
        conn.set_read_timeout(std::time::Duration::from_secs(20))
            .unwrap();
        let resp = conn
            .request(&Request::get("/raise-after"))
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.end, BodyEnd::CutOff, "attempt {attempt}");
        // What the app sent before it failed still reaches the client, ahead of the cut.
        assert_eq!(resp.text(), "partial", "attempt {attempt}");
    }
}

/// Request bodies longer than the gateway coalesces (16 KiB) and no longer than the memory a
/// worker connection shares (1 MiB) reach Python through that memory; others through the socket.
/// Both kinds alternate on one connection, so each must leave the exchange in step for the next.
#[test]
fn request_bodies_travel_through_shared_memory_up_to_its_size() {
    let sluice = Sluice::serve("suite:app")
        .workers(1)
        .threads(2)
        .arg("--max-body")
        .arg("4MiB")
        .start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let cases = [
        (300_000, "shared"),
        (100, "socket"),
        (2 * 1024 * 1024, "socket"),
        (16 * 1024 + 1, "shared"),
        (1024 * 1024, "shared"),
        (16 * 1024, "socket"),
        (1024 * 1024 + 1, "socket"),
        (70_000, "shared"),
    ];
    for (seed, (len, way)) in cases.into_iter().enumerate() {
        let body = test_bytes(len, seed as u32 + 1);
        let resp = conn.request(&Request::post("/shared", body)).unwrap();
        assert_eq!(resp.status(), 200, "body of {len}");
        assert_eq!(resp.text(), format!("{len} {way}"), "body of {len}");
    }
    // The app's own check reads the memory; the echo proves every byte arrived either way.
    for (seed, len) in [(20, 500_000), (21, 3_000_000), (22, 40_000)] {
        let body = test_bytes(len, seed);
        let resp = conn.request(&Request::post("/echo", body.clone())).unwrap();
        assert_eq!(
            resp.header("X-Body-Sha256"),
            Some(sha256_hex(&body).as_str())
        );
    }
}

/// Response chunks over 16 KiB go to the gateway through a cell of the shared memory, and from
/// there to the client; smaller ones through the socket. The app checks, while it produces its
/// second chunk, where its first one went.
#[test]
fn response_chunks_over_16_kib_travel_through_shared_cells() {
    let sluice = Sluice::serve("suite:app").workers(1).threads(2).start();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    for (n, way) in [
        (40_000, "shared"),
        (100, "socket"),
        (16_385, "shared"),
        (16_384, "socket"),
    ] {
        let resp = conn
            .request(&Request::get(&format!("/shared?n={n}")))
            .unwrap();
        assert_eq!(resp.status(), 200, "n={n}");
        let want: Vec<u8> = (0..n).map(|i| ((i * 7 + n) % 251) as u8).collect();
        assert!(
            resp.body[..n] == want[..],
            "n={n}: the chunk arrived changed"
        );
        assert_eq!(&resp.body[n..], format!("|{way}").as_bytes(), "n={n}");
    }
}
