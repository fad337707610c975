"""sluice from Python: pulsar's API over sluice's gateway.

    from sluice.apps import wsgi

    def hello(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'Hello World!\\n']

    if __name__ == '__main__':
        wsgi.WSGIServer(hello).start()

`WSGIServer(...).start()` turns pulsar-style settings into a sluice configuration and runs the
`sluice` command this package installed, with this interpreter (`sys.executable`) for the workers.
"""

from ._arbiter import arbiter
from ._settings import Config, ConfigError, __version__
from .apps import wsgi

__all__ = ["Config", "ConfigError", "arbiter", "wsgi", "__version__"]
