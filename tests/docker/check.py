"""What tests/docker/run checks over HTTP, as a browser and an API client would: the example
site, the Flask API and sluice's admin bind in the compose deployment, a stop during a slow
response, and an app served by `docker run`. Python's http.client and urllib only (real HTTP
over the published ports, nothing mocked). Each subcommand exits non-zero with what failed."""
import argparse
import gzip
import hashlib
import http.client
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class CheckError(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckError(what)
    print(f"   ok: {what}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """Cookies kept, redirects not followed (each is checked)."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect
        )

    def request(self, path, data=None, headers=None, method=None):
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {}, method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)

    def post_form(self, path, fields, referer):
        body = urllib.parse.urlencode(fields).encode()
        return self.request(
            path,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + referer},
        )


def csrf_token(html):
    m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not m:
        raise CheckError("no csrfmiddlewaretoken in the form")
    return m.group(1).decode()


def multipart(fields, name, filename, content):
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def get_json(url, data=None):
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def cmd_wait(args):
    """Poll URL until it answers 200, for at most --deadline seconds."""
    deadline = time.monotonic() + args.deadline
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(args.url, timeout=2) as resp:
                if resp.status == 200:
                    print(f"   ready: {args.url}")
                    return
                last = resp.status
        except urllib.error.HTTPError as e:
            last = e.code
        except OSError as e:
            last = e
        time.sleep(0.5)
    raise CheckError(f"{args.url} not 200 within {args.deadline}s (last: {last})")


