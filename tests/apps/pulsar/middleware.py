"""pulsar's recipe for blocking frameworks: a WsgiHandler whose middleware waits for the body,
then runs a blocking view in the executor. Answers the body's length and SHA-256."""

import hashlib

from sluice.apps import wsgi


def blocking_view(environ, start_response):
    if environ["PATH_INFO"] != "/echo":
        return None
    stream = environ["wsgi.input"]
    body = stream.read()
    stream.seek(0)
    again = stream.read()
    data = f"{len(body)} {hashlib.sha256(body).hexdigest()} same={body == again}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


app = wsgi.WsgiHandler(middleware=[wsgi.wait_for_body_middleware,
                                   wsgi.middleware_in_executor(blocking_view)])

if __name__ == "__main__":
    wsgi.WSGIServer(callable=app).start()
