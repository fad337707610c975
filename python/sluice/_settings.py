"""pulsar's settings: their names, flags and defaults, how a server's values are resolved
(defaults < keyword arguments < a `--config` Python file < command-line flags), and what each
becomes in sluice's configuration."""

import argparse
import os
import runpy
import sys
import traceback

try:
    from importlib.metadata import PackageNotFoundError, version as _dist_version

    __version__ = _dist_version("sluice")
except (ImportError, PackageNotFoundError):  # running from a checkout, not installed
    __version__ = "0+checkout"

#: pulsar's default port: `-b HOST` without a port means this one.
DEFAULT_PORT = 8060


class ConfigError(Exception):
    """A setting that cannot be served: a bad value, a callable the workers cannot receive, two
    servers with one name. `start()` prints it as `sluice: error: ...` and exits 1."""


class Setting:
    """One of pulsar's settings. `scope` is "app" (each server its own) or "global" (the
    arbiter's: one value for the whole gateway)."""

    def __init__(self, name, flags, default, kind, help, scope="app", meta=None):
        self.name = name
        self.flags = flags
        self.default = default
        self.kind = kind
        self.help = help
        self.scope = scope
        self.meta = meta

    def coerce(self, value):
        """`value` as this setting's type; ValueError says why not."""
        if value is None:
            return None
        if self.kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(f"{self.name} must be true or false, not {value!r}")
            return bool(value)
        if self.kind is int:
            if isinstance(value, bool):
                raise ValueError(f"{self.name} must be a whole number, not {value!r}")
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name} must be a whole number, not {value!r}") from None
            if number < 0:
                raise ValueError(f"{self.name} must not be negative, not {number}")
            return number
        if self.kind is list:
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
        if self.name == "bind" and isinstance(value, (int, list, tuple)):
            return value
        return str(value)


SETTINGS = [
    Setting("bind", ("-b", "--bind"), f"127.0.0.1:{DEFAULT_PORT}", str,
            "the socket to bind: HOST:PORT, :PORT for every interface, unix:PATH; several "
            "separated by commas", meta="ADDRESS"),
    Setting("workers", ("-w", "--workers"), 1, int, "worker processes", meta="N"),
    Setting("thread_workers", ("--thread-workers",), 5, int, "Python threads per worker",
            meta="N"),
    Setting("timeout", ("-t", "--timeout"), 30, int,
            "seconds a request may run before its worker is replaced (the client gets a 504)",
            meta="SECONDS"),
    Setting("max_requests", ("--max-requests",), 0, int,
            "replace a worker after it has served this many requests (0: never)", meta="N"),
    Setting("backlog", ("--backlog",), 2048, int,
            "connections that may wait to be accepted", meta="N"),
    Setting("http_keep_alive", ("--http-keep-alive",), 75, int,
            "seconds an idle HTTP connection is kept open", meta="SECONDS"),
    Setting("cert_file", ("--cert-file",), None, str, "serve HTTPS with this certificate (PEM)",
            meta="FILE"),
    Setting("key_file", ("--key-file",), None, str, "the certificate's private key (PEM)",
            meta="FILE"),
    Setting("user", ("-u", "--user"), None, str, "run the workers as this user", meta="USER"),
    Setting("group", ("-g", "--group"), None, str, "run the workers as this group",
            meta="GROUP"),
    Setting("log_level", ("--log-level",), ["info"], list,
            "debug, info, warning, error, critical or none", scope="global", meta="LEVEL"),
    Setting("reload", ("--reload",), False, bool,
            "restart the workers with the new code when a Python file changes (development)",
            scope="global"),
    Setting("pid_file", ("-p", "--pid-file"), None, str, "write the server's pid to this file",
            scope="global", meta="FILE"),
    Setting("config", ("-c", "--config"), None, str,
            "a Python file of `name = value` settings", scope="global", meta="FILE"),
]
BY_NAME = {s.name: s for s in SETTINGS}

#: sluice's own per-app YAML keys, accepted as keyword arguments (and in a `--config` file) as
#: they are; see README.md, "Configuration file". pulsar's names above win where both exist.
SLUICE_APP_KEYS = frozenset("""
    chdir python graceful_timeout queue_timeout max_body max_requests_jitter max_rss
    worker_lifetime limit_request_line limit_request_fields limit_request_field_size
    header_timeout keepalive min_body_rate response_buffer static static_hashed_max_age compress
    compress_min_size forwarded_allow_ips access_log http unix_mode h2_max_concurrent_streams
    threads
""".split())
#: sluice's top-level YAML keys (one value for the gateway).
SLUICE_GLOBAL_KEYS = frozenset("admin max_connections gateway_threads reload_paths".split())


