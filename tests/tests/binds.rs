//! Binds beyond TCP: `unix:PATH` sockets (what an nginx kept in front connects to) and sockets
//! passed by systemd's socket activation. curl is the real client on the Unix socket; a small
//! launcher (`tests/clients/activate.py`) opens sockets and passes them as systemd does.

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_tests::{apps_dir, curl, get, python_for_frameworks, Conn, Sluice, DEADLINE};

fn unix_url(path: &Path) -> [String; 3] {
    [
        "--unix-socket".into(),
        path.display().to_string(),
        "http://app/environ".into(),
    ]
}

/// `/environ` over the Unix socket at `path`, with curl's extra `args`.
fn environ_over(path: &Path, args: &[&str]) -> Value {
    let url = unix_url(path);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(url.iter().map(String::as_str));
    let (ok, body, err) = curl(&all);
    assert!(ok, "curl over {}: {err}", path.display());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_unix_socket_bind_serves_http1_and_http2_and_is_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    // A socket file left by a crashed run: nothing accepts on it, so it is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut sluice = Sluice::serve("suite:app")
        .bind(&format!("unix:{}", sock.display()))
        .bind("127.0.0.1:0")
        .expect_binds(1)
        .start();
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&sock), 0o660);

    // No address, as gunicorn gives; the peer is local, so an nginx's X-Forwarded-For counts.
    let env = environ_over(&sock, &[]);
    assert_eq!(env["REMOTE_ADDR"], "");
    assert_eq!(env["HTTP_HOST"], "app");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    let env = environ_over(
        &sock,
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "X-Forwarded-Proto: https",
        ],
    );
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(env["wsgi.url_scheme"], "https");
    let env = environ_over(&sock, &["--http2-prior-knowledge"]);
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/2");
    // The TCP bind beside it is unaffected.
    assert_eq!(
        get(sluice.addr(), "/environ").json()["REMOTE_ADDR"],
        "127.0.0.1"
    );

    sluice.signal(libc::SIGTERM);
    assert!(sluice.wait_exit(DEADLINE).success());
    assert!(!sock.exists(), "the socket file outlived sluice");
}

#[test]
fn unix_mode_sets_the_socket_file_mode_from_the_command_line_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cli.sock");
    let _sluice = Sluice::serve("suite:app")
        .bind(&format!("unix:{}", sock.display()))
        .bind("127.0.0.1:0")
        .expect_binds(1)
        .arg("--unix-mode")
        .arg("0600")
        .start();
    assert_eq!(mode(&sock), 0o600);

    let yaml = format!(
        "apps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    unix_mode: 640\n    bind: [\"unix:{sock}\", \"127.0.0.1:0\"]\n",
        chdir = serde_json::to_string(&apps_dir()).unwrap(),
        sock = dir.path().join("yaml.sock").display(),
    );
    let _sluice = Sluice::run_config(&yaml).expect_binds(1).start();
    assert_eq!(mode(&dir.path().join("yaml.sock")), 0o640);
}

#[test]
fn a_unix_path_that_cannot_be_used_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let live = dir.path().join("live.sock");
    let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
    for (path, why) in [
        (&file, "is not a socket"),
        (&live, "a running server answers on it"),
    ] {
        let failure = Sluice::serve("suite:app")
            .bind(&format!("unix:{}", path.display()))
            .start_expect_failure(DEADLINE);
        assert!(!failure.status.success());
        assert!(
            failure.output.contains(&path.display().to_string()) && failure.output.contains(why),
            "{}",
            failure.output
        );
    }
    // The regular file is left alone, and so is the other server's socket.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    assert!(std::os::unix::net::UnixStream::connect(&live).is_ok());
}

/// The launcher that stands in for systemd.
fn activate(args: &[&str]) -> Vec<PathBuf> {
    let mut launcher = vec![
        python_for_frameworks(),
        apps_dir().join("../clients/activate.py"),
    ];
    launcher.extend(args.iter().map(PathBuf::from));
    launcher.push("--".into());
    launcher
}

