"""pulsar's two-app example with sluice's import lines: two servers registered, then the arbiter
serves both from one gateway. The binds come from the environment so tests can use port 0."""

import os

from sluice import arbiter
from sluice.apps import wsgi


def callable1(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"one {environ['pulsar.cfg'].name}\n".encode()]


def callable2(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"two {environ['pulsar.cfg'].name}\n".encode()]


if __name__ == "__main__":
    wsgi.WSGIServer(callable1, name="wsgi1", bind=os.environ.get("BIND1", "127.0.0.1:8060"))
    wsgi.WSGIServer(callable2, name="wsgi2", bind=int(os.environ.get("PORT2", "8070")))
    arbiter().start()
