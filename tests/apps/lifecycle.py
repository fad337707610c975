"""WSGI fixture app for the worker lifecycle tests (stdlib only).

Every answer names the code version and the worker that served it (``VERSION PID``), so a test
can tell old code from new and one worker from its replacement. The reload tests copy this file
into a temp dir and rewrite the ``VERSION`` line (or break the import) before a SIGHUP.
Marker files go into the directory named by the env var ``SLUICE_TEST_STATE``.
"""

import os
import time
from urllib.parse import parse_qs

VERSION = "v1"  # sluice-version: the reload tests rewrite this line

# What /alloc keeps alive, so the worker's resident memory only grows.
RETAINED = []


def query(environ):
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in qs.items()}


def respond(start_response, body, status="200 OK"):
    body = body.encode("utf-8")
    start_response(status, [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
    ])
    return [body]


def state_path(name):
    return os.path.join(os.environ["SLUICE_TEST_STATE"], name)


def touch(name):
    with open(state_path(name), "w") as f:
        f.write(str(os.getpid()))


def whoami():
    return f"{VERSION} {os.getpid()}"


def ep_hit(environ, start_response):
    """``VERSION PID``, after sleeping ``ms`` milliseconds (default 0)."""
    ms = float(query(environ).get("ms", "0"))
    if ms > 0:
        time.sleep(ms / 1000)
    return respond(start_response, whoami())


def ep_alloc(environ, start_response):
    """Keep ``kb`` KiB more alive (written, so the pages are resident); ``VERSION PID``."""
    kb = int(query(environ).get("kb", "64"))
    RETAINED.append(b"\x01" * (kb * 1024))
    return respond(start_response, whoami())


def ep_stuck(environ, start_response):
    """Touch ``stuck-TOKEN``, then sleep ``s`` seconds: a request that outlives the timeout."""
    q = query(environ)
    touch(f"stuck-{q['token']}")
    time.sleep(float(q.get("s", "60")))  # sluice-stuck-here
    return respond(start_response, "woke up")


def ep_slow(environ, start_response):
    """Touch ``slow-TOKEN``, sleep ``s`` seconds (default 2), then wait (at most 60 s) for
    ``go-TOKEN``: a request that is certainly still running until the test lets it finish."""
    q = query(environ)
    token = q["token"]
    touch(f"slow-{token}")
    time.sleep(float(q.get("s", "2")))
    deadline = time.monotonic() + 60
    while not os.path.exists(state_path(f"go-{token}")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return respond(start_response, f"slow done {whoami()}")


ROUTES = {
    "": ep_hit,
    "hit": ep_hit,
    "alloc": ep_alloc,
    "stuck": ep_stuck,
    "slow": ep_slow,
}


def app(environ, start_response):
    first = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
    handler = ROUTES.get(first)
    if handler is None:
        return respond(start_response, "not found", "404 Not Found")
    return handler(environ, start_response)