#[test]
fn sockets_passed_by_systemd_are_used_for_the_binds() {
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("passed.sock");
    let launcher = activate(&[
        "--names",
        "suite:suite",
        "tcp:127.0.0.1:0",
        &format!("unix:{}", passed.display()),
    ]);
    let launcher: Vec<&OsStr> = launcher.iter().map(|p| p.as_os_str()).collect();
    // The configured addresses are not opened: the passed sockets stand in for them, in order.
    let configured = dir.path().join("configured.sock");
    let sluice = Sluice::serve("suite:app")
        .launched_by(&launcher)
        .bind("127.0.0.1:9")
        .bind(&format!("unix:{}", configured.display()))
        .expect_binds(1)
        .start();
    assert_ne!(sluice.addr().port(), 9);
    assert_eq!(get(sluice.addr(), "/environ").status(), 200);
    assert_eq!(environ_over(&passed, &[])["REMOTE_ADDR"], "");
    assert!(!configured.exists());
    assert_eq!(
        sluice.count_log(|l| l.contains("using a socket passed by systemd")),
        2
    );
    // The workers never see the variables.
    let pid = get(sluice.addr(), "/pid").text();
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("SLUICE_TEST_STATE="),
        "not the worker's environment?"
    );
    assert!(!environ.contains("LISTEN_"), "{environ}");

    // A passed socket of the wrong kind is a start-up error naming the bind.
    let launcher = activate(&["tcp:127.0.0.1:0"]);
    let launcher: Vec<&OsStr> = launcher.iter().map(|p| p.as_os_str()).collect();
    let failure = Sluice::serve("suite:app")
        .launched_by(&launcher)
        .bind(&format!("unix:{}", configured.display()))
        .start_expect_failure(DEADLINE);
    assert!(!failure.status.success());
    assert!(
        failure.output.contains("is not a Unix socket"),
        "{}",
        failure.output
    );
}

