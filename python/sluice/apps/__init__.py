"""pulsar's `pulsar.apps`: the WSGI server lives in `sluice.apps.wsgi`."""

from . import wsgi

__all__ = ["wsgi"]
