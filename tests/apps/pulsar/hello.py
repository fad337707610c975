"""pulsar's hello world, with sluice's import line. Answers with the worker's pid, the thread's
id and a few settings, so tests can count processes and threads."""

import os
import threading
import time

from sluice.apps import wsgi


def hello(environ, start_response):
    if environ.get("QUERY_STRING") == "sleep":
        time.sleep(0.05)
    cfg = environ["pulsar.cfg"]
    data = (f"pid={os.getpid()} thread={threading.get_ident()} workers={cfg.workers} "
            f"thread_workers={cfg.thread_workers} timeout={cfg.timeout} "
            f"name={cfg.name} color={cfg.get('color')}\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


if __name__ == "__main__":
    wsgi.WSGIServer(hello, color="blue").start()
