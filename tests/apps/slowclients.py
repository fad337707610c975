"""WSGI fixture app for the slow-client tests (stdlib only).

Counts what reaches Python, so a test can prove that what a slow client sends never does:
every request is counted by path, and the requests being served right now (and the most ever
at once) are tracked per worker process. Run it with one worker process for whole counts.
Marker files go into the directory named by the env var ``SLUICE_TEST_STATE``.
"""

import json
import os
import threading
from urllib.parse import parse_qs

MIB = 1024 * 1024
PATTERN_MIB = bytes(range(256)) * (MIB // 256)  # byte i of a /stream body is i % 256

LOCK = threading.Lock()
HITS = {}  # path -> requests that reached Python
IN_FLIGHT = 0
PEAK_IN_FLIGHT = 0


def query(environ):
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in qs.items()}


def touch(name):
    with open(os.path.join(os.environ["SLUICE_TEST_STATE"], name), "w") as f:
        f.write(str(os.getpid()))


def respond(start_response, body, content_type="text/plain"):
    body = body.encode("utf-8")
    start_response("200 OK", [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
    ])
    return [body]


def ep_hit(environ, start_response):
    return respond(start_response, "ok")


def ep_upload(environ, start_response):
    """Reads the body; answers with its length."""
    body = environ["wsgi.input"].read()
    return respond(start_response, str(len(body)))


def ep_stats(environ, start_response):
    """``{"hits": {path: n}, "in_flight": n, "peak_in_flight": n}``, this request included."""
    with LOCK:
        stats = {"hits": dict(HITS), "in_flight": IN_FLIGHT, "peak_in_flight": PEAK_IN_FLIGHT}
    return respond(start_response, json.dumps(stats, sort_keys=True), "application/json")


class Stream:
    """``mb`` MiB of the pattern in 1 MiB pieces. Touches ``started-TOKEN`` when created,
    ``sent-TOKEN`` once every piece has been handed to the server (the worker asks for the next
    piece only after it has written the previous one), and ``closed-TOKEN`` in ``close()``."""

    def __init__(self, mb, token):
        self.mb = mb
        self.token = token
        touch(f"started-{token}")

    def __iter__(self):
        for _ in range(self.mb):
            yield PATTERN_MIB
        touch(f"sent-{self.token}")

    def close(self):
        touch(f"closed-{self.token}")


def ep_stream(environ, start_response):
    q = query(environ)
    mb = int(q.get("mb", "1"))
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(mb * MIB)),
    ])
    return Stream(mb, q["token"])


ROUTES = {
    "/hit": ep_hit,
    "/upload": ep_upload,
    "/stats": ep_stats,
    "/stream": ep_stream,
}


def app(environ, start_response):
    global IN_FLIGHT, PEAK_IN_FLIGHT
    path = environ.get("PATH_INFO", "/")
    with LOCK:
        HITS[path] = HITS.get(path, 0) + 1
        IN_FLIGHT += 1
        PEAK_IN_FLIGHT = max(PEAK_IN_FLIGHT, IN_FLIGHT)
    try:
        handler = ROUTES.get(path)
        if handler is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        return handler(environ, start_response)
    finally:
        # A /stream response is still being iterated after this; the tests that look at
        # in-flight counts do not stream.
        with LOCK:
            IN_FLIGHT -= 1