/// A PROXY protocol version 2 header for TCP over IPv4.
fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&source);
    header.extend_from_slice(&[192, 0, 2, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

/// REMOTE_ADDR and the status for `/environ` sent after `preamble` on a fresh connection; the
/// status is `None` if the server closed without answering.
fn remote_addr_after(addr: std::net::SocketAddr, preamble: &[u8]) -> Option<(u16, String)> {
    let mut conn = Conn::connect(addr).unwrap();
    let request = b"GET /environ HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n";
    conn.send_raw(&[preamble, &request[..]].concat()).ok()?;
    let resp = conn.read_response("GET").ok()?;
    let remote = resp.json()["REMOTE_ADDR"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some((resp.status(), remote))
}

#[test]
fn a_proxy_protocol_bind_believes_the_header_from_trusted_peers_only() {
    let yaml = |allow: &str| {
        format!(
            "apps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    forwarded_allow_ips: {allow}\n    bind:\n      - {{addr: \"127.0.0.1:0\", proxy_protocol: true}}\n",
            chdir = serde_json::to_string(&apps_dir()).unwrap(),
        )
    };
    let sluice = Sluice::run_config(&yaml("\"127.0.0.1\"")).start();
    let addr = sluice.addr();
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n";
    assert_eq!(
        remote_addr_after(addr, v1),
        Some((200, "203.0.113.7".into())),
        "version 1"
    );
    assert_eq!(
        remote_addr_after(addr, &proxy_v2([203, 0, 113, 8], 1234)),
        Some((200, "203.0.113.8".into())),
        "version 2"
    );
    // The balancer's own health check (v2 LOCAL, v1 UNKNOWN): the connection stays the
    // balancer's (127.0.0.1 here, trusted), whose X-Forwarded-For then counts as ever.
    assert_eq!(
        remote_addr_after(addr, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"),
        Some((200, "198.51.100.1".into()))
    );
    assert_eq!(
        remote_addr_after(addr, b"PROXY UNKNOWN\r\n"),
        Some((200, "198.51.100.1".into()))
    );
    // No header, or a broken one: closed without an answer.
    assert_eq!(remote_addr_after(addr, b""), None);
    assert_eq!(remote_addr_after(addr, b"PROXY TCP4 nonsense\r\n"), None);

    // From a peer that is not trusted, the header is read and its addresses ignored: the client
    // is the TCP peer, and (as always from an untrusted peer) X-Forwarded-For means nothing.
    let sluice = Sluice::run_config(&yaml("\"10.0.0.0/8\"")).start();
    assert_eq!(
        remote_addr_after(sluice.addr(), v1),
        Some((200, "127.0.0.1".into()))
    );
}

/// On a TLS bind the PROXY header comes first, in clear text, then the handshake.
#[test]
fn the_proxy_header_comes_before_tls() {
    let ca = sluice_tests::TestCa::new();
    let pair = ca.server("server", "proxied");
    let yaml = format!(
        "apps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    bind:\n      - {{addr: \"127.0.0.1:0\", proxy_protocol: true, certfile: {cert}, keyfile: {key}}}\n",
        chdir = serde_json::to_string(&apps_dir()).unwrap(),
        cert = serde_json::to_string(&pair.cert).unwrap(),
        key = serde_json::to_string(&pair.key).unwrap(),
    );
    let sluice = Sluice::run_config(&yaml).start();
    let config = ca.client_config(&[b"http/1.1"], None);
    let mut conn = sluice_tests::TlsConn::connect_after(
        sluice.addr(),
        config.clone(),
        &proxy_v2([203, 0, 113, 10], 5555),
    )
    .expect("handshake after the header");
    let env = conn
        .request(&sluice_tests::Request::get("/environ"))
        .unwrap()
        .json();
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.10");
    assert_eq!(env["wsgi.url_scheme"], "https");
    // Without the header the handshake never starts.
    assert!(sluice_tests::TlsConn::connect(sluice.addr(), config).is_err());
}

/// The Send-Q column of `ss` for the listening socket `filter` selects: on a LISTEN socket it
/// is the backlog listen() was given.
fn listen_backlog(args: &[&str]) -> u32 {
    let out = std::process::Command::new("ss")
        .args(args)
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("LISTEN"))
        .unwrap_or_else(|| panic!("no listening socket in `ss {}`:\n{text}", args.join(" ")));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // `State Recv-Q Send-Q ...`, with `Netid` first for Unix sockets.
    let at = fields.iter().position(|f| *f == "LISTEN").unwrap();
    fields[at + 2]
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn backlog_reaches_listen_for_tcp_and_unix_binds() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("backlog.sock");
    let sluice = Sluice::serve("suite:app")
        .bind(&format!("unix:{}", sock.display()))
        .bind("127.0.0.1:0")
        .expect_binds(1)
        .arg("--backlog")
        .arg("77")
        .start();
    let port = sluice.addr().port().to_string();
    assert_eq!(
        listen_backlog(&["-ltnH", "sport", "=", &format!(":{port}")]),
        77
    );
    let path = sock.display().to_string();
    assert_eq!(listen_backlog(&["-lxH", "src", &path]), 77);
    drop(sluice);

    // YAML, per app; and gunicorn's default without it.
    let yaml = format!(
        "apps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    backlog: 33\n    bind: [\"127.0.0.1:0\"]\n  other:\n    app: suite:app\n    chdir: {chdir}\n    bind: [\"127.0.0.1:0\"]\n",
        chdir = serde_json::to_string(&apps_dir()).unwrap(),
    );
    let sluice = Sluice::run_config(&yaml).start();
    let port = |app| sluice.addr_of(app).port();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map_or(4096, |t| t.trim().parse().unwrap_or(4096));
    assert_eq!(
        listen_backlog(&["-ltnH", "sport", "=", &format!(":{}", port("suite"))]),
        33
    );
    assert_eq!(
        listen_backlog(&["-ltnH", "sport", "=", &format!(":{}", port("other"))]),
        2048.min(somaxconn)
    );
}
