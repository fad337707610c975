"""WSGI fixture app for the sluice integration tests (stdlib only).

Exports ``app`` and ``validated`` (the same app behind ``wsgiref.validate``).
Dispatches on the first path segment; see the README of each endpoint below.
Marker files go into the directory named by the env var ``SLUICE_TEST_STATE``.
"""

import ctypes
import hashlib
import json
import logging
import os
import sys
import threading
import time
import wsgiref.validate
from urllib.parse import parse_qs

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("suite")

MIB = 1024 * 1024
PATTERN_MIB = bytes(range(256)) * (MIB // 256)  # one MiB of the /big pattern
FILE_SIZE = 300 * 1024
FILE_NAME = "suite-file.bin"


def file_content(size=FILE_SIZE):
    """Deterministic content served by /file: byte i is (i * 31 + 7) % 251."""
    return bytes((i * 31 + 7) % 251 for i in range(size))


def state_path(name):
    state = os.environ.get("SLUICE_TEST_STATE")
    if not state:
        raise RuntimeError("SLUICE_TEST_STATE is not set")
    return os.path.join(state, name)


def touch(path):
    with open(path, "w") as f:
        f.write("1")


def query(environ):
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in qs.items()}


def respond(start_response, body, status="200 OK", content_type="text/plain", headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def respond_json(start_response, obj, status="200 OK", headers=()):
    body = json.dumps(obj, ensure_ascii=True, sort_keys=True)
    return respond(start_response, body, status, "application/json", headers)


def read_all(inp):
    # wsgiref.validate only allows read(size) with exactly one argument, so
    # behind the validator "read everything" is spelled read(-1).
    if isinstance(inp, wsgiref.validate.InputWrapper):
        return inp.read(-1)
    return inp.read()


# --- endpoints --------------------------------------------------------------

def ep_environ(environ, start_response):
    out = {k: v for k, v in environ.items() if isinstance(v, str)}
    out["wsgi.version"] = list(environ.get("wsgi.version", ()))
    for key in ("wsgi.url_scheme", "wsgi.input_terminated", "wsgi.multithread",
                "wsgi.multiprocess", "wsgi.run_once"):
        out[key] = environ.get(key)
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
        out["has_" + key] = key in environ
    return respond_json(start_response, out)


def ep_echo(environ, start_response):
    body = read_all(environ["wsgi.input"])
    return respond(start_response, body, content_type="application/octet-stream", headers=[
        ("X-Environ-Content-Length", environ.get("CONTENT_LENGTH", "absent")),
        ("X-Body-Sha256", hashlib.sha256(body).hexdigest()),
    ])


def ep_input(environ, start_response):
    inp = environ["wsgi.input"]
    mode = query(environ).get("mode", "read")
    chunks = []
    if mode == "read":
        chunks.append(read_all(inp))
    elif mode == "readn":
        while True:
            piece = inp.read(7)
            if not piece:
                break
            chunks.append(piece)
    elif mode == "readline":
        while True:
            line = inp.readline()
            if not line:
                break
            chunks.append(line)
    elif mode == "readline_sized":
        while True:
            line = inp.readline(5)
            if not line:
                break
            chunks.append(line)
    elif mode == "readlines":
        chunks = inp.readlines()
    elif mode == "iter":
        chunks = [line for line in inp]
    else:
        return respond(start_response, f"unknown mode {mode!r}", "400 Bad Request")
    after = inp.read(8192)
    return respond_json(start_response, {
        "mode": mode,
        "chunks": [c.decode("latin-1") for c in chunks],
        "total": sum(len(c) for c in chunks),
        "after": repr(after),
    })


def ep_write(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three"]


def ep_exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("exc-info-test")
    except ValueError:
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain")], sys.exc_info())
    return [b"handled"]


def ep_raise(environ, start_response):
    raise RuntimeError("boom-before")


def ep_raise_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"partial"
        raise RuntimeError("boom-after")

    return gen()


class ClosingBody:
    """Iterable whose close() leaves $SLUICE_TEST_STATE/closed-TOKEN behind."""

    def __init__(self, token, mode):
        self.token = token
        self.mode = mode

    def __iter__(self):
        if self.mode == "ok":
            yield b"chunk-1\n"
            yield b"chunk-2\n"
            yield b"chunk-3\n"
        elif self.mode == "length":
            # Declared Content-Length: 8 (see ep_close), all of it in the first chunk.
            yield b"chunk-1\n"
            touch(state_path(f"resumed-{self.token}"))
            yield b"chunk-2\n"
        elif self.mode == "error":
            yield b"chunk-1\n"
            raise RuntimeError(f"close-error-{self.token}")
        elif self.mode == "slow":
            deadline = time.monotonic() + 60
            i = 0
            while time.monotonic() < deadline:
                yield f"tick-{i}\n".encode()
                i += 1
                time.sleep(0.05)
        else:
            raise ValueError(f"unknown mode {self.mode!r}")

    def close(self):
        touch(state_path(f"closed-{self.token}"))


def ep_close(environ, start_response):
    q = query(environ)
    mode = q.get("mode", "ok")
    headers = [("Content-Type", "text/plain")]
    if mode == "length":
        headers.append(("Content-Length", "8"))
    start_response("200 OK", headers)
    return ClosingBody(q["token"], mode)


def ep_stream(environ, start_response):
    token = query(environ)["token"]
    go = state_path(f"go-{token}")
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first\n"
        deadline = time.monotonic() + 20
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                yield b"timeout\n"
                return
            time.sleep(0.01)
        yield b"last\n"

    return gen()


def ep_big(environ, start_response):
    mb = int(query(environ).get("mb", "1"))
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(mb * MIB)),
    ])
    return (PATTERN_MIB for _ in range(mb))