class Config:
    """A server's settings, read-only: `environ['pulsar.cfg']` in the app, as in pulsar.
    `cfg.workers`, `cfg['workers']` and `cfg.get('workers')` all read one."""

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def get(self, name, default=None):
        return self._values.get(name, default)

    def items(self):
        return self._values.items()

    def __setattr__(self, name, value):
        raise AttributeError("pulsar.cfg is read-only")

    def __reduce__(self):
        return (Config, (self._values,))

    def __repr__(self):
        return f"Config({self._values!r})"


def parser(description=None, epilog=None, version=None):
    """pulsar's command line: each setting's flags, `-h` and `--version`. Only flags given on the
    command line appear in the result (their defaults come from elsewhere)."""
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=version or f"sluice {__version__}")
    for s in SETTINGS:
        shown = s.default if not isinstance(s.default, list) else " ".join(s.default)
        help = s.help if s.default in (None, False, 0) else f"{s.help} (default: {shown})"
        if s.kind is bool:
            p.add_argument(*s.flags, dest=s.name, action="store_true", help=help)
        elif s.kind is list:
            p.add_argument(*s.flags, dest=s.name, nargs="+", metavar=s.meta, help=help)
        else:
            p.add_argument(*s.flags, dest=s.name, type=_argparse_type(s), metavar=s.meta,
                           help=help)
    return p


def _argparse_type(setting):
    def convert(text):
        try:
            return setting.coerce(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = setting.name
    return convert


def resolve(params, argv, parse_console, description=None, epilog=None, version=None):
    """A server's settings: pulsar's defaults, then `params` (its keyword arguments), then the
    `--config` file, then the command line. Returns (pulsar settings, sluice keys, extras)."""
    values = {s.name: s.default for s in SETTINGS}
    sluice_keys = {}
    extras = {}
    _apply(values, sluice_keys, extras, params, "keyword argument")
    console = {}
    if parse_console:
        p = parser(description, epilog, version)
        args = sys.argv[1:] if argv is None else list(argv)
        console = vars(p.parse_args(args))
        if "config" in console:
            values["config"] = console["config"]
    if values.get("config"):
        from_file = load_config_file(values["config"])
        _apply(values, sluice_keys, extras, from_file, f"setting in {values['config']}")
    values.update(console)
    return values, sluice_keys, extras


def _apply(values, sluice_keys, extras, given, what):
    for name, value in given.items():
        key = name.lower()
        if key in BY_NAME:
            try:
                values[key] = BY_NAME[key].coerce(value)
            except ValueError as e:
                raise ConfigError(f"{what} {name}: {e}") from None
        elif key in SLUICE_APP_KEYS or key in SLUICE_GLOBAL_KEYS:
            if key == "threads":
                values["thread_workers"] = BY_NAME["thread_workers"].coerce(value)
            else:
                sluice_keys[key] = value
        else:
            extras[name] = value


def load_config_file(path):
    """The settings a `--config` Python file sets: its public names of simple values."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    try:
        names = runpy.run_path(path, run_name="__sluice_config__")
    except Exception:
        raise ConfigError(f"reading config file {path}:\n{traceback.format_exc()}") from None
    return {k: v for k, v in names.items()
            if not k.startswith("_") and isinstance(v, (str, int, float, bool, list, tuple, dict))}


def binds(value, cert_file=None, key_file=None):
    """pulsar's bind forms as sluice's: `HOST:PORT`, `:PORT` (every interface), `HOST` (pulsar's
    port), `unix:PATH`, a bare port number (every interface), or several of them (a list, or
    one string separated by commas)."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, int):
        items = [value]
    else:
        items = [part.strip() for part in str(value).split(",") if part.strip()]
    if not items:
        raise ConfigError("bind is empty")
    out = []
    for item in items:
        addr = _bind(item)
        if cert_file or key_file:
            if not (cert_file and key_file):
                raise ConfigError("cert_file and key_file go together")
            out.append({"addr": addr, "certfile": os.path.abspath(cert_file),
                        "keyfile": os.path.abspath(key_file)})
        else:
            out.append(addr)
    return out


def _bind(item):
    if isinstance(item, int) or str(item).isdigit():
        return f"0.0.0.0:{int(item)}"
    text = str(item)
    if text.startswith("unix:"):
        return "unix:" + os.path.abspath(text[len("unix:"):])
    if text.startswith(":"):
        return "0.0.0.0" + text
    if text.startswith("["):
        return text if "]:" in text else f"{text}:{DEFAULT_PORT}"
    if text.count(":") == 1:
        return text
    if ":" in text:  # a bare IPv6 address
        return f"[{text}]:{DEFAULT_PORT}"
    return f"{text}:{DEFAULT_PORT}"


#: pulsar's log levels as sluice's log filter (`SLUICE_LOG`).
LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "warn": "warn",
              "error": "error", "critical": "error", "none": "off"}


def log_filter(levels):
    level = (levels or ["info"])[0].lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return LOG_LEVELS[level]
