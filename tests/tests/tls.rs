//! TLS binds: HTTPS with rustls on `--certfile`/`--keyfile` (and YAML bind maps), what the app
//! sees of it, client-certificate verification, start-up errors that name the file, and a
//! certificate swapped by SIGHUP under load without a failed request. curl and openssl are the
//! real clients beside the tests' own rustls client.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use sluice_tests::{
    curl, get, sluice_check, wait_for, Pair, Request, Sluice, SluiceHandle, TestCa, TlsConn,
    DEADLINE,
};

fn serve_tls(pair: &Pair, extra: &[&str]) -> SluiceHandle {
    let mut sluice = Sluice::serve("suite:app")
        .arg("--certfile")
        .arg(&pair.cert)
        .arg("--keyfile")
        .arg(&pair.key);
    for arg in extra {
        sluice = sluice.arg(arg);
    }
    sluice.start()
}

fn https_environ(conn: &mut TlsConn) -> Value {
    let resp = conn.request(&Request::get("/environ")).expect("a response");
    assert_eq!(resp.status(), 200);
    resp.json()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn https_requests_are_served_with_the_https_scheme() {
    let ca = TestCa::new();
    let pair = ca.server("server", "first");
    let sluice = serve_tls(&pair, &["--access-log", "json"]);
    let addr = sluice.addr();

    // TLS 1.3 and 1.2 both, ALPN http/1.1, and the app told it came over HTTPS.
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut config = (*ca.client_config(&[b"http/1.1"], None)).clone();
        let provider = config.crypto_provider().clone();
        config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[versions])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut conn = TlsConn::connect(addr, Arc::new(config)).expect("handshake");
        assert_eq!(conn.version(), Some(versions.version));
        assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(conn.server_cert(), pair.der());
        for _ in 0..2 {
            // Twice on one connection: keep-alive holds over TLS too.
            let env = https_environ(&mut conn);
            assert_eq!(env["wsgi.url_scheme"], "https");
            assert_eq!(env["HTTPS"], "on");
            assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
        }
    }

    // A trusted proxy's X-Forwarded-Proto still wins, as on plain binds.
    let mut conn = TlsConn::connect(addr, ca.client_config(&[], None)).unwrap();
    let resp = conn
        .request(&Request::get("/environ").header("X-Forwarded-Proto", "http"))
        .unwrap();
    assert_eq!(resp.json()["wsgi.url_scheme"], "http");

    // curl, as a user would run it.
    let url = format!("https://localhost:{}/environ", addr.port());
    let (ok, body, err) = curl(&[
        "--cacert",
        path_str(&ca.ca_file()),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", addr.port()),
        "--http1.1",
        &url,
    ]);
    assert!(ok, "curl failed: {err}");
    let env: Value = serde_json::from_str(&body).expect("JSON from /environ");
    assert_eq!(env["wsgi.url_scheme"], "https");
    // And curl refuses it without the CA: the certificate is the one configured, not a default.
    let (ok, _, err) = curl(&[
        "--resolve",
        &format!("localhost:{}:127.0.0.1", addr.port()),
        &url,
    ]);
    assert!(!ok, "curl trusted an unknown CA");
    assert!(err.contains("certificate"), "{err}");

    // openssl s_client: a client that offers only http/1.1 gets it (h2 first: http2.rs).
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-alpn",
            "http/1.1",
        ])
        .args(["-CAfile", path_str(&ca.ca_file())])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // Plain HTTP to a TLS bind is not served (and does not upset the bind).
    let mut plain = sluice_tests::Conn::connect(addr).unwrap();
    plain
        .send_raw(b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(plain
        .read_response("GET")
        .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock));
    assert_eq!(
        https_environ(&mut TlsConn::connect(addr, ca.client_config(&[], None)).unwrap())["HTTPS"],
        "on"
    );

    // The access log and the metrics say the protocol and that TLS was used.
    let line = wait_for(DEADLINE, "a JSON access-log line", || {
        sluice
            .log()
            .iter()
            .filter_map(|line| line.find('{').map(|at| line[at..].to_owned()))
            .filter_map(|json| serde_json::from_str::<Value>(&json).ok())
            .find(|v| v["path"] == "/environ")
    });
    assert_eq!(line["tls"], true);
    assert_eq!(line["protocol"], "HTTP/1.1");
}