def ep_headers(environ, start_response):
    body = {
        "HTTP_COOKIE": environ.get("HTTP_COOKIE"),
        "HTTP_X_MULTI": environ.get("HTTP_X_MULTI"),
        "http": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
    }
    return respond_json(start_response, body, headers=[
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
    ])


def ep_bad_header(environ, start_response):
    kind = query(environ).get("kind", "crlf")
    if kind == "huge":
        # Headers that do not fit in one frame to the gateway (1 MiB): 2 MiB of X-Bad.
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", "v" * (2 << 20))])
        return [b"must not be sent"]
    value = "bad\r\nX-Injected: yes" if kind == "crlf" else "price \u20ac5"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", value)])
    return [b"must not be sent"]


def ep_content_length(environ, start_response):
    q = query(environ)
    declared, actual = int(q["declared"]), int(q["actual"])
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(declared)),
    ])
    return [b"x" * actual]


def ep_print(environ, start_response):
    token = query(environ)["token"]
    print(f"stdout-{token}", flush=True)
    print(f"stderr-{token}", file=sys.stderr, flush=True)
    log.warning(f"log-{token}")
    errors = environ["wsgi.errors"]
    errors.write(f"errors-{token}\n")
    errors.flush()
    return respond(start_response, b"ok")


def ep_sleep(environ, start_response):
    q = query(environ)
    if "token" in q:
        touch(state_path(f"sleeping-{q['token']}"))
    time.sleep(float(q.get("s", "1")))
    return respond(start_response, b"slept")


def ep_hold(environ, start_response):
    """Answers only once $SLUICE_TEST_STATE/go-TOKEN exists (60 s at most)."""
    go = state_path(f"go-{query(environ)['token']}")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return respond(start_response, b"held")


def ep_pid(environ, start_response):
    return respond(start_response, str(os.getpid()))


def ep_sched(environ, start_response):
    """The scheduling policy of the thread serving this request."""
    names = {os.SCHED_OTHER: "other", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}
    policy = os.sched_getscheduler(0)
    return respond(start_response, names.get(policy, str(policy)))


# Where a response cell starts in a connection's shared memory (proto/src/shared/mod.rs): after
# the 1 MiB request area and a page of flags, 4 cells of 256 KiB.
SHARED_SLOTS = [1024 * 1024 + 4096 + i * 256 * 1024 for i in range(4)]


def in_shared_memory(data, offsets):
    """Whether some `memfd:sluice-body` mapping of this process holds `data` at one of `offsets`."""
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            if "memfd:sluice-body" not in line:
                continue
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            for offset in offsets:
                if offset + len(data) <= end - start:
                    if ctypes.string_at(start + offset, len(data)) == data:
                        return True
    return False


def ep_shared(environ, start_response):
    """POST: echoes the body's length and whether the gateway's shared memory holds it (at the
    start of the request area). GET ?n=N: N bytes, then whether they were in a response cell of
    the shared memory by the time the app was asked for more."""
    if environ["REQUEST_METHOD"] == "POST":
        body = read_all(environ["wsgi.input"])
        found = in_shared_memory(body, [0])
        return respond(start_response, f"{len(body)} {'shared' if found else 'socket'}")
    n = int(query(environ).get("n", "40000"))
    first = bytes((i * 7 + n) % 251 for i in range(n))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def chunks():
        yield first
        yield b"|shared" if in_shared_memory(first, SHARED_SLOTS) else b"|socket"

    return chunks()


def ep_name(environ, start_response):
    return respond(start_response, b"suite")


def ensure_file():
    path = state_path(FILE_NAME)
    if not os.path.exists(path):
        # Write under a unique name then rename, so concurrent workers/threads
        # never see a half-written file.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(file_content())
        os.replace(tmp, path)
    return path


def ep_file(environ, start_response):
    path = ensure_file()
    f = open(path, "rb")
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(FILE_SIZE)),
    ])
    return environ["wsgi.file_wrapper"](f, 64 * 1024)


ROUTES = {
    "environ": ep_environ,
    "echo": ep_echo,
    "input": ep_input,
    "write": ep_write,
    "exc_info": ep_exc_info,
    "raise": ep_raise,
    "raise-after": ep_raise_after,
    "close": ep_close,
    "stream": ep_stream,
    "big": ep_big,
    "headers": ep_headers,
    "bad-header": ep_bad_header,
    "content-length": ep_content_length,
    "print": ep_print,
    "sleep": ep_sleep,
    "pid": ep_pid,
    "hold": ep_hold,
    "sched": ep_sched,
    "name": ep_name,
    "shared": ep_shared,
    "file": ep_file,
}


# Opt-in: with SUITE_RECORD=NAME in the environment, every request the app sees is appended as one
# line to $SLUICE_TEST_STATE/NAME, so a test can prove that a request never reached Python.
RECORD = os.environ.get("SUITE_RECORD")


def record(environ):
    seen = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), environ.get("QUERY_STRING"))
    # One short O_APPEND write per line: workers and threads never interleave within a line.
    with open(state_path(RECORD), "a", encoding="utf-8") as f:
        f.write(repr(seen) + "\n")


def app(environ, start_response):
    if RECORD:
        record(environ)
    first = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
    handler = ROUTES.get(first)
    if handler is None:
        return respond(start_response, b"not found", "404 Not Found")
    return handler(environ, start_response)


validated = wsgiref.validate.validator(app)
