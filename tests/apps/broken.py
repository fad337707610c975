"""An app module that fails at import time (sluice must print the traceback and exit non-zero)."""


def app(environ, start_response):  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]


1 / 0  # sluice-import-failure-marker