#[test]
fn metrics_count_requests_by_protocol_and_tls() {
    let ca = TestCa::new();
    let pair = ca.server("server", "metrics");
    let yaml = format!(
        "admin: \"127.0.0.1:0\"\napps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    bind:\n      - \"127.0.0.1:0\"\n      - {{addr: \"127.0.0.1:0\", certfile: {cert}, keyfile: {key}}}\n",
        chdir = serde_json::to_string(&sluice_tests::apps_dir()).unwrap(),
        cert = serde_json::to_string(&pair.cert).unwrap(),
        key = serde_json::to_string(&pair.key).unwrap(),
    );
    let sluice = Sluice::run_config(&yaml).expect_binds(2).start();
    let binds = sluice.binds().to_vec();
    let (plain, tls) = (binds[0].1, binds[1].1);
    assert_eq!(get(plain, "/environ").json()["wsgi.url_scheme"], "http");
    let mut conn = TlsConn::connect(tls, ca.client_config(&[], None)).unwrap();
    for _ in 0..3 {
        assert_eq!(https_environ(&mut conn)["wsgi.url_scheme"], "https");
    }
    let metrics = get(sluice.admin_addr(), "/metrics").text();
    for line in [
        "sluice_requests_received_total{app=\"suite\",protocol=\"HTTP/1.1\",tls=\"false\"} 1",
        "sluice_requests_received_total{app=\"suite\",protocol=\"HTTP/1.1\",tls=\"true\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[test]
fn tls_files_that_cannot_be_used_stop_start_up_naming_the_file() {
    let ca = TestCa::new();
    let good = ca.server("good", "good");
    let other = ca.server("other", "other");
    let missing = ca.dir().join("missing.pem");
    let junk = ca.dir().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    for (why, cert, key, names) in [
        ("missing certificate", &missing, &good.key, &missing),
        ("missing key", &good.cert, &missing, &missing),
        ("a key that is no key", &good.cert, &junk, &junk),
        (
            "the key of another certificate",
            &good.cert,
            &other.key,
            &other.key,
        ),
    ] {
        let failure = Sluice::serve("suite:app")
            .arg("--certfile")
            .arg(cert)
            .arg("--keyfile")
            .arg(key)
            .start_expect_failure(DEADLINE);
        assert!(!failure.status.success(), "{why}");
        assert!(
            failure.output.contains(&names.display().to_string()),
            "{why}: the error does not name {}:\n{}",
            names.display(),
            failure.output
        );
        // Nothing of the app was started: it failed before Python.
        assert!(
            !failure.output.contains("worker ready"),
            "{why}:\n{}",
            failure.output
        );
    }
    // `sluice check` reads the files too, and a YAML bind map names its files relative to the
    // configuration file.
    let yaml = |key: &Path| {
        format!(
            "apps:\n  a:\n    app: suite:app\n    bind:\n      - {{addr: 8443, certfile: good.pem, keyfile: {key}}}\n",
            key = serde_json::to_string(key).unwrap()
        )
    };
    let config = ca.dir().join("sluice.yaml");
    std::fs::write(&config, yaml(Path::new("good.key"))).unwrap();
    let checked = sluice_check(&config);
    assert!(checked.status.success(), "{checked:?}");
    assert!(
        checked.stdout.contains("0.0.0.0:8443 (TLS: certfile "),
        "{checked:?}"
    );
    std::fs::write(&config, yaml(&other.key)).unwrap();
    let checked = sluice_check(&config);
    assert!(!checked.status.success(), "{checked:?}");
    assert!(
        checked.stderr.contains(&other.key.display().to_string()),
        "{checked:?}"
    );
    // --keyfile without --certfile is a usage error.
    let failure = Sluice::serve("suite:app")
        .arg("--keyfile")
        .arg(&good.key)
        .start_expect_failure(DEADLINE);
    assert_eq!(failure.status.code(), Some(2), "{}", failure.output);
}

#[test]
fn client_certificates_are_verified_with_ca_certs() {
    let ca = TestCa::new();
    let pair = ca.server("server", "mtls");
    let client = ca.client("alice");
    let stranger_ca = TestCa::new();
    let stranger = stranger_ca.client("mallory");
    let sluice = serve_tls(&pair, &["--ca-certs", path_str(&ca.ca_file())]);
    let addr = sluice.addr();
    let mut conn = TlsConn::connect(addr, ca.client_config(&[], Some(&client))).unwrap();
    assert_eq!(https_environ(&mut conn)["HTTPS"], "on");
    // No certificate, or one from another CA: no request gets through. With TLS 1.3 the client
    // may finish its side of the handshake before the server's refusal arrives, so the refusal
    // can surface on the first request instead.
    for identity in [None, Some(&stranger)] {
        let refused = match TlsConn::connect(addr, ca.client_config(&[], identity)) {
            Err(_) => true,
            Ok(mut conn) => conn.request(&Request::get("/environ")).is_err(),
        };
        assert!(refused, "a client with {identity:?} was served");
    }
    let (ok, body, err) = curl(&[
        "--cacert",
        path_str(&ca.ca_file()),
        "--cert",
        path_str(&client.cert),
        "--key",
        path_str(&client.key),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", addr.port()),
        &format!("https://localhost:{}/environ", addr.port()),
    ]);
    assert!(ok, "curl with a client certificate: {err}");
    assert!(body.contains("\"HTTPS\": \"on\""), "{body}");
}

/// Writes `from`'s files over `to`'s, each by a rename, as certificate renewal tools do.
fn install(from: &Pair, to: &Pair) {
    for (src, dst) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = dst.with_extension("new");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
}

#[test]
fn sighup_swaps_the_certificate_under_load_without_a_failed_request() {
    let ca = TestCa::new();
    let live = ca.server("live", "before");
    let before = live.der();
    let renewed = ca.server("renewed", "after");
    let sluice = Sluice::serve("suite:app")
        .arg("--certfile")
        .arg(&live.cert)
        .arg("--keyfile")
        .arg(&live.key)
        .workers(1)
        .threads(4)
        .start();
    let addr = sluice.addr();
    let config = ca.client_config(&[b"http/1.1"], None);

    // A connection opened before the swap, used again after it.
    let mut kept = TlsConn::connect(addr, config.clone()).unwrap();
    assert_eq!(kept.server_cert(), before);
    https_environ(&mut kept);

    // Clients opening a new connection for every request, all through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, served, config) = (stop.clone(), served.clone(), config.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut seen = Vec::new();
                // Bounded: stops when told, or after 2,000 requests.
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match TlsConn::connect(addr, config.clone()).and_then(|mut conn| {
                        let resp = conn.request(&Request::get("/environ"))?;
                        Ok((resp.status(), conn.server_cert()))
                    }) {
                        Ok((200, cert)) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            if seen.last() != Some(&cert) {
                                seen.push(cert);
                            }
                        }
                        Ok((status, _)) => failures.push(format!("status {status}")),
                        Err(err) => failures.push(err.to_string()),
                    }
                }
                (failures, seen)
            })
        })
        .collect();
    wait_for(DEADLINE, "requests before the swap", || {
        (served.load(Ordering::Relaxed) >= 20).then_some(())
    });
    install(&renewed, &live);
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    sluice.wait_log_after(mark, "the reload", DEADLINE, |l| l.contains("reload: done"));
    let after_swap = served.load(Ordering::Relaxed);
    wait_for(DEADLINE, "requests after the swap", || {
        (served.load(Ordering::Relaxed) >= after_swap + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (failures, seen) = client.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert_eq!(
            seen.last(),
            Some(&renewed.der()),
            "never saw the new certificate"
        );
        assert!(seen.len() <= 2, "went back to the old certificate");
    }
    // New connections get the new pair; the one opened before still works on its old one.
    let fresh = TlsConn::connect(addr, config.clone()).unwrap();
    assert_eq!(fresh.server_cert(), renewed.der());
    https_environ(&mut kept);
    assert_eq!(kept.server_cert(), before);

    // A broken file on the next SIGHUP is a log line naming it; the pair in use stays.
    std::fs::write(&live.key, "garbage\n").unwrap();
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    let line = sluice.wait_log_after(mark, "the TLS error", DEADLINE, |l| {
        l.contains(&live.key.display().to_string())
    });
    assert!(line.contains("keeps the certificate"), "{line}");
    sluice.wait_log_after(mark, "the reload", DEADLINE, |l| l.contains("reload: done"));
    let mut conn = TlsConn::connect(addr, config).unwrap();
    assert_eq!(conn.server_cert(), renewed.der());
    https_environ(&mut conn);
}
