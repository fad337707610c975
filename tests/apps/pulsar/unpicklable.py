"""A callable the workers cannot receive: a lambda has no name to import it by."""

from sluice.apps import wsgi

if __name__ == "__main__":
    wsgi.WSGIServer(lambda environ, start_response: []).start()
