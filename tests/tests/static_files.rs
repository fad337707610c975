//! Static files and response compression end to end (issue 5, "the edge"): files served by the
//! gateway with the right headers and never by Python, conditional and range requests,
//! precompressed siblings, long caching of hashed names, every known way out of the directory,
//! YAML and command-line mappings, a reload that moves the directory; then gzip and br on
//! Python's responses (whole and streamed) and on static files.
//!
//! The fixture is `tests/apps/edge.py`, which records every path that reaches Python.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sluice_tests::{
    apps_dir, get, send, stdlib_python, Conn, Request, Response, Sluice, SluiceHandle, DEADLINE,
};
use tempfile::TempDir;

/// What `css/app.css` holds: over 1 KiB of CSS, so on-the-fly compression takes it.
fn css() -> Vec<u8> {
    b"body { color: #333; margin: 0 auto; }\n".repeat(64)
}

/// What `js/app.js` holds (with `.gz` and `.br` siblings beside it).
fn js() -> Vec<u8> {
    b"console.log('sluice static');\n".repeat(64)
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really an image";

/// A static directory with one file of each kind the tests ask for, and a secret file beside
/// it (outside) that must never be served.
struct Site {
    top: TempDir,
}

impl Site {
    fn new() -> Site {
        let top = tempfile::Builder::new()
            .prefix("sluice-static-")
            .tempdir()
            .unwrap();
        let site = Site { top };
        let put = |rel: &str, data: &[u8]| {
            let path = site.dir().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        };
        put("css/app.css", &css());
        put("css/app.3f2a9c1b0e4d.css", b"body{}");
        put("js/app.js", &js());
        put("js/app.js.gz", &gzip(&js()));
        put("js/app.js.br", &brotli_compress(&js()));
        put("js/only-gz.js", &js());
        put("js/only-gz.js.gz", &gzip(&js()));
        put("data.json", b"{\"static\": true}");
        put("img/logo.png", PNG);
        put("img/big.png", &PNG.repeat(256));
        put(
            "img/logo.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        );
        put("notes.txt", b"0123456789abcdef");
        put("blob.weird", b"???");
        put("caf\u{e9} <1>.txt", b"accented");
        std::fs::write(site.top.path().join("secret.txt"), b"TOP SECRET").unwrap();
        std::os::unix::fs::symlink("../secret.txt", site.dir().join("evil.txt")).unwrap();
        std::os::unix::fs::symlink(site.top.path(), site.dir().join("up")).unwrap();
        std::os::unix::fs::symlink("notes.txt", site.dir().join("inside.txt")).unwrap();
        site
    }

    /// The directory served.
    fn dir(&self) -> PathBuf {
        self.top.path().join("static")
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

fn brotli_compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(
        &mut &data[..],
        &mut out,
        &brotli::enc::BrotliEncoderParams::default(),
    )
    .unwrap();
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &data[..], &mut out).expect("a br body");
    out
}

/// The YAML-quoted form of a path.
fn yaml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

/// A fresh [`Site`] and `sluice serve edge:app` with `--static /static/=` it and the extra
/// arguments. (The sluice goes first when the pair is dropped.)
fn serve(args: &[&str]) -> (Site, SluiceHandle) {
    let site = Site::new();
    let mut sluice = Sluice::serve("edge:app")
        .python(stdlib_python())
        .arg("--static")
        .arg(format!("/static/={}", site.dir().display()));
    for arg in args {
        sluice = sluice.arg(arg);
    }
    (site, sluice.start())
}

fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::get(target);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    send(addr, &request)
}

/// Every path that reached Python so far. A request to Python is answered only after it was
/// recorded, so a last request to Python first makes the list complete.
/// A GET of `target` sent as raw bytes, which `get` cannot send.
fn get_raw(addr: SocketAddr, target: &[u8]) -> Response {
    let mut conn = Conn::connect(addr).unwrap();
    let head = [&b"GET "[..], target, b" HTTP/1.1\r\nHost: t\r\n\r\n"].concat();
    conn.send_raw(&head).unwrap();
    conn.read_response("GET").unwrap()
}

fn python_saw(sluice: &SluiceHandle) -> Vec<String> {
    let sentinel = get(sluice.addr(), "/sentinel");
    assert_eq!(sentinel.text(), "python saw /sentinel");
    let log = std::fs::read_to_string(sluice.state_file("requests.log")).unwrap_or_default();
    log.lines().map(str::to_owned).collect()
}

fn assert_python_saw_no_static(sluice: &SluiceHandle) {
    let seen = python_saw(sluice);
    let leaked: Vec<_> = seen.iter().filter(|p| p.starts_with("/static/")).collect();
    assert!(
        leaked.is_empty(),
        "static requests reached Python: {leaked:?}"
    );
}

#[test]
fn files_are_served_with_their_types_and_validators_and_never_by_python() {
    let (_site, sluice) = serve(&[]);
    let addr = sluice.addr();
    for (target, content_type, body) in [
        ("/static/css/app.css", "text/css", css()),
        ("/static/js/app.js", "text/javascript", js()),
        (
            "/static/data.json",
            "application/json",
            b"{\"static\": true}".to_vec(),
        ),
        ("/static/img/logo.png", "image/png", PNG.to_vec()),
        (
            "/static/img/logo.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        ),
        (
            "/static/notes.txt",
            "text/plain",
            b"0123456789abcdef".to_vec(),
        ),
        (
            "/static/blob.weird",
            "application/octet-stream",
            b"???".to_vec(),
        ),
        // A symlink that stays inside the directory is followed.
        (
            "/static/inside.txt",
            "text/plain",
            b"0123456789abcdef".to_vec(),
        ),
    ] {
        let resp = get(addr, target);
        assert_eq!(resp.status(), 200, "{target}: {:?}", resp.head);
        assert_eq!(resp.header("content-type"), Some(content_type), "{target}");
        assert_eq!(resp.body, body, "{target}");
        assert_eq!(
            resp.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{target}"
        );
        assert!(resp.header("etag").is_some(), "{target}: {:?}", resp.head);
        assert!(
            resp.header("last-modified").is_some(),
            "{target}: {:?}",
            resp.head
        );
        assert_eq!(resp.header("content-encoding"), None, "{target}");
    }

    // Under the prefix, a missing file or a directory is the gateway's 404, not the app's.
    for target in [
        "/static/missing.css",
        "/static/css/",
        "/static/css",
        "/static/",
    ] {
        let resp = get(addr, target);
        assert_eq!(resp.status(), 404, "{target}: {:?}", resp.head);
        assert!(!resp.text().contains("python"), "{target}");
    }
    // Only GET and HEAD; the body of a refused POST is not taken for a next request.
    let mut conn = Conn::connect(addr).unwrap();
    let resp = conn
        .request(&Request::post("/static/notes.txt", "x=1"))
        .unwrap();
    assert_eq!(resp.status(), 405, "{:?}", resp.head);
    assert_eq!(resp.header("allow"), Some("GET,HEAD"));
    let resp = conn
        .request(&Request::new("DELETE", "/static/notes.txt"))
        .unwrap();
    assert_eq!(resp.status(), 405, "{:?}", resp.head);

    // Outside the prefix, Python answers, including the prefix without its slash.
    for target in ["/static", "/staticfiles/app.css", "/css/app.css"] {
        let resp = get(addr, target);
        assert_eq!(resp.status(), 200, "{target}");
        assert_eq!(resp.text(), format!("python saw {target}"));
    }
    assert_python_saw_no_static(&sluice);
}

#[test]
fn conditional_requests_head_and_ranges() {
    let (_site, sluice) = serve(&[]);
    let addr = sluice.addr();
    let target = "/static/notes.txt";
    let full = get(addr, target);
    let etag = full.header("etag").unwrap().to_owned();
    let last_modified = full.header("last-modified").unwrap().to_owned();

    let resp = get_with(addr, target, &[("If-None-Match", &etag)]);
    assert_eq!(resp.status(), 304, "{:?}", resp.head);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    let resp = get_with(
        addr,
        target,
        &[("If-None-Match", &format!("\"x\", {weak}"))],
    );
    assert_eq!(
        resp.status(),
        304,
        "a weak match is enough: {:?}",
        resp.head
    );
    let resp = get_with(addr, target, &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "0123456789abcdef");
    let resp = get_with(addr, target, &[("If-Modified-Since", &last_modified)]);
    assert_eq!(resp.status(), 304, "{:?}", resp.head);
    let resp = get_with(
        addr,
        target,
        &[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    );
    assert_eq!(resp.status(), 200);
    // If-None-Match wins over If-Modified-Since.
    let resp = get_with(
        addr,
        target,
        &[
            ("If-None-Match", "\"something-else\""),
            ("If-Modified-Since", &last_modified),
        ],
    );
    assert_eq!(resp.status(), 200);
    let resp = get_with(addr, target, &[("If-Match", "\"something-else\"")]);
    assert_eq!(resp.status(), 412);

    // HEAD: the GET's headers, no body, and the connection goes on.
    let mut conn = Conn::connect(addr).unwrap();
    let head = conn.request(&Request::head(target)).unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.body.is_empty());
    for name in ["content-length", "content-type", "etag", "last-modified"] {
        assert_eq!(head.header(name), full.header(name), "{name}");
    }
    let again = conn.request(&Request::get(target)).unwrap();
    assert_eq!(again.text(), "0123456789abcdef");

    // Ranges.
    let resp = get_with(addr, target, &[("Range", "bytes=2-5")]);
    assert_eq!(resp.status(), 206, "{:?}", resp.head);
    assert_eq!(resp.header("content-range"), Some("bytes 2-5/16"));
    assert_eq!(resp.text(), "2345");
    let resp = get_with(addr, target, &[("Range", "bytes=-3")]);
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.text(), "def");
    let resp = get_with(addr, target, &[("Range", "bytes=10-")]);
    assert_eq!(resp.text(), "abcdef");
    let resp = get_with(addr, target, &[("Range", "bytes=16-20")]);
    assert_eq!(resp.status(), 416, "{:?}", resp.head);
    assert_eq!(resp.header("content-range"), Some("bytes */16"));
    // Several ranges: the whole file rather than a refusal.
    let resp = get_with(addr, target, &[("Range", "bytes=0-1,4-5")]);
    assert_eq!(resp.status(), 200, "{:?}", resp.head);
    assert_eq!(resp.text(), "0123456789abcdef");
    let head = conn
        .request(&Request::head(target).header("Range", "bytes=2-5"))
        .unwrap();
    assert_eq!(head.status(), 206);
    assert_eq!(head.header("content-length"), Some("4"));
    assert!(head.body.is_empty());

    // If-Range: the range only for the version the client holds part of.
    let resp = get_with(addr, target, &[("Range", "bytes=2-5"), ("If-Range", &etag)]);
    assert_eq!(resp.status(), 206, "{:?}", resp.head);
    assert_eq!(resp.text(), "2345");
    let resp = get_with(
        addr,
        target,
        &[("Range", "bytes=2-5"), ("If-Range", &last_modified)],
    );
    assert_eq!(resp.status(), 206, "{:?}", resp.head);
    for stale in ["\"an-old-version\"", &weak, "Sat, 01 Jan 2000 00:00:00 GMT"] {
        let resp = get_with(addr, target, &[("Range", "bytes=2-5"), ("If-Range", stale)]);
        assert_eq!(resp.status(), 200, "If-Range {stale}: {:?}", resp.head);
        assert_eq!(resp.text(), "0123456789abcdef");
    }
    assert_python_saw_no_static(&sluice);
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let (_site, sluice) = serve(&[]);
    let addr = sluice.addr();
    let target = "/static/js/app.js";

    let plain = get(addr, target);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    assert_eq!(plain.body, js());

    let resp = get_with(addr, target, &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        resp.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        resp.head
    );
    assert_eq!(resp.header("content-type"), Some("text/javascript"));
    assert_eq!(resp.header("vary"), Some("accept-encoding"));
    assert_eq!(resp.body, gzip(&js()), "the .gz file itself");
    assert_eq!(gunzip(&resp.body), js());
    assert_ne!(resp.header("etag"), plain.header("etag"));
    let gz_etag = resp.header("etag").unwrap().to_owned();
    let resp = get_with(
        addr,
        target,
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &gz_etag)],
    );
    assert_eq!(resp.status(), 304);

    for accept in ["gzip, br", "br", "gzip;q=0.5, br;q=0.9"] {
        let resp = get_with(addr, target, &[("Accept-Encoding", accept)]);
        assert_eq!(resp.header("content-encoding"), Some("br"), "{accept}");
        assert_eq!(unbrotli(&resp.body), js(), "{accept}");
    }
    let resp = get_with(addr, target, &[("Accept-Encoding", "br;q=0.1, gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    for accept in ["identity", "deflate", "gzip;q=0, br;q=0"] {
        let resp = get_with(addr, target, &[("Accept-Encoding", accept)]);
        assert_eq!(resp.header("content-encoding"), None, "{accept}");
        assert_eq!(resp.body, js(), "{accept}");
    }
    // Only a .gz beside it: a br-only client gets the plain file.
    let resp = get_with(addr, "/static/js/only-gz.js", &[("Accept-Encoding", "br")]);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body, js());
    let resp = get_with(
        addr,
        "/static/js/only-gz.js",
        &[("Accept-Encoding", "br, gzip")],
    );
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), js());
    // HEAD negotiates the same way.
    let head = send(
        addr,
        &Request::head(target).header("Accept-Encoding", "gzip"),
    );
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(gzip(&js()).len().to_string().as_str())
    );
    assert_python_saw_no_static(&sluice);
}

