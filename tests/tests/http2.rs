//! HTTP/2: over TLS by ALPN and in clear text with prior knowledge (h2c), beside HTTP/1.1 on the
//! same bind; `--http` restricting it; the edge behaviours of HTTP/1.1 held per stream (413, 431,
//! many streams on few threads, a reader that never opens its window); and the known floods
//! ended with a GOAWAY before any of them reaches Python. curl and openssl are the real
//! clients; `tests/clients/h2probe.py` (the `h2` package) is the one that misbehaves.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{
    apps_dir, curl, get, python_for_frameworks, wait_for, Sluice, SluiceHandle, TestCa, DEADLINE,
};

const RECORD: &str = "requests.log";

/// Runs `h2probe.py PORT ARGS...` and returns the JSON it prints.
fn probe(port: u16, args: &[&str]) -> Value {
    let script = apps_dir().join("../clients/h2probe.py");
    let out = Command::new(python_for_frameworks())
        .arg(script)
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run h2probe.py");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|err| {
        panic!(
            "h2probe {args:?}: {err}\nstdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Requests the app has seen, as recorded by `suite.py`.
fn seen(sluice: &SluiceHandle) -> Vec<String> {
    std::fs::read_to_string(sluice.state_file(RECORD))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn serve(args: &[&str]) -> SluiceHandle {
    args.iter()
        .fold(
            Sluice::serve("suite:app").env("SUITE_RECORD", RECORD),
            |sluice, arg| sluice.arg(arg),
        )
        .start()
}

#[test]
fn http2_over_tls_and_in_clear_text_beside_http1() {
    let ca = TestCa::new();
    let pair = ca.server("server", "h2");
    let yaml = format!(
        "admin: \"127.0.0.1:0\"\napps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    threads: 4\n    access_log: json\n    bind:\n      - \"127.0.0.1:0\"\n      - {{addr: \"127.0.0.1:0\", certfile: {cert}, keyfile: {key}}}\n",
        chdir = serde_json::to_string(&apps_dir()).unwrap(),
        cert = serde_json::to_string(&pair.cert).unwrap(),
        key = serde_json::to_string(&pair.key).unwrap(),
    );
    let sluice = Sluice::run_config(&yaml).expect_binds(2).start();
    let (plain, tls) = (sluice.binds()[0].1, sluice.binds()[1].1);
    let ca_file = ca.ca_file().display().to_string();
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let https = format!("https://localhost:{}/environ", tls.port());

    // HTTPS: curl picks h2 by ALPN; the app sees HTTP/2 and https.
    let (ok, body, err) = curl(&[
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version}",
        &https,
    ]);
    assert!(ok, "{err}");
    let (json, version) = body.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    let env: Value = serde_json::from_str(json).unwrap();
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/2");
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["HTTP_HOST"], format!("localhost:{}", tls.port()));
    // The same bind still speaks HTTP/1.1 to a client that asks for it.
    let (ok, body, err) = curl(&[
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve,
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &https,
    ]);
    assert!(ok, "{err}");
    assert!(body.ends_with("\n1.1"), "{body}");

    // openssl: ALPN picks h2 when offered first.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls.to_string(),
            "-alpn",
            "h2,http/1.1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALPN protocol: h2"), "{text}");

    // Clear text: prior knowledge is HTTP/2, anything else HTTP/1.1, on one bind. HTTP/2's
    // separate cookie fields reach the app as one.
    let url = format!("http://{plain}/environ");
    let (ok, body, err) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        &url,
    ]);
    assert!(ok, "{err}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/2");
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(get(plain, "/environ").json()["SERVER_PROTOCOL"], "HTTP/1.1");

    // The access log and the metrics tell the protocols apart.
    let protocols = wait_for(DEADLINE, "access-log lines for HTTP/2", || {
        let lines: Vec<Value> = sluice
            .log()
            .iter()
            .filter_map(|line| line.find('{').map(|at| line[at..].to_owned()))
            .filter_map(|json| serde_json::from_str::<Value>(&json).ok())
            .filter(|v| v.get("request_id").is_some())
            .collect();
        (lines.len() >= 4).then_some(lines)
    });
    assert!(protocols
        .iter()
        .any(|l| l["protocol"] == "HTTP/2.0" && l["tls"] == true));
    assert!(protocols
        .iter()
        .any(|l| l["protocol"] == "HTTP/2.0" && l["tls"] == false));
    let metrics = get(sluice.admin_addr(), "/metrics").text();
    for line in [
        "sluice_requests_received_total{app=\"suite\",protocol=\"HTTP/2.0\",tls=\"true\"} 1",
        "sluice_requests_received_total{app=\"suite\",protocol=\"HTTP/2.0\",tls=\"false\"} 1",
        "sluice_requests_received_total{app=\"suite\",protocol=\"HTTP/1.1\",tls=\"true\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[test]
fn the_http_setting_restricts_the_versions() {
    let only1 = serve(&["--http", "1"]);
    let url = format!("http://{}/environ", only1.addr());
    let (ok, _, _) = curl(&["--http2-prior-knowledge", &url]);
    assert!(!ok, "HTTP/2 was served with --http 1");
    assert_eq!(get(only1.addr(), "/environ").status(), 200);

    let only2 = serve(&["--http", "2"]);
    let url = format!("http://{}/environ", only2.addr());
    let (ok, body, err) = curl(&["--http2-prior-knowledge", &url]);
    assert!(ok, "{err}");
    assert!(body.contains("\"SERVER_PROTOCOL\": \"HTTP/2\""), "{body}");
    let (ok, _, _) = curl(&["--http1.1", &url]);
    assert!(!ok, "HTTP/1.1 was served with --http 2");
    // Neither refusal reached the app.
    assert_eq!(seen(&only1).len(), 1);
    assert_eq!(seen(&only2).len(), 1);
}

#[test]
fn edge_behaviours_hold_per_stream() {
    let sluice = serve(&[
        "--threads",
        "4",
        "--max-body",
        "64KiB",
        "--limit-request-fields",
        "20",
    ]);
    let port = sluice.addr().port();

    let ok = probe(port, &["get", "/environ"]);
    assert_eq!(ok["status"], 200, "{ok}");
    assert!(ok["headers"]["x-request-id"].is_string(), "{ok}");

    let echoed = probe(port, &["post", "/echo", "60000"]);
    assert_eq!(
        (echoed["status"].as_u64(), echoed["length"].as_u64()),
        (Some(200), Some(60000))
    );
    let too_big = probe(port, &["post", "/echo", "200000"]);
    assert_eq!(too_big["status"], 413, "{too_big}");

    // More fields than limit_request_fields: 431, as on HTTP/1.1. A header list past the h2
    // limit (32 KiB), here from a few bytes that HPACK expands to 44 KB: 431 from the h2 layer,
    // without the block being decoded in full.
    let many = probe(port, &["big-headers", "10", "30"]);
    assert_eq!(many["status"], 431, "{many}");
    let bomb = probe(port, &["hpack-bomb", "10"]);
    assert_eq!(bomb["status"], 431, "{bomb}");
    assert_eq!(bomb["goaway"], Value::Null, "{bomb}");
    // Far past it, the h2 crate stops decoding and sends the client away.
    let bomb = probe(port, &["hpack-bomb", "2000"]);
    assert_eq!(bomb["goaway"], "ENHANCE_YOUR_CALM", "{bomb}");

    // Fifty streams at once on one connection, four Python threads: every one answered.
    let streams = probe(port, &["streams", "50", "/sleep?s=0.05"]);
    assert_eq!(streams["ended"], 50, "{streams}");
    assert!(
        streams["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == 200),
        "{streams}"
    );
    // What reached Python: the GET, the 60 KB echo, the 50 sleeps; not the 413 (refused once
    // the body passed max_body), not the 431s.
    let record = seen(&sluice);
    assert_eq!(record.len(), 52, "{record:?}");
}

#[test]
fn a_reader_that_never_opens_its_window_frees_its_python_thread() {
    // One Python thread: if the stalled stream held it, nothing else would be served.
    let sluice = serve(&["--threads", "1"]);
    let port = sluice.addr().port();
    let script = apps_dir().join("../clients/h2probe.py");
    let mut stalled = Command::new(python_for_frameworks())
        .arg(script)
        .arg(port.to_string())
        .args(["zero-window", "/big?mb=2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run h2probe.py");
    let mut out = stalled.stdout.take().unwrap();
    let mut head = String::new();
    {
        use std::io::Read;
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            head.push(byte[0] as char);
        }
    }
    let head: Value = serde_json::from_str(&head).expect("the stalled stream's head");
    assert_eq!(head["status"], 200, "{head}");
    // 2 MiB is under response_buffer (4 MiB): the gateway holds it, the thread is free.
    for _ in 0..3 {
        let started = Instant::now();
        let resp = probe(port, &["get", "/pid"]);
        assert_eq!(resp["status"], 200, "{resp}");
        assert!(started.elapsed() < DEADLINE);
    }
    assert_eq!(get(sluice.addr(), "/pid").status(), 200);
    let _ = stalled.stdin.take().unwrap().write_all(b"done\n");
    let _ = stalled.wait();
}

#[test]
fn floods_end_in_a_goaway_and_never_reach_python() {
    let sluice = serve(&["--threads", "2", "--keepalive", "1s"]);
    let port = sluice.addr().port();
    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once.
    // The h2 crate's own count ends it with ENHANCE_YOUR_CALM, sluice's with a graceful
    // NO_ERROR; the GOAWAY may also be lost to the reset of a socket the client was still
    // writing to.
    let reset = probe(port, &["rapid-reset", "20"]);
    assert!(
        reset["goaway"].is_string() || reset["closed"] == true,
        "{reset}"
    );
    assert!(reset["sent"].as_u64().unwrap() < 5000, "{reset}");
    // CONTINUATION flood (CVE-2024-27316): a header block that never ends.
    let continuation = probe(port, &["continuation", "20"]);
    assert!(
        matches!(
            continuation["goaway"].as_str(),
            Some("ENHANCE_YOUR_CALM" | "COMPRESSION_ERROR")
        ) || continuation["closed"] == true,
        "{continuation}"
    );
    // PING and SETTINGS floods: each answer waits for the client to read the last one, so
    // they cost what the client reads; with no stream open the connection is idle, and goes
    // away after keepalive.
    for flood in ["ping", "settings"] {
        let started = Instant::now();
        let outcome = probe(port, &[flood, "20"]);
        assert!(
            outcome["goaway"] == "NO_ERROR" || outcome["closed"] == true,
            "{flood}: {outcome}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{flood}: {outcome}"
        );
    }
    // An idle connection goes away after keepalive, as on HTTP/1.1.
    let idle = probe(port, &["idle"]);
    assert_eq!(idle["goaway"], "NO_ERROR", "{idle}");
    let after = idle["after"].as_f64().unwrap();
    assert!((0.9..10.0).contains(&after), "{idle}");
    // Not one of the flooding requests reached Python, and the server is as it was.
    assert_eq!(seen(&sluice), Vec::<String>::new());
    assert_eq!(probe(port, &["get", "/environ"])["status"], 200);
}

/// What the HTTP/1.1 edge does around Python holds on an HTTP/2 stream too: static files,
/// compression, the request timeout, trusted forwarded headers.
#[test]
fn static_files_compression_timeout_and_forwarded_headers_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let css = "body { color: black; }\n".repeat(200);
    std::fs::write(dir.path().join("site.css"), &css).unwrap();
    let sluice = serve(&[
        "--threads",
        "2",
        "--static",
        &format!("/static/={}", dir.path().display()),
        "--compress",
        "--timeout",
        "1s",
    ]);
    let base = format!("http://{}", sluice.addr());
    let h2 = |path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = vec!["--http2-prior-knowledge", "-D", "-"];
        args.extend_from_slice(extra);
        args.push(&url);
        let (ok, out, err) = curl(&args);
        assert!(ok, "{path}: {err}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_ascii_lowercase(), body.to_owned())
    };

    let (head, body) = h2("/static/site.css", &["--compressed"]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("content-encoding: "), "{head}");
    assert_eq!(body, css);

    let (head, _) = h2("/sleep?s=5", &[]);
    assert!(head.starts_with("http/2 504"), "{head}");

    let (head, body) = h2("/environ", &["-H", "X-Forwarded-For: 203.0.113.9"]);
    assert!(head.starts_with("http/2 200"), "{head}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.9");
    // Python never saw the static file.
    assert!(seen(&sluice).iter().all(|r| !r.contains("static")));
}

/// `h2_max_concurrent_streams` is what the server announces in its SETTINGS (the h2 crate
/// refuses streams beyond it), 100 unless set.
#[test]
fn the_stream_limit_is_announced_and_held() {
    let sluice = serve(&["--h2-max-concurrent-streams", "7", "--threads", "2"]);
    let port = sluice.addr().port();
    let announced = probe(port, &["server-settings"]);
    assert_eq!(
        announced["settings"]["MAX_CONCURRENT_STREAMS"], 7,
        "{announced}"
    );
    let default = serve(&[]);
    let announced = probe(default.addr().port(), &["server-settings"]);
    assert_eq!(
        announced["settings"]["MAX_CONCURRENT_STREAMS"], 100,
        "{announced}"
    );
}
