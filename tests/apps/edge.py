"""WSGI fixture for the static-file and compression tests (stdlib only).

Every request is first recorded, one PATH_INFO per line, in ``$SLUICE_TEST_STATE/requests.log``,
so a test can prove which requests reached Python. Then:

- ``/json?kb=N``: about N KiB of repetitive JSON (``application/json``, with Content-Length);
- ``/png?kb=N``: N KiB of bytes labelled ``image/png``;
- ``/etag``: 8 KiB of text with a strong ETag;
- ``/encoded``: a body the app gzipped itself (``Content-Encoding: gzip``);
- ``/stream?token=T``: ``text/plain`` without Content-Length: ``first`` line, then waits (up to
  20 s) for ``$SLUICE_TEST_STATE/go-T`` before the ``last`` line;
- anything else (``/static/...`` included, should it ever get here): ``python saw PATH``.
"""

import gzip
import json
import os
import threading
import time
from urllib.parse import parse_qs

_log_lock = threading.Lock()


def state_path(name):
    return os.path.join(os.environ["SLUICE_TEST_STATE"], name)


def record(path):
    with _log_lock, open(state_path("requests.log"), "a", encoding="utf-8") as f:
        f.write(path + "\n")


def query(environ):
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in qs.items()}


def json_body(kb):
    """Deterministic JSON of about ``kb`` KiB: the tests compare it byte for byte."""
    rows = [{"id": i, "name": f"row {i}", "tags": ["alpha", "beta"]} for i in range(kb * 20)]
    return json.dumps(rows, separators=(",", ":")).encode()


def answer(start_response, body, content_type, headers=()):
    start_response("200 OK", [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    record(path)
    q = query(environ)
    if path == "/json":
        return answer(start_response, json_body(int(q.get("kb", "1"))), "application/json")
    if path == "/png":
        body = bytes(i % 251 for i in range(int(q.get("kb", "1")) * 1024))
        return answer(start_response, body, "image/png")
    if path == "/etag":
        return answer(start_response, b"etag me " * 1024, "text/plain", [("ETag", '"v1"')])
    if path == "/encoded":
        body = gzip.compress(b"already gzipped " * 1024)
        return answer(start_response, body, "text/plain", [("Content-Encoding", "gzip")])
    if path == "/stream":
        go = state_path("go-" + q["token"])
        start_response("200 OK", [("Content-Type", "text/plain")])

        def lines():
            yield b"first\n"
            deadline = time.monotonic() + 20
            while not os.path.exists(go):
                if time.monotonic() > deadline:
                    yield b"timeout\n"
                    return
                time.sleep(0.01)
            yield b"last\n"

        return lines()
    return answer(start_response, f"python saw {path}".encode(), "text/plain")
