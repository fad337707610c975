"""A LazyWsgi whose setup leaves a marker file per call: it must run once per worker process."""

import os
import uuid

from sluice.apps import wsgi


class Site(wsgi.LazyWsgi):
    def setup(self, environ=None):
        state = os.environ["SLUICE_TEST_STATE"]
        open(os.path.join(state, f"setup-{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
        pid = os.getpid()

        def handler(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"pid={pid}\n".encode()]

        return handler


if __name__ == "__main__":
    wsgi.WSGIServer(Site()).start()
