"""WSGI fixture for the static-file and compression tests (stdlib only).

Every request is first recorded, one PATH_INFO per line, in ``$SLUICE_TEST_STATE/requests.log``,
so a test can prove which requests reached Python. Then:

- ``/json?kb=N``: about N KiB of repetitive JSON (``application/json``, with Content-Length);
- ``/png?kb=N``: N KiB of bytes labelled ``image/png``;
- ``/etag``: 8 KiB of text with a strong ETag;
- ``/encoded``: a body the app gzipped itself (``Content-Encoding: gzip``);
- ``/stream?token=T``: the suite's stream (``text/plain`` without Content-Length: ``first``,
  then ``last`` once ``$SLUICE_TEST_STATE/go-T`` exists);
- anything else (``/static/...`` included, should it ever get here): ``python saw PATH``.
"""

import gzip
import json
import threading

from suite import ep_stream, query, respond, state_path

_log_lock = threading.Lock()


def record(path):
    with _log_lock, open(state_path("requests.log"), "a", encoding="utf-8") as f:
        f.write(path + "\n")


def json_body(kb):
    """Deterministic JSON of about ``kb`` KiB: the tests compare it byte for byte."""
    rows = [{"id": i, "name": f"row {i}", "tags": ["alpha", "beta"]} for i in range(kb * 20)]
    return json.dumps(rows, separators=(",", ":")).encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    record(path)
    q = query(environ)
    if path == "/json":
        body = json_body(int(q.get("kb", "1")))
        return respond(start_response, body, content_type="application/json")
    if path == "/png":
        body = bytes(i % 251 for i in range(int(q.get("kb", "1")) * 1024))
        return respond(start_response, body, content_type="image/png")
    if path == "/etag":
        return respond(start_response, b"etag me " * 1024, headers=[("ETag", '"v1"')])
    if path == "/encoded":
        body = gzip.compress(b"already gzipped " * 1024)
        return respond(start_response, body, headers=[("Content-Encoding", "gzip")])
    if path == "/stream":
        return ep_stream(environ, start_response)
    return respond(start_response, f"python saw {path}")
