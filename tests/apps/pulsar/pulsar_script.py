"""An unmodified pulsar script: it imports pulsar, which `python -m sluice.pulsar` provides."""

import os

from pulsar.apps import wsgi


def hello(environ, start_response):
    cfg = environ["pulsar.cfg"]
    data = f"pulsar pid={os.getpid()} thread_workers={cfg.thread_workers}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


if __name__ == "__main__":
    wsgi.WSGIServer(hello).start()
