"""The worker's side of the Python API: `sluice._boot:appN` is the callable of the N-th server,
rebuilt in the worker from what `sluice._arbiter` wrote.

The script that made the servers is imported again under another name, `__mp_main__`, as
`multiprocessing` does, and installed as `__main__`: callables pickled by reference to it find
their module, and its `if __name__ == '__main__':` block does not run again.
"""

import json
import os
import pickle
import sys
import threading
import types

#: The environment variable naming the directory `sluice._arbiter` wrote.
BOOT_ENV = "SLUICE_PY_BOOT"
#: True in a worker: servers made while the script is imported there are not registered, and
#: `start()` does nothing.
IN_WORKER = False
#: Set by `python -m sluice.pulsar`: `pulsar` means sluice in this run (and in its workers).
PULSAR_ALIAS = False

_lock = threading.Lock()
_loaded = {}


def __getattr__(name):
    if not (name.startswith("app") and name[3:].isdigit()):
        raise AttributeError(name)
    with _lock:
        if name not in _loaded:
            _loaded[name] = _load(name)
    return _loaded[name]


def _load(name):
    global IN_WORKER
    IN_WORKER = True
    folder = os.environ.get(BOOT_ENV)
    if not folder:
        raise RuntimeError(f"{BOOT_ENV} is not set: sluice._boot is for workers the Python "
                           "API starts")
    with open(os.path.join(folder, "boot.json")) as f:
        boot = json.load(f)
    if boot.get("pulsar"):
        install_pulsar_alias()
    for path in boot.get("path", []):
        if path not in sys.path:
            sys.path.insert(0, path)
    if boot.get("script") and "__mp_main__" not in sys.modules:
        run_script(boot["script"], "__mp_main__")
    with open(os.path.join(folder, f"{name}.pickle"), "rb") as f:
        callable, cfg = pickle.load(f)
    return _with_cfg(callable, cfg)


def run_script(script, name):
    """Run the file `script` as the module `name`, which is also `__main__` from then on."""
    module = types.ModuleType(name)
    module.__file__ = script
    module.__builtins__ = __builtins__
    sys.modules[name] = module
    sys.modules["__main__"] = module
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec")
    exec(code, module.__dict__)


def _with_cfg(app, cfg):
    """`app` with pulsar's `environ['pulsar.cfg']`: the server's settings, read-only."""

    def application(environ, start_response):
        environ["pulsar.cfg"] = cfg
        return app(environ, start_response)

    application.__wrapped__ = app
    return application


def install_pulsar_alias():
    """`import pulsar`, `from pulsar import arbiter`, `from pulsar.apps import wsgi` and
    `pulsar.api` resolve to sluice for this process only: nothing named pulsar is installed."""
    global PULSAR_ALIAS
    PULSAR_ALIAS = True
    import sluice
    import sluice.apps
    import sluice.apps.wsgi

    sys.modules["pulsar"] = sluice
    sys.modules["pulsar.api"] = sluice
    sys.modules["pulsar.apps"] = sluice.apps
    sys.modules["pulsar.apps.wsgi"] = sluice.apps.wsgi
