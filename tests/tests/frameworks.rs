//! Real frameworks behind sluice: Flask and Django (with CSRF, uploads, streaming, files and the
//! admin login), running in the venv named by `SLUICE_TEST_PYTHON`.

use std::path::Path;
use std::process::Command;

use sluice_tests::{
    apps_dir, form_urlencoded, python_for_frameworks, send, sha256_hex, test_bytes, BodyEnd, Conn,
    CookieJar, Multipart, Request, Response, Sluice, SluiceHandle,
};
use tempfile::TempDir;

fn flask() -> SluiceHandle {
    Sluice::serve("flask_app:app")
        .python(python_for_frameworks())
        .workers(1)
        .threads(2)
        .start()
}

#[test]
fn flask_json() {
    let sluice = flask();
    let resp = sluice_tests::get(sluice.addr(), "/json");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .header("Content-Type")
        .is_some_and(|ct| ct.starts_with("application/json")));
    assert_eq!(resp.json(), serde_json::json!({"hello": "flask"}));
}

#[test]
fn flask_form_post() {
    let sluice = flask();
    let body = form_urlencoded(&[("name", "sluice"), ("value", "a b&c=d \u{e9}\u{20ac}")]);
    let resp = send(
        sluice.addr(),
        &Request::post("/form", body).header("Content-Type", "application/x-www-form-urlencoded"),
    );
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "sluice", "value": "a b&c=d \u{e9}\u{20ac}"})
    );
}

#[test]
fn flask_multipart_upload() {
    let sluice = flask();
    // Every byte value, so a text-mode decode anywhere would show.
    let data = test_bytes(300_000, 11);
    let (content_type, body) = Multipart::new()
        .text("note", "hello")
        .file("file", "payload.bin", "application/octet-stream", &data)
        .build();
    // Once plainly, once chunked (the app then relies on the server's CONTENT_LENGTH).
    for chunked in [false, true] {
        let mut req = Request::post("/upload", body.clone()).header("Content-Type", &content_type);
        if chunked {
            req = req.chunked(&[8192, 1]);
        }
        let resp = send(sluice.addr(), &req);
        assert_eq!(resp.status(), 200, "chunked={chunked}: {}", resp.text());
        let json = resp.json();
        assert_eq!(json["filename"], "payload.bin");
        assert_eq!(json["size"], data.len());
        assert_eq!(json["sha256"], sha256_hex(&data), "chunked={chunked}");
    }
}

#[test]
fn flask_redirect() {
    let sluice = flask();
    let resp = sluice_tests::get(sluice.addr(), "/redirect");
    assert_eq!(resp.status(), 302);
    let location = resp.header("Location").expect("Location");
    assert!(
        location == "/json" || location.ends_with(&format!("{}/json", sluice.addr())),
        "Location {location:?}"
    );
}

#[test]
fn flask_cookies() {
    let sluice = flask();
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let resp = conn.request(&Request::get("/cookie/set")).unwrap();
    assert_eq!(resp.status(), 200);
    let mut jar = CookieJar::new();
    jar.update(&resp);
    assert_eq!(jar.get("flavour"), Some("oat"), "{:?}", resp.head);
    let resp = conn
        .request(&Request::get("/cookie/get").header("Cookie", &jar.header().unwrap()))
        .unwrap();
    assert_eq!(resp.json(), serde_json::json!({"flavour": "oat"}));
    let resp = conn.request(&Request::get("/cookie/get")).unwrap();
    assert_eq!(resp.json(), serde_json::json!({"flavour": null}));
}

#[test]
fn flask_streamed_response() {
    let sluice = flask();
    let resp = sluice_tests::get(sluice.addr(), "/stream");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.end, BodyEnd::Complete);
    assert_eq!(resp.text(), "line 0\nline 1\nline 2\nline 3\nline 4\n");
}

fn django_dir() -> std::path::PathBuf {
    apps_dir().join("django_site")
}

/// A Django site with its own SQLite file in a temp dir (which the caller keeps alive).
struct Django {
    sluice: SluiceHandle,
    _db: TempDir,
}