#[test]
fn traversal_never_leaves_the_directory() {
    let (site, sluice) = serve(&[]);
    let addr = sluice.addr();
    assert_eq!(get(addr, "/static/notes.txt").status(), 200);
    for target in [
        "/static/../secret.txt",
        "/static/./../secret.txt",
        "/static/css/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/.%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/css/..%2f..%2fsecret.txt",
        "/static/..\\secret.txt",
        "/static/css\\..\\..\\secret.txt",
        "/static/..%5csecret.txt",
        "/static/..%5Csecret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/%252e%252e%252fsecret.txt",
        "/static/%c0%ae%c0%ae/secret.txt",
        "/static/evil.txt",
        "/static/up/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/%2Fetc/passwd",
        "/static/notes.txt%00.png",
        &format!("/static/{}", site.top.path().join("secret.txt").display()),
    ] {
        let resp = get(addr, target);
        assert!(
            matches!(resp.status(), 400 | 404),
            "{target}: {:?} {:?}",
            resp.head,
            resp.text()
        );
        assert!(!resp.text().contains("SECRET"), "{target}");
        assert!(!resp.text().contains("root:"), "{target}");
    }
    // Raw bytes that reach the router percent-encoded (non-ASCII, `<`, `"`): the same escapes
    // are refused, however they are spelled.
    for target in [
        &b"/static/\xc0\xae\xc0\xae/secret.txt"[..],
        b"/static/..\xc0\xafsecret.txt",
        b"/static/\"..\"/secret.txt",
        b"/static/<..>/secret.txt",
        b"/static/..\\\xe9secret.txt",
        b"/static/%2e%2e/secret.txt#\xe9",
    ] {
        let resp = get_raw(addr, target);
        let shown = String::from_utf8_lossy(target);
        assert!(
            matches!(resp.status(), 400 | 404),
            "{shown}: {:?}",
            resp.head
        );
        assert!(!resp.text().contains("SECRET"), "{shown}");
    }
    assert_python_saw_no_static(&sluice);
}

