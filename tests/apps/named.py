"""Two WSGI callables in one module, for the two-apps-one-YAML test."""


def _answer(body):
    def wsgi_app(environ, start_response):
        start_response("200 OK", [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
        ])
        return [body]

    return wsgi_app


alpha = _answer(b"alpha")
beta = _answer(b"beta")