fn manage(db: &Path, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(python_for_frameworks())
        .arg("manage.py")
        .args(args)
        .current_dir(django_dir())
        .env("DJANGO_DB_PATH", db)
        .envs(env.iter().copied())
        .output()
        .expect("run manage.py");
    assert!(
        out.status.success(),
        "manage.py {args:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "sluice-admin-pw-1";

/// Start the Django site; `with_db` runs the migrations and creates the superuser first.
fn django(with_db: bool) -> Django {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    if with_db {
        manage(&db, &["migrate", "--noinput"], &[]);
        manage(
            &db,
            &["createsuperuser", "--noinput"],
            &[
                ("DJANGO_SUPERUSER_USERNAME", ADMIN_USER),
                ("DJANGO_SUPERUSER_PASSWORD", ADMIN_PASSWORD),
                ("DJANGO_SUPERUSER_EMAIL", "admin@example.com"),
            ],
        );
    }
    let sluice = Sluice::serve("site_project.wsgi:application")
        .chdir(django_dir())
        .python(python_for_frameworks())
        .env("DJANGO_DB_PATH", &db)
        .workers(2)
        .threads(2)
        .start();
    Django { sluice, _db: dir }
}

/// The value of the first `name="csrfmiddlewaretoken" value="..."` in an HTML page.
fn csrf_token(resp: &Response) -> String {
    let html = resp.text();
    let at = html
        .find("name=\"csrfmiddlewaretoken\"")
        .unwrap_or_else(|| panic!("no csrfmiddlewaretoken in:\n{html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").expect("token value") + "value=\"".len();
    rest[v..rest[v..].find('"').unwrap() + v].to_string()
}

#[test]
fn django_csrf_form() {
    let site = django(false);
    let mut conn = Conn::connect(site.sluice.addr()).unwrap();
    let page = conn.request(&Request::get("/form/")).unwrap();
    assert_eq!(page.status(), 200, "{}", page.text());
    let token = csrf_token(&page);
    let mut jar = CookieJar::new();
    jar.update(&page);
    assert!(jar.get("csrftoken").is_some(), "{:?}", page.head);

    let message = "hello from sluice \u{e9}";
    let body = form_urlencoded(&[("csrfmiddlewaretoken", &token), ("message", message)]);
    let resp = conn
        .request(
            &Request::post("/form/", body)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Cookie", &jar.header().unwrap()),
        )
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert_eq!(resp.json(), serde_json::json!({ "message": message }));

    // Same cookie, no token: Django's CSRF protection must see the request as it is.
    let body = form_urlencoded(&[("message", message)]);
    let resp = conn
        .request(
            &Request::post("/form/", body)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Cookie", &jar.header().unwrap()),
        )
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[test]
fn django_upload() {
    let site = django(false);
    let data = test_bytes(500_000, 21);
    let (content_type, body) = Multipart::new()
        .file("file", "upload.bin", "application/octet-stream", &data)
        .build();
    for chunked in [false, true] {
        let mut req = Request::post("/upload/", body.clone()).header("Content-Type", &content_type);
        if chunked {
            req = req.chunked(&[16384, 3]);
        }
        let resp = send(site.sluice.addr(), &req);
        assert_eq!(resp.status(), 200, "chunked={chunked}: {}", resp.text());
        let json = resp.json();
        assert_eq!(json["size"], data.len());
        assert_eq!(json["sha256"], sha256_hex(&data), "chunked={chunked}");
    }
}

#[test]
fn django_streaming_response() {
    let site = django(false);
    let resp = sluice_tests::get(site.sluice.addr(), "/stream/");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.end, BodyEnd::Complete);
    assert_eq!(resp.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
}

#[test]
fn django_file_response() {
    let site = django(false);
    let want: Vec<u8> = (0..200 * 1024usize)
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect();
    for _ in 0..2 {
        let resp = sluice_tests::get(site.sluice.addr(), "/file/");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.end, BodyEnd::Complete);
        assert_eq!(resp.body.len(), want.len());
        assert_eq!(sha256_hex(&resp.body), sha256_hex(&want));
    }
}

#[test]
fn django_admin_login() {
    let site = django(true);
    let mut conn = Conn::connect(site.sluice.addr()).unwrap();
    let page = conn
        .request(&Request::get("/admin/login/?next=/admin/"))
        .unwrap();
    assert_eq!(page.status(), 200, "{}", page.text());
    assert!(page.text().contains("csrfmiddlewaretoken"));
    let token = csrf_token(&page);
    let mut jar = CookieJar::new();
    jar.update(&page);

    let body = form_urlencoded(&[
        ("csrfmiddlewaretoken", &token),
        ("username", ADMIN_USER),
        ("password", ADMIN_PASSWORD),
        ("next", "/admin/"),
    ]);
    let resp = conn
        .request(
            &Request::post("/admin/login/?next=/admin/", body)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Cookie", &jar.header().unwrap()),
        )
        .unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text());
    assert_eq!(resp.header("Location"), Some("/admin/"));
    jar.update(&resp);
    assert!(jar.get("sessionid").is_some(), "{:?}", resp.head);

    // The session works: the admin index renders for the logged-in user.
    let resp = conn
        .request(&Request::get("/admin/").header("Cookie", &jar.header().unwrap()))
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().contains(ADMIN_USER));
}
