"""Hello page: shows which worker process and thread served the request."""

import html
import os
import threading

SHOWN = ["REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
         "REMOTE_ADDR", "HTTP_HOST", "HTTP_USER_AGENT",
         "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess"]


def app(environ, start_response):
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(environ.get(k, '')))}</td></tr>"
        for k in SHOWN
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Hello from sluice</title>
<link rel="stylesheet" href="/static/hello.css">
</head><body>
<h1>Hello from sluice</h1>
<p>Served by worker pid <b>{os.getpid()}</b>, thread <b>{html.escape(threading.current_thread().name)}</b>.
Reload a few times to see the work spread over processes and threads.</p>
<table>{rows}</table>
</body></html>
""".encode("utf-8")
    start_response("200 OK", [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(page))),
    ])
    return [page]
