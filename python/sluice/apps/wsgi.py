"""pulsar's `pulsar.apps.wsgi`: `WSGIServer` and the handler helpers, served by sluice.

Every request reaches the app with its body already read by the gateway, on one of the worker's
threads (`thread_workers` of them), so pulsar's asynchronous helpers for blocking frameworks
(`wait_for_body_middleware`, `middleware_in_executor`) have nothing left to wait for: they are
kept so that pulsar apps run unchanged.
"""

import io
import sys
import threading

from .. import _boot
from .._arbiter import arbiter
from .._settings import Config, ConfigError, resolve

__all__ = ["WSGIServer", "WsgiHandler", "LazyWsgi", "wait_for_body_middleware",
           "middleware_in_executor"]


class WSGIServer:
    """A WSGI server for `callable`, as pulsar's: settings are pulsar's (`bind`, `workers`,
    `thread_workers`, `timeout`, ...) or any sluice setting by its YAML name, resolved as
    defaults < keyword arguments < a `--config` file < command-line flags (read from `sys.argv`
    unless `parse_console` is false, or from `argv`). Making one registers it with the
    `arbiter()`; `start()` serves every server registered so far from one sluice gateway."""

    name = "wsgi"

    def __init__(self, callable=None, name=None, description=None, epilog=None, version=None,
                 argv=None, parse_console=True, **params):
        self.callable = callable
        self.name = name or self.name
        self.settings, self.sluice_keys, self.extras = {}, {}, {}
        if _boot.IN_WORKER:
            # The script imported again in a worker: its servers are already running.
            return
        try:
            self.settings, self.sluice_keys, self.extras = resolve(
                params, argv, parse_console, description, epilog, version)
        except ConfigError as e:
            if not parse_console:
                raise
            # A bad --config file is a usage error, as a bad flag is: no traceback of ours.
            print(f"{sys.argv[0] if sys.argv else 'sluice'}: error: {e}", file=sys.stderr)
            sys.exit(2)
        for name in self.extras:
            print(f"sluice: note: {name!r} is not a setting; it is kept in environ['pulsar.cfg']"
                  " only", file=sys.stderr)
        arbiter().register(self)

    @property
    def cfg(self):
        """This server's settings as the app sees them in `environ['pulsar.cfg']`."""
        return Config({"name": self.name, **self.settings, **self.sluice_keys, **self.extras})

    def start(self, exit=True):
        """Serve this server and every other one made in this process; blocks until sluice
        stops (Ctrl-C, SIGTERM). With `exit` the process then exits with sluice's status."""
        return arbiter().start(exit=exit)


class WsgiHandler:
    """pulsar's handler: calls each middleware in turn with `(environ, start_response)`; the
    first that returns something other than None answers. If none does, 404. Each of
    `response_middleware` is then called as `(environ, response)` and may return a response to
    use instead."""

    def __init__(self, middleware=None, response_middleware=None, **kwargs):
        self.middleware = list(middleware or [])
        self.response_middleware = list(response_middleware or [])

    def __call__(self, environ, start_response):
        response = None
        for middleware in self.middleware:
            response = middleware(environ, start_response)
            if response is not None:
                break
        if response is None:
            body = b"Not Found\n"
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        for middleware in self.response_middleware:
            replaced = middleware(environ, response)
            if replaced is not None:
                response = replaced
        return response


class LazyWsgi:
    """A handler that builds the real one with `setup(environ)` the first time it is called, once
    per worker process. Subclasses implement `setup`. It pickles without what `setup` built, so
    each worker builds its own."""

    def __call__(self, environ, start_response):
        return self.handler(environ)(environ, start_response)

    def handler(self, environ=None):
        """The handler `setup` built in this process (building it on first use)."""
        built = self.__dict__.get("_sluice_handler")
        if built is None:
            with _setup_lock:
                built = self.__dict__.get("_sluice_handler")
                if built is None:
                    built = self.setup(environ)
                    self.__dict__["_sluice_handler"] = built
        return built

    def setup(self, environ=None):
        raise NotImplementedError("LazyWsgi.setup must return the WSGI handler")

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_sluice_handler", None)
        return state


_setup_lock = threading.RLock()


def wait_for_body_middleware(environ, start_response=None):
    """pulsar's middleware for blocking frameworks: makes `wsgi.input` the whole body as a
    seekable stream and returns None. sluice's gateway has read the body before the request
    reached Python, and its `wsgi.input` already is a seekable stream over it, so there is
    usually nothing to do."""
    stream = environ.get("wsgi.input")
    seekable = getattr(stream, "seekable", None)
    if stream is None or not (seekable and seekable()):
        environ["wsgi.input"] = io.BytesIO(stream.read() if stream is not None else b"")
    environ.pop("wsgi.async", None)
    return None


def middleware_in_executor(app):
    """pulsar's way to run a blocking app off its event loop. Under sluice every call already
    runs on the worker's pool of threads (`thread_workers`), so the returned middleware simply
    calls `app` there."""
    return _InExecutor(app)


class _InExecutor:
    """`middleware_in_executor`'s middleware. A class rather than a closure: the handler that
    holds it travels to the workers pickled, and a closure cannot be."""

    def __init__(self, app):
        self.__wrapped__ = app

    def __call__(self, environ, start_response):
        return self.__wrapped__(environ, start_response)

    def __repr__(self):
        return f"middleware_in_executor({self.__wrapped__!r})"
