"""pulsar's arbiter: the servers made in this process, served together by one sluice gateway.

`start()` writes the servers as a sluice configuration (one app per server) into a private
directory, with each callable pickled beside it, runs `sluice run --config` on it and waits. The
workers run this interpreter (`sys.executable`); each imports the script under another name (so
its `if __name__ == '__main__':` block does not run again) and unpickles its callable
(`sluice._boot`).
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile

from . import _boot
from ._settings import SLUICE_GLOBAL_KEYS, Config, ConfigError, binds, log_filter

#: Signals the gateway acts on, passed on from this process (which only waits for it).
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2",
                     "SIGTTIN", "SIGTTOU")


class Arbiter:
    """Holds the servers until `start()` serves them all from one gateway."""

    def __init__(self):
        self.servers = []
        self.params = {}

    def register(self, server):
        self.servers.append(server)

    def start(self, exit=True):
        """Serve every registered server; blocks until the gateway stops. With `exit` (pulsar's
        default) the process then exits with the gateway's status; otherwise it is returned."""
        if _boot.IN_WORKER:
            return None
        try:
            plan = Plan(self.servers, self.params)
        except ConfigError as e:
            print(f"sluice: error: {e}", file=sys.stderr)
            if exit:
                sys.exit(1)
            raise
        code = plan.run()
        if exit:
            sys.exit(code)
        return code


_ARBITER = None


def arbiter(**params):
    """The arbiter of this process (made on first use). Keyword arguments are global settings
    for the whole gateway (`reload`, `pid_file`, `log_level`, or sluice's top-level keys such as
    `admin`)."""
    global _ARBITER
    if _ARBITER is None:
        _ARBITER = Arbiter()
    _ARBITER.params.update(params)
    return _ARBITER


class Plan:
    """The sluice configuration for a set of servers, and the pickled callables."""

    def __init__(self, servers, params):
        if not servers:
            raise ConfigError("no server to start: make a wsgi.WSGIServer(callable) first")
        names = [s.name for s in servers]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"two servers are named {name!r}: give each its own name=")
        first = servers[0].settings
        top = dict(first)
        for key, value in params.items():
            top[key.lower()] = value
        self.log = log_filter(top.get("log_level"))
        self.script = _main_script()
        self.config = {"python": sys.executable, "apps": {}}
        if top.get("pid_file"):
            self.config["pidfile"] = os.path.abspath(top["pid_file"])
        reload_paths = []
        if top.get("reload"):
            self.config["reload"] = True
            # The apps' directory (the current one) is watched for *.py files; a script kept
            # elsewhere is watched as the one file (its whole directory would count any file).
            if self.script and os.path.dirname(self.script) != os.getcwd():
                reload_paths.append(self.script)
        for server in servers:
            for key in SLUICE_GLOBAL_KEYS:
                if key in server.sluice_keys:
                    self.config[key] = server.sluice_keys[key]
        for key in SLUICE_GLOBAL_KEYS:
            if key in params:
                self.config[key] = params[key]
        if reload_paths:
            self.config["reload_paths"] = list(self.config.get("reload_paths", [])) + reload_paths
        self.pickles = {}
        for index, server in enumerate(servers):
            attr = f"app{index}"
            self.config["apps"][server.name] = _app_config(server, attr)
            self.pickles[attr] = _pickled(server)

    def run(self):
        """Write the plan, run the gateway on it and wait; the gateway's exit status."""
        with tempfile.TemporaryDirectory(prefix="sluice-py-") as folder:
            self.write(folder)
            env = dict(os.environ)
            env[_boot.BOOT_ENV] = folder
            env.setdefault("SLUICE_LOG", self.log)
            command = [sluice_command(), "run", "--config", os.path.join(folder, "sluice.yaml")]
            return _wait(subprocess.Popen(command, env=env))

    def write(self, folder):
        boot = {
            "script": self.script,
            "path": [os.path.dirname(self.script)] if self.script else [],
            "pulsar": _boot.PULSAR_ALIAS,
        }
        files = {"boot.json": json.dumps(boot).encode(),
                 # JSON is YAML: the gateway reads this as any other sluice.yaml.
                 "sluice.yaml": json.dumps(self.config, indent=2).encode()}
        for attr, data in self.pickles.items():
            files[f"{attr}.pickle"] = data
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)


def _app_config(server, attr):
    s = server.settings
    app = {
        "app": f"sluice._boot:{attr}",
        "chdir": os.getcwd(),
        "bind": binds(s["bind"], s.get("cert_file"), s.get("key_file")),
        "workers": s["workers"],
        "threads": s["thread_workers"],
        "timeout": s["timeout"],
        "keepalive": s["http_keep_alive"],
    }
    if s["max_requests"]:
        app["max_requests"] = s["max_requests"]
    if s["backlog"] != 2048:
        app["backlog"] = s["backlog"]
    for key in ("user", "group"):
        if s.get(key):
            raise ConfigError(
                f"{key} {s[key]!r}: sluice cannot switch the workers' {key} yet; start it as "
                f"that {key} instead")
    for key, value in server.sluice_keys.items():
        if key not in SLUICE_GLOBAL_KEYS:
            app[key] = _absolute_paths(key, value)
    return app


def _absolute_paths(key, value):
    """The generated file lives in a temporary directory: relative paths must mean what they
    mean to the user, relative to the current directory."""
    if key == "chdir":
        return os.path.abspath(value)
    if key == "static" and isinstance(value, dict):
        return {prefix: os.path.abspath(path) for prefix, path in value.items()}
    return value


def _pickled(server):
    """The callable and its settings as the workers receive them."""
    callable = server.callable
    if callable is None:
        raise ConfigError(f"server {server.name!r} has no callable: WSGIServer(callable)")
    if getattr(callable, "__module__", None) == "__main__" and _main_script() is None:
        raise ConfigError(
            f"the callable {callable!r} of server {server.name!r} is defined in an interactive "
            "session: the workers cannot import it; define it in a file")
    try:
        pickle.dumps(callable)
    except Exception as e:
        raise ConfigError(
            f"the callable {callable!r} of server {server.name!r} cannot be sent to the "
            f"workers ({type(e).__name__}: {e}); it must be picklable: a function or class "
            "defined at the top level of a module or of the script, or an instance of one"
        ) from None
    # The server's own pulsar.cfg, less what cannot travel (an extra keyword argument may be
    # any object; the settings themselves are plain values).
    cfg = {key: value for key, value in server.cfg.items() if _picklable(value)}
    return pickle.dumps((callable, Config(cfg)))


def _picklable(value):
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _main_script():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    return os.path.realpath(path)


def sluice_command():
    """The `sluice` command installed with this package: the venv's scripts directory (also
    the user scheme's, for `pip install --user`), then PATH, then a checkout's release build."""
    candidates = [os.path.join(sysconfig.get_path("scripts"), "sluice")]
    try:
        candidates.append(
            os.path.join(sysconfig.get_path("scripts", f"{os.name}_user"), "sluice"))
    except KeyError:
        pass
    found = shutil.which("sluice")
    if found:
        candidates.append(found)
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "target", "release", "sluice"))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError("the sluice command is not installed: pip install sluice")


def _wait(process):
    """Wait for the gateway, passing on the signals it acts on. A Ctrl-C reaches both (one
    process group); a second SIGINT means the same to the gateway (stop now), so nothing is
    lost by passing it on too."""
    previous = {}

    def forward(signum, frame):
        if process.poll() is None:
            process.send_signal(signum)

    for name in FORWARDED_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, forward)
    try:
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:
            process.terminate()
            process.wait()
    return 128 - code if code < 0 else code