def check_site_and_api(site, api, admin, username, password, site_workers, api_workers):
    browser = Browser(site)
    marker = f"docker-test-{uuid.uuid4().hex[:8]}"

    print("== the Django site: the form (CSRF), Postgres, the Flask API")
    status, _, html = browser.request("/")
    expect(status == 200, "GET / answers 200")
    token = csrf_token(html)
    expect(browser.cookie("csrftoken"), "the form page sets the csrftoken cookie")
    status, _, _ = Browser(site).post_form("/", {"name": "x", "message": "no token"}, "/")
    expect(status == 403, f"a POST without the CSRF token is refused (403, got {status})")
    status, headers, _ = browser.post_form(
        "/", {"csrfmiddlewaretoken": token, "name": marker, "message": "signed through the form"}, "/"
    )
    expect(status == 302, f"the form POST redirects (302, got {status})")
    m = re.match(r"/\?added=(\d+)$", headers.get("Location", ""))
    expect(m, f"to /?added=ID ({headers.get('Location')})")
    entry_id = int(m.group(1))
    status, _, html = browser.request(headers["Location"])
    expect(status == 200 and marker.encode() in html, "the new entry is on the page")

    status, _, index = get_json(api + "/")
    expect(status == 200 and "endpoints" in index, "the Flask API's / answers 200 with its index")
    status, _, listing = get_json(api + "/api/entries")
    rows = {e["id"]: e for e in listing["entries"]} if status == 200 else {}
    expect(
        entry_id in rows and rows[entry_id]["name"] == marker,
        "the form's row is in the Flask API's GET /api/entries",
    )
    api_marker = marker + "-api"
    status, headers, created = get_json(api + "/api/entries", {"name": api_marker, "message": "from the API"})
    expect(status == 201 and created["name"] == api_marker, "POST /api/entries answers 201 with the row")
    status, _, one = get_json(api + headers["Location"])
    expect(status == 200 and one["id"] == created["id"], f"GET {headers['Location']} reads it back")
    status, _, bad = get_json(api + "/api/entries", {"name": ""})
    expect(status == 400, "an invalid entry gets 400")
    status, _, html = browser.request("/")
    expect(api_marker.encode() in html, "the API's row is on the Django page")

    print("== the upload")
    content = os.urandom(300 * 1024)
    body, ctype = multipart({"csrfmiddlewaretoken": csrf_token(html)}, "file", "random.bin", content)
    status, headers, _ = browser.request(
        "/upload/", data=body, headers={"Content-Type": ctype, "Referer": site + "/"}
    )
    expect(status == 302, f"the multipart POST of 300 KiB redirects (302, got {status})")
    status, headers, downloaded = browser.request(headers["Location"])
    expect(status == 200 and downloaded == content, "the stored file's bytes are the uploaded bytes")
    expect(headers.get("X-Content-SHA256") == hashlib.sha256(content).hexdigest(), "and its SHA-256")

    print("== the streamed response")
    conn = http.client.HTTPConnection(*urllib.parse.urlsplit(site).netloc.split(":"), timeout=30)
    start = time.monotonic()
    conn.request("GET", "/stream/?lines=5&delay=0.4")
    resp = conn.getresponse()
    first = resp.readline()
    first_at = time.monotonic() - start
    rest = resp.read()
    total = time.monotonic() - start
    conn.close()
    lines = (first + rest).decode().splitlines()
    expect(resp.status == 200 and lines == [f"line {i} of 5" for i in range(1, 6)], "all 5 lines arrive")
    expect(
        first_at < 1.0 and total > 1.5,
        f"the first line arrives before the rest are made ({first_at:.2f}s, all after {total:.2f}s)",
    )

    print("== the admin")
    admin_browser = Browser(site)
    status, headers, _ = admin_browser.request("/admin/")
    expect(status == 302 and "/admin/login/" in headers.get("Location", ""), "/admin/ asks to log in")
    status, _, html = admin_browser.request("/admin/login/?next=/admin/")
    expect(status == 200 and b"Django administration" in html, "the login page")
    status, headers, _ = admin_browser.post_form(
        "/admin/login/?next=/admin/",
        {"csrfmiddlewaretoken": csrf_token(html), "username": username, "password": password, "next": "/admin/"},
        "/admin/login/",
    )
    expect(status == 302 and headers.get("Location") == "/admin/", f"the superuser logs in (302, got {status})")
    status, _, html = admin_browser.request("/admin/guestbook/entry/")
    expect(status == 200 and marker.encode() in html, "a logged-in admin page lists the form's entry")

    print("== static files (collectstatic's output, served by sluice)")
    status, _, page = browser.request("/")
    m = re.search(rb'href="(/static/guestbook/site\.[0-9a-f]{12}\.css)"', page)
    expect(m, "the page links a hashed style sheet")
    path = m.group(1).decode()
    status, headers, plain = browser.request(path, headers={"Accept-Encoding": "identity"})
    expect(status == 200 and b":root" in plain, f"GET {path}")
    expect(
        "immutable" in headers.get("Cache-Control", "") and "max-age=31536000" in headers.get("Cache-Control", ""),
        f"a hashed name is cached for a year, immutable ({headers.get('Cache-Control')})",
    )
    etag = headers.get("ETag")
    expect(etag and headers.get("Last-Modified"), "with ETag and Last-Modified")
    status, headers, br = browser.request(path, headers={"Accept-Encoding": "gzip, br"})
    expect(status == 200 and headers.get("Content-Encoding") == "br", "Accept-Encoding: br gets the .br sibling")
    _, _, br_file = browser.request(path + ".br", headers={"Accept-Encoding": "identity"})
    expect(br == br_file and len(br) < len(plain), "whose bytes are collectstatic's .br file")
    status, headers, gz = browser.request(path, headers={"Accept-Encoding": "gzip"})
    expect(
        headers.get("Content-Encoding") == "gzip" and gzip.decompress(gz) == plain,
        "Accept-Encoding: gzip gets the .gz sibling, the same file",
    )
    status, headers, _ = browser.request(path, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    expect(status == 304, f"a matching If-None-Match gets 304 (got {status})")

    print("== the admin bind")
    status, _, _ = get(admin + "/healthz")
    expect(status == 200, "/healthz answers 200")
    status, _, _ = get(admin + "/readyz")
    expect(status == 200, "/readyz answers 200")
    status, headers, metrics = get(admin + "/metrics")
    expect(status == 200 and b"sluice_requests_total" in metrics, "/metrics has sluice_requests_total")
    # /readyz needs one worker per app; the others may still be starting.
    want = {"site": site_workers, "api": api_workers}
    deadline = time.monotonic() + 20
    while True:
        text = get(admin + "/metrics")[2].decode()
        alive = {}
        for app in want:
            m = re.search(rf'sluice_workers_alive\{{[^}}]*app="{app}"[^}}]*\}} (\d+)', text)
            alive[app] = int(m.group(1)) if m else None
        if alive == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expect(
        alive == want,
        f"workers alive {alive}: the environment's counts, through compose.yaml and sluice.yaml's ${{...}}",
    )


def cmd_compose(args):
    check_site_and_api(
        args.site, args.api, args.admin, args.username, args.password, args.site_workers, args.api_workers
    )


def cmd_stop(args):
    """Start a slow streamed response, run the stop command once its first line is in, and
    check: /readyz stops answering 200 while the response is still going, every line arrives,
    the stop command succeeds."""
    print("== stop during a slow response")
    lines = 10
    host, port = urllib.parse.urlsplit(args.site).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", f"/stream/?lines={lines}&delay=0.5")
    resp = conn.getresponse()
    got = [resp.readline()]
    start = time.monotonic()
    stop = subprocess.Popen(args.stop_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    flipped_at = None
    while flipped_at is None and time.monotonic() - start < lines * 0.5:
        try:
            with urllib.request.urlopen(args.admin + "/readyz", timeout=1):
                pass
        except (urllib.error.HTTPError, OSError):
            flipped_at = time.monotonic() - start
            break
        time.sleep(0.1)
    got.append(resp.read())
    done_at = time.monotonic() - start
    conn.close()
    body = b"".join(got).decode().splitlines()
    output, _ = stop.communicate(timeout=120)
    stopped_at = time.monotonic() - start
    expect(body == [f"line {i} of {lines}" for i in range(1, lines + 1)], f"all {lines} lines arrived")
    expect(
        flipped_at is not None and flipped_at < done_at,
        f"/readyz stopped answering 200 ({flipped_at and round(flipped_at, 2)}s) before the response ended ({done_at:.2f}s)",
    )
    expect(stop.returncode == 0, f"the stop command succeeded ({stop.returncode}: {output.decode().strip()})")
    expect(stopped_at >= done_at, f"it returned after the response completed ({stopped_at:.2f}s)")


def cmd_app(args):
    status, headers, body = get(args.url)
    expect(status == 200 and body == args.body.encode(), f"{args.url} answers 200 with {args.body!r}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("wait")
    p.add_argument("url")
    p.add_argument("--deadline", type=float, default=120)
    p.set_defaults(func=cmd_wait)
    p = sub.add_parser("compose")
    for name in ("site", "api", "admin", "username", "password"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--site-workers", type=int, required=True)
    p.add_argument("--api-workers", type=int, required=True)
    p.set_defaults(func=cmd_compose)
    p = sub.add_parser("stop")
    p.add_argument("--site", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("stop_command", nargs="+")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("app")
    p.add_argument("url")
    p.add_argument("body")
    p.set_defaults(func=cmd_app)
    args = parser.parse_args()
    try:
        args.func(args)
    except CheckError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