/// A file name with non-ASCII and reserved bytes is served whether the client encodes it or
/// sends it raw (as curl does), and a fragment is dropped.
#[test]
fn raw_file_names_are_served() {
    let (_site, sluice) = serve(&[]);
    let addr = sluice.addr();
    assert_eq!(
        get(addr, "/static/caf%C3%A9%20%3C1%3E.txt").text(),
        "accented"
    );
    for target in [
        &b"/static/caf\xc3\xa9%20<1>.txt"[..],
        b"/static/caf\xc3\xa9%20<1>.txt#top",
        b"/static/caf%C3%A9%20%3C1>.txt?v=\"1\"",
    ] {
        let resp = get_raw(addr, target);
        let shown = String::from_utf8_lossy(target);
        assert_eq!(
            (resp.status(), resp.text()),
            (200, "accented".into()),
            "{shown}"
        );
    }
    assert_python_saw_no_static(&sluice);
}

#[test]
fn yaml_static_and_hashed_names_cached_only_when_asked() {
    let site = Site::new();
    let (apps, dir, python) = (
        yaml_str(&apps_dir()),
        yaml_str(&site.dir()),
        yaml_str(&stdlib_python()),
    );
    let sluice = Sluice::run_config(&format!(
        "python: {python}
apps:
  cached:
    app: edge:app
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    static: {{\"/assets/\": {dir}}}
    static_hashed_max_age: 365d
  plain:
    app: edge:app
    chdir: {apps}
    bind: [\"127.0.0.1:0\"]
    static: {{\"/assets\": {dir}}}
"
    ))
    .start();
    let (cached, plain) = (sluice.addr_of("cached"), sluice.addr_of("plain"));
    let hashed = "/assets/css/app.3f2a9c1b0e4d.css";
    let resp = get(cached, hashed);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "body{}");
    assert_eq!(
        resp.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = resp.header("etag").unwrap().to_owned();
    let resp = get_with(cached, hashed, &[("If-None-Match", &etag)]);
    assert_eq!(resp.status(), 304);
    assert_eq!(
        resp.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let resp = get(cached, "/assets/css/app.css");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("cache-control"), None, "not a hashed name");
    let resp = get(cached, "/assets/css/app.0123456789ab.css");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.header("cache-control"), None, "not a file");

    let resp = get(plain, hashed);
    assert_eq!(resp.status(), 200, "the prefix got its slash");
    assert_eq!(resp.header("cache-control"), None, "the setting is off");

    // The static prefix is per app: `/static/` is Python's on both.
    let resp = get(cached, "/static/notes.txt");
    assert_eq!(resp.text(), "python saw /static/notes.txt");
    let seen = std::fs::read_to_string(sluice.state_file("requests.log")).unwrap();
    assert!(
        !seen.lines().any(|p| p.starts_with("/assets")),
        "static requests reached Python: {seen}"
    );
}

#[test]
fn a_reload_serves_the_new_directory() {
    let (first, second) = (Site::new(), Site::new());
    std::fs::write(first.dir().join("version.txt"), "first").unwrap();
    std::fs::write(first.dir().join("only-first.txt"), "1").unwrap();
    std::fs::write(second.dir().join("version.txt"), "second").unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("sluice.yaml");
    let yaml = |dir: &Path| {
        format!(
            "python: {}
apps:
  edge:
    app: edge:app
    chdir: {}
    bind: [\"127.0.0.1:0\"]
    static: {{\"/static/\": {}}}
",
            yaml_str(&stdlib_python()),
            yaml_str(&apps_dir()),
            yaml_str(dir)
        )
    };
    std::fs::write(&config, yaml(&first.dir())).unwrap();
    let sluice = Sluice::run_config_file(&config).start();
    let addr = sluice.addr();
    assert_eq!(get(addr, "/static/version.txt").text(), "first");
    assert_eq!(get(addr, "/static/only-first.txt").status(), 200);

    std::fs::write(&config, yaml(&second.dir())).unwrap();
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    sluice.wait_log_after(mark, "reload done", DEADLINE, |l| {
        l.contains("reload: done")
    });
    // The bind was kept (port 0, same app and position): same address, new mapping.
    assert_eq!(get(addr, "/static/version.txt").text(), "second");
    assert_eq!(get(addr, "/static/only-first.txt").status(), 404);
}

// --- compression ----------------------------------------------------------------------------

/// The bytes `/json?kb=N` answers with, fetched without compression.
fn identity_json(addr: SocketAddr, kb: usize) -> Vec<u8> {
    let resp = get(addr, &format!("/json?kb={kb}"));
    assert_eq!(resp.header("content-encoding"), None);
    resp.body
}

#[test]
fn compression_is_off_by_default() {
    let (_site, sluice) = serve(&[]);
    let addr = sluice.addr();
    for target in ["/json?kb=64", "/static/css/app.css"] {
        let resp = get_with(addr, target, &[("Accept-Encoding", "gzip, br")]);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-encoding"), None, "{target}");
        assert!(resp.header("content-length").is_some(), "{target}");
    }
}

#[test]
fn compressible_python_responses_are_compressed() {
    let (_site, sluice) = serve(&["--compress"]);
    let addr = sluice.addr();
    let json = identity_json(addr, 64);
    assert!(json.len() > 60 * 1024);

    let resp = get_with(addr, "/json?kb=64", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        resp.head
    );
    assert_eq!(resp.header("vary"), Some("accept-encoding"));
    assert_eq!(resp.header("content-length"), None);
    assert!(resp.body.len() < json.len() / 4, "{}", resp.body.len());
    assert_eq!(gunzip(&resp.body), json);

    for accept in ["br", "gzip, br", "gzip;q=0.5, br", "x-gzip;q=0.1, *"] {
        let resp = get_with(addr, "/json?kb=64", &[("Accept-Encoding", accept)]);
        assert_eq!(resp.header("content-encoding"), Some("br"), "{accept}");
        assert_eq!(unbrotli(&resp.body), json, "{accept}");
    }
    let resp = get_with(
        addr,
        "/json?kb=64",
        &[("Accept-Encoding", "br;q=0.2, gzip")],
    );
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), json);

    // Not compressed: no or no usable Accept-Encoding, below the minimum size, a type that
    // does not compress, or a body the app encoded itself. A client that refuses identity
    // still gets the app's status, not a 406.
    for (target, accept) in [
        ("/json?kb=64", ""),
        ("/json?kb=64", "deflate"),
        ("/json?kb=64", "gzip;q=0, br;q=0"),
        ("/json?kb=64", "identity;q=0"),
        ("/json?kb=0", "gzip, br"),
        ("/png?kb=64", "gzip, br"),
        ("/encoded", "gzip, br"),
    ] {
        let headers: &[(&str, &str)] = if accept.is_empty() {
            &[]
        } else {
            &[("Accept-Encoding", accept)]
        };
        let resp = get_with(addr, target, headers);
        assert_eq!(resp.status(), 200, "{target} {accept}");
        assert!(resp.header("content-length").is_some(), "{target} {accept}");
        if target == "/encoded" {
            assert_eq!(resp.header("content-encoding"), Some("gzip"));
            assert_eq!(gunzip(&resp.body), b"already gzipped ".repeat(1024));
        } else {
            assert_eq!(resp.header("content-encoding"), None, "{target} {accept}");
        }
    }
    let resp = get_with(addr, "/json?kb=1", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        resp.header("content-encoding"),
        None,
        "981 bytes: under the default 1 KiB"
    );

    // The app's strong ETag no longer names the compressed bytes.
    let resp = get_with(addr, "/etag", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(resp.header("etag"), Some("W/\"v1\""));
    assert_eq!(gunzip(&resp.body), b"etag me ".repeat(1024));
    let resp = get(addr, "/etag");
    assert_eq!(resp.header("etag"), Some("\"v1\""));
}

#[test]
fn min_size_is_configurable() {
    let (_site, sluice) = serve(&["--compress", "--compress-min-size", "100KiB"]);
    let addr = sluice.addr();
    let resp = get_with(addr, "/json?kb=64", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), None);
    let resp = get_with(addr, "/json?kb=128", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), identity_json(addr, 128));
}

#[test]
fn a_streamed_response_is_compressed_as_it_flows() {
    let (_site, sluice) = serve(&["--compress"]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let request = Request::get("/stream?token=flow").header("Accept-Encoding", "gzip");
    let (head, mut body) = conn.stream(&request).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), Some("gzip"), "{head:?}");
    // The first line must come out of the decoder while the app is still waiting for the go
    // file, i.e. it was not held back until the end of the stream. (A stall here fails on the
    // client's read timeout.)
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while !decoder.get_ref().starts_with(b"first\n") {
        let chunk = body
            .next_chunk()
            .unwrap()
            .expect("the stream ended before its first line");
        decoder.write_all(&chunk).unwrap();
        decoder.flush().unwrap();
    }
    std::fs::write(sluice.state_file("go-flow"), "1").unwrap();
    while let Some(chunk) = body.next_chunk().unwrap() {
        decoder.write_all(&chunk).unwrap();
    }
    assert_eq!(decoder.finish().unwrap(), b"first\nlast\n");
}

#[test]
fn static_files_are_compressed_unless_a_sibling_is_there() {
    let (_site, sluice) = serve(&["--compress"]);
    let addr = sluice.addr();
    let plain = get(addr, "/static/css/app.css");
    let strong = plain.header("etag").unwrap().to_owned();

    let resp = get_with(addr, "/static/css/app.css", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        resp.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        resp.head
    );
    assert_eq!(resp.header("vary"), Some("accept-encoding"));
    assert_eq!(resp.header("accept-ranges"), None);
    assert_eq!(gunzip(&resp.body), css());
    let weak = format!("W/{strong}");
    assert_eq!(resp.header("etag"), Some(weak.as_str()));
    let resp = get_with(
        addr,
        "/static/css/app.css",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &weak)],
    );
    assert_eq!(resp.status(), 304);
    // A range is of the identity bytes.
    let resp = get_with(
        addr,
        "/static/css/app.css",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-3")],
    );
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.text(), "body");

    // A precompressed sibling goes out as it is, with its own strong ETag.
    let resp = get_with(addr, "/static/js/app.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(resp.body, gzip(&js()));
    assert!(!resp.header("etag").unwrap().starts_with("W/"));
    // Images stay as they are.
    let resp = get_with(addr, "/static/img/big.png", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body, PNG.repeat(256));
    assert_python_saw_no_static(&sluice);
}
