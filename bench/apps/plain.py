"""Plain WSGI apps of the benchmark (stdlib only): one callable per scenario."""

import time

HELLO_BODY = b"Hello, World!"  # 13 bytes
BIG_BODY = b"x" * (1024 * 1024)  # 1 MiB, built once at import
IO_SLEEP_SECONDS = 0.010  # stands in for a database call


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO_BODY]


def big(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG_BODY)))],
    )
    return [BIG_BODY]


def upload(environ, start_response):
    """Reads the whole body and answers its length; a short read answers 400 so wrk counts it."""
    expected = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(expected)
    status = "200 OK" if len(body) == expected else "400 Bad Request"
    out = str(len(body)).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def io(environ, start_response):
    time.sleep(IO_SLEEP_SECONDS)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
