#!/usr/bin/env python3
"""sluice's benchmark: every scenario against sluice, Granian and gunicorn (and, for hello, a bare
axum server), with the same resources, interleaved round by round, printed as one table.

Run it through `bench/run`, which installs wrk and the pinned venv and builds the binaries first.
Stdlib only. Exits 1 if any server answered an error, failed a probe, or failed to start or stop.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
APPS = BENCH / "apps"
WORK = BENCH / ".work"
VENV_BIN = WORK / "venv" / "bin"
BUILT = ROOT / "target" / "release"
# The binaries run from a copy taken at the start, so a rebuild in target/ during the run (someone
# else's `cargo build`) cannot mix two builds of the gateway and the worker module in one table.
BIN = WORK / "bin"
SLUICE_BIN = BIN / "sluice"  # with libsluice_worker.so beside it, where sluice looks for it
AXUM_BIN = BIN / "sluice-bench-hello"
BINARIES = ["sluice", "libsluice_worker.so", "sluice-bench-hello"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_CPU_WARN_PERCENT = 20.0  # of one core, used by processes outside the server and wrk

HOST = "127.0.0.1"
WORKER_PROCESSES = 2
DEFAULT_THREADS = 4  # per worker process, scenarios 1-5
IO_THREADS = 32  # per worker process, the io scenario
READY_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 10.0
PORT_FREE_DEADLINE_SECONDS = 10.0
RSS_SAMPLE_INTERVAL_SECONDS = 1.0
UPLOAD_BYTES = 64 * 1024
BIG_BYTES = 1024 * 1024

# One fixed port per server, so a leftover of one kind cannot be mistaken for another.
PORTS = {"sluice": 18181, "granian": 18182, "gunicorn": 18183, "axum": 18184}
ALL_SERVERS = ["sluice", "granian", "gunicorn", "axum"]


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str  # MODULE:CALLABLE inside bench/apps
    connections: int
    threads: int  # per worker process
    path: str = "/"
    upload: bool = False
    only: tuple[str, ...] = ()  # servers that run only this scenario (the axum reference)
    tls: bool = False  # HTTPS, with a self-signed certificate made for the run
    h2: bool = False  # HTTP/2 (over TLS, by ALPN), driven by h2load instead of wrk
    servers: tuple[str, ...] = ()  # the servers that can run it at all (empty: every one)
    streams: int = 1  # h2load: streams at once per connection

    def check(self, status: int, body: bytes) -> str | None:
        """None if the probe answer is right, else what is wrong with it."""
        if status != 200:
            return f"status {status}, body {body[:200]!r}"
        want = {
            "hello": lambda b: b == b"Hello, World!",
            "hello-tls": lambda b: b == b"Hello, World!",
            "hello-h2": lambda b: b == b"Hello, World!",
            "flask": lambda b: json.loads(b).get("message") == "Hello, World!",
            "django": lambda b: json.loads(b).get("message") == "Hello, World!",
            "big": lambda b: len(b) == BIG_BYTES,
            "upload": lambda b: b == str(UPLOAD_BYTES).encode(),
            "io": lambda b: b == b"ok",
        }[self.name]
        try:
            ok = want(body)
        except ValueError as err:
            return f"unparseable body ({err}): {body[:200]!r}"
        return None if ok else f"unexpected body ({len(body)} bytes): {body[:200]!r}"


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("hello", "plain:hello", 256, DEFAULT_THREADS, only=("axum",)),
        Scenario("flask", "flaskapp:app", 64, DEFAULT_THREADS),
        Scenario("django", "djangoapp:application", 64, DEFAULT_THREADS),
        Scenario("big", "plain:big", 16, DEFAULT_THREADS),
        Scenario("upload", "plain:upload", 64, DEFAULT_THREADS, upload=True),
        Scenario("io", "plain:io", 256, IO_THREADS),
        # gunicorn has TLS but no HTTP/2; axum is the plain-HTTP reference only.
        Scenario("hello-tls", "plain:hello", 256, DEFAULT_THREADS, tls=True,
                 servers=("sluice", "granian", "gunicorn")),
        Scenario("hello-h2", "plain:hello", 16, DEFAULT_THREADS, tls=True, h2=True,
                 servers=("sluice", "granian"), streams=16),
    ]
}

TLS_DIR = WORK / "tls"
CERT, KEY = TLS_DIR / "cert.pem", TLS_DIR / "key.pem"


def make_certificate() -> None:
    """A self-signed certificate for 127.0.0.1 (clients here do not verify it)."""
    if CERT.exists() and KEY.exists():
        return
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(KEY), "-out", str(CERT), "-days", "3650",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip


def server_command(server: str, scenario: Scenario, port: int) -> list[str]:
    t = str(scenario.threads)
    w = str(WORKER_PROCESSES)
    tls = ["--certfile", str(CERT), "--keyfile", str(KEY)] if scenario.tls else []
    if server == "sluice":
        return [
            str(SLUICE_BIN), "serve", scenario.app,
            "--bind", f"{HOST}:{port}", "-w", w, "--thread-workers", t,
            "--chdir", str(APPS), "--python", str(VENV_BIN / "python"), *tls,
        ]  # fmt: skip
    if server == "granian":
        granian_tls = ["--ssl-certificate", str(CERT), "--ssl-keyfile", str(KEY)] if scenario.tls else []
        return [
            str(VENV_BIN / "granian"), "--interface", "wsgi",
            "--host", HOST, "--port", str(port), "--workers", w, "--blocking-threads", t,
            "--working-dir", str(APPS), "--no-access-log", "--log-level", "warning",
            *granian_tls, scenario.app,
        ]  # fmt: skip
    if server == "gunicorn":
        return [
            str(VENV_BIN / "gunicorn"), "-k", "gthread", "-w", w, "--threads", t,
            "--bind", f"{HOST}:{port}", "--chdir", str(APPS), "--log-level", "warning",
            *tls, scenario.app,
        ]  # fmt: skip
    if server == "axum":
        return [str(AXUM_BIN), f"{HOST}:{port}"]
    raise ValueError(server)


# ---------------------------------------------------------------------------------------------
# processes


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every process, from /proc/*/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may itself hold spaces or parentheses.
        rest = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def descendants(root: int) -> set[int]:
    """root and all its live (not zombie) descendants."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found or pid not in table or table[pid][1] == "Z":
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kib(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass  # exited between the walk and the read
    return total


def cpu_seconds(pids: set[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        ticks += int(rest[11]) + int(rest[12])
    return ticks / CLK_TCK


def busy_cpu_seconds() -> float:
    """CPU time of the whole machine in user, nice, system and steal, from /proc/stat.

    irq and softirq are left out: that is mostly the loopback traffic of the benchmark itself,
    which no process is charged for. Steal is in: a busy neighbour VM disturbs the run too.
    """
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[7]) / CLK_TCK


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the servers use it: TIME_WAIT leftovers are fine, a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_port_free(port: int, deadline_seconds: float) -> bool:
    deadline = time.monotonic() + deadline_seconds
    while not port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class Server:
    """One started server: its process group, its log, and a clean stop."""

    def __init__(self, name: str, scenario: Scenario, port: int, log_path: Path):
        self.name, self.scenario, self.port, self.log_path = name, scenario, port, log_path
        self.log = open(log_path, "wb")
        env = dict(os.environ)
        env.pop("SLUICE_LOG", None)
        env["PYTHONUNBUFFERED"] = "1"
        cwd = APPS if name in ("granian", "gunicorn") else ROOT
        # A session of its own: the group id is the server's pid, so a last-resort SIGKILL of the
        # group reaches only what this harness started.
        self.proc = subprocess.Popen(
            server_command(name, scenario, port),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Polls the scenario's own request until it answers right, or raises with the reason."""
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before it was ready")
            try:
                status, body = probe(self.port, self.scenario)
            except (OSError, http.client.HTTPException) as err:
                last = f"{type(err).__name__}: {err}"
                time.sleep(0.1)
                continue
            problem = self.scenario.check(status, body)
            if problem is None:
                return
            last = problem
            time.sleep(0.2)
        raise RuntimeError(f"not ready within {READY_DEADLINE_SECONDS:.0f} s: {last}")

    def stop(self) -> list[str]:
        """SIGTERM, then SIGKILL after a deadline; returns what went wrong (empty when clean)."""
        problems = []
        pids = descendants(self.proc.pid)
        if self.proc.poll() is not None:
            problems.append(f"had already exited with {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        try:
            self.proc.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        left = sorted(p for p in pids | descendants(self.proc.pid) if alive(p))
        if left:
            problems.append(
                f"processes {left} still alive {STOP_DEADLINE_SECONDS:.0f} s after SIGTERM; killed"
            )
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        elif self.proc.returncode not in (0, -signal.SIGTERM) and not problems:
            problems.append(f"exited with {self.proc.returncode} on SIGTERM")
        self.log.close()
        if not wait_port_free(self.port, PORT_FREE_DEADLINE_SECONDS):
            problems.append(f"port {self.port} still taken after the stop")
        return problems

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("      | " + line for line in text[-lines:])


def probe(port: int, scenario: Scenario) -> tuple[int, bytes]:
    if scenario.tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(HOST, port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        if scenario.upload:
            conn.request(
                "POST", scenario.path, body=b"x" * UPLOAD_BYTES,
                headers={"Content-Type": "application/octet-stream"},
            )  # fmt: skip
        else:
            conn.request("GET", scenario.path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# wrk

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

WRK_UPLOAD = f"""
wrk.method = "POST"
wrk.body = string.rep("x", {UPLOAD_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    non2xx: int  # wrk's `status` errors: answers with a status of 400 or more
    socket_errors: int  # connect + read + write + timeout
    socket_error_kinds: dict[str, int] = field(default_factory=dict)  # the non-zero ones
    wrk_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)


def wrk_script(scenario: Scenario) -> Path:
    path = WORK / f"wrk-{scenario.name}.lua"
    path.write_text((WRK_UPLOAD if scenario.upload else "") + WRK_DONE)
    return path


def run_h2load(scenario: Scenario, port: int, seconds: int, threads: int) -> WrkResult:
    """HTTP/2 over TLS with h2load: `connections` connections of `streams` streams each. h2load
    gives no percentiles, so p50 and p99 are left out (-1)."""
    cmd = [
        "h2load", "-t", str(threads), "-c", str(scenario.connections), "-m", str(scenario.streams),
        "-D", str(seconds), f"https://{HOST}:{port}{scenario.path}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out.stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", text)  # fmt: skip
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    took = re.search(r"finished in ([\d.]+)s", text)
    if not (done and codes and took):
        raise RuntimeError(f"h2load printed no result (exit {out.returncode}): {text}{out.stderr}")
    failed, errored, timeout = (int(done.group(i)) for i in (3, 4, 5))
    return WrkResult(
        requests=int(codes.group(1)),
        duration_us=int(float(took.group(1)) * 1e6),
        p50_us=-1,
        p99_us=-1,
        non2xx=int(codes.group(3)) + int(codes.group(4)),
        socket_errors=errored + timeout,
        socket_error_kinds={k: v for k, v in (("failed", failed), ("errored", errored),
                                              ("timeout", timeout)) if v},  # fmt: skip
        wrk_cpu_seconds=client_cpu,
    )


def run_wrk(scenario: Scenario, port: int, seconds: int, wrk_threads: int) -> WrkResult:
    if scenario.h2:
        return run_h2load(scenario, port, seconds, wrk_threads)
    scheme = "https" if scenario.tls else "http"
    cmd = [
        "wrk", "-t", str(wrk_threads), "-c", str(scenario.connections),
        "-d", f"{seconds}s", "--timeout", "2s", "-s", str(wrk_script(scenario)),
        f"{scheme}://{HOST}:{port}{scenario.path}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The harness reaps no other child while wrk runs, so the difference is wrk's own CPU.
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            d = json.loads(line[len("BENCH_JSON ") :])
            return WrkResult(
                requests=d["requests"],
                duration_us=d["duration_us"],
                p50_us=d["p50_us"],
                p99_us=d["p99_us"],
                non2xx=d["status"],
                socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
                socket_error_kinds={k: d[k] for k in ("connect", "read", "write", "timeout") if d[k]},
                wrk_cpu_seconds=wrk_cpu,
            )
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stdout}{out.stderr}")


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped; keeps the maximum."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.max_kib, self.samples = root, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(RSS_SAMPLE_INTERVAL_SECONDS):
            self.max_kib = max(self.max_kib, rss_kib(descendants(self.root)))
            self.samples += 1


# ---------------------------------------------------------------------------------------------
# one run, the rounds, the table


@dataclass
class Run:
    result: WrkResult | None = None
    warmup: WrkResult | None = None
    rss_kib: int = 0
    server_cpu_percent: float = 0.0  # of one core, during the measured run
    # CPU time per answered request during the measured run, in µs: all of the server's
    # processes, and of that the first process alone (sluice's gateway; the others' masters).
    cpu_us_per_request: float = 0.0
    root_cpu_us_per_request: float = 0.0
    other_cpu_percent: float = 0.0  # of one core: the rest of the machine, neither server nor wrk
    failure: str | None = None
    problems: list[str] = field(default_factory=list)


def run_one(server: str, scenario: Scenario, rnd: int, args: argparse.Namespace) -> Run:
    port = PORTS[server]
    run = Run()
    if not wait_port_free(port, PORT_FREE_DEADLINE_SECONDS):
        run.failure = f"port {port} is taken before the start (a leftover server?)"
        return run
    log_path = WORK / "logs" / f"{scenario.name}-{server}-r{rnd}.log"
    srv = Server(server, scenario, port, log_path)
    try:
        srv.wait_ready()
        if args.warmup:
            run.warmup = run_wrk(scenario, port, args.warmup, args.wrk_threads)
        sampler = RssSampler(srv.proc.pid)
        root = {srv.proc.pid}
        busy0, server0, t0 = busy_cpu_seconds(), cpu_seconds(descendants(srv.proc.pid)), time.monotonic()
        root0 = cpu_seconds(root)
        sampler.start()
        run.result = run_wrk(scenario, port, args.duration, args.wrk_threads)
        sampler.halt.set()
        busy1, server1, t1 = busy_cpu_seconds(), cpu_seconds(descendants(srv.proc.pid)), time.monotonic()
        root1 = cpu_seconds(root)
        sampler.join()
        run.rss_kib = sampler.max_kib
        wall = t1 - t0
        run.server_cpu_percent = 100 * (server1 - server0) / wall
        if run.result.requests:
            run.cpu_us_per_request = 1e6 * (server1 - server0) / run.result.requests
            run.root_cpu_us_per_request = 1e6 * (root1 - root0) / run.result.requests
        other = (busy1 - busy0) - (server1 - server0) - run.result.wrk_cpu_seconds
        run.other_cpu_percent = max(0.0, 100 * other / wall)
        if srv.proc.poll() is not None:
            run.failure = f"exited with {srv.proc.returncode} during the run"
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        run.failure = str(err)
    finally:
        run.problems = srv.stop()
    if run.failure or run.problems or errors_of(run):
        print(f"    {server}: log {log_path.relative_to(ROOT)}:\n{srv.log_tail()}")
    return run


def errors_of(run: Run) -> int:
    return sum(r.non2xx + r.socket_errors for r in (run.warmup, run.result) if r)


def describe_errors(run: Run) -> str:
    """e.g. `168 (measured: timeout 168)`; just `0` for a clean run."""
    parts = []
    for label, r in (("warm-up", run.warmup), ("measured", run.result)):
        if r and (r.non2xx or r.socket_errors):
            kinds = [f"non-2xx {r.non2xx}"] if r.non2xx else []
            kinds += [f"{k} {n}" for k, n in r.socket_error_kinds.items()]
            parts.append(f"{label}: {', '.join(kinds)}")
    return f"{errors_of(run)} ({'; '.join(parts)})" if parts else "0"


def fmt_ms(us: float) -> str:
    if us < 0:
        return "-"
    return f"{us / 1000:.2f}" if us < 100_000 else f"{us / 1000:.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_cell(server: str, runs: list[Run]) -> str:
    """Median CPU µs per request; for sluice also its split, e.g. `112 (gw 31)`."""
    if not runs:
        return "-"
    total = median([r.cpu_us_per_request for r in runs])
    if server != "sluice":
        return f"{total:.0f}"
    return f"{total:.0f} (gw {median([r.root_cpu_us_per_request for r in runs]):.0f})"


def print_table(results: dict, scenarios: list[Scenario], servers: list[str]) -> None:
    header = ["scenario", "server", "req/s", "rounds req/s", "p50 ms", "p99 ms", "RSS MiB",
              "CPU µs/req", "non-2xx", "sock err", "sluice/x"]  # fmt: skip
    rows = []
    for sc in scenarios:
        medians = {}
        for server in servers:
            runs = results.get((sc.name, server))
            if runs is None:
                continue
            ok = [r.result for r in runs if r.result]
            if ok:
                medians[server] = median([r.rps for r in ok])
        first = True
        for server in servers:
            runs = results.get((sc.name, server))
            if runs is None:
                continue
            ok = [r.result for r in runs if r.result]
            failed = sum(1 for r in runs if r.failure)
            non2xx = sum(w.non2xx for r in runs for w in (r.warmup, r.result) if w)
            sock = sum(w.socket_errors for r in runs for w in (r.warmup, r.result) if w)
            rounds = "/".join(f"{r.result.rps:.0f}" if r.result else "FAIL" for r in runs)
            ratio = ""
            if server != "sluice" and "sluice" in medians and server in medians:
                ratio = f"{medians['sluice'] / medians[server]:.2f}"
            rows.append([
                sc.name if first else "", server,
                f"{medians[server]:.0f}" if server in medians else "FAIL",
                rounds,
                fmt_ms(median([r.p50_us for r in ok])) if ok else "-",
                fmt_ms(median([r.p99_us for r in ok])) if ok else "-",
                f"{median([r.rss_kib for r in runs if r.result]) / 1024:.0f}" if ok else "-",
                cpu_cell(server, [r for r in runs if r.result]),
                str(non2xx), str(sock) + (f" +{failed} failed" if failed else ""),
                ratio,
            ])  # fmt: skip
            first = False
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="measured runs per server and scenario (default 3)")
    p.add_argument("--duration", type=int, default=10, help="whole seconds of each measured run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="whole seconds of warm-up per run, 0: none (default 3)")
    p.add_argument("--wrk-threads", type=int, default=1, choices=[1, 2], help="wrk threads (default 1)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    p.add_argument("--servers", default="sluice,granian,gunicorn,axum",
                   help="comma-separated (default: all; axum runs only the hello scenario)")  # fmt: skip
    args = p.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    for s in args.servers:
        if s not in ALL_SERVERS:
            p.error(f"unknown server {s!r}; choose from {', '.join(ALL_SERVERS)}")
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rounds must be >= 1, --duration > 0 and --warmup >= 0")
    return args


def preflight(servers: list[str]) -> list[str]:
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk (apt-get install wrk)")
    if shutil.which("h2load") is None:
        missing.append("h2load (apt-get install nghttp2-client)")
    if shutil.which("openssl") is None:
        missing.append("openssl (apt-get install openssl)")
    need = {
        "sluice": [VENV_BIN / "python"],
        "granian": [VENV_BIN / "granian"],
        "gunicorn": [VENV_BIN / "gunicorn"],
        "axum": [],
    }
    for server in servers:
        missing += [f"{p} (run bench/run)" for p in need[server] if not p.exists()]
    missing += [f"{BUILT / b} (run bench/run)" for b in BINARIES if not (BUILT / b).exists()]
    for server in servers:
        if not port_free(PORTS[server]):
            missing.append(f"a free port {PORTS[server]} for {server} (something listens there)")
    return missing


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up as they happen, also in a pipe
    args = parse_args()
    missing = preflight(args.servers)
    if missing:
        print("bench: missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    BIN.mkdir(parents=True, exist_ok=True)
    for b in BINARIES:
        # A fresh inode each time (copy, then rename): never rewrite a file a process has mapped.
        shutil.copy2(BUILT / b, BIN / f".{b}.tmp")
        os.replace(BIN / f".{b}.tmp", BIN / b)
    built = max((BIN / b).stat().st_mtime for b in BINARIES)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    scenarios = [SCENARIOS[s] for s in args.scenarios]
    if any(sc.tls for sc in scenarios):
        make_certificate()
    py = subprocess.run([VENV_BIN / "python", "--version"], capture_output=True, text=True).stdout.strip()
    wrk_version = " ".join(subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[:2])
    print(
        f"sluice bench: {WORKER_PROCESSES} worker processes per server, {DEFAULT_THREADS} threads per "
        f"worker ({IO_THREADS} for io); axum: tokio with 2 worker threads (hello only)\n"
        f"  {args.rounds} rounds, servers interleaved per round; {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per run; wrk -t {args.wrk_threads}; {py}; {wrk_version}\n"
        f"  {os.cpu_count()} CPUs; sluice {commit or '?'} built {time.strftime('%H:%M:%S', time.localtime(built))},"
        " "
        f"run from a copy in {BIN.relative_to(ROOT)}/; logs in {(WORK / 'logs').relative_to(ROOT)}/",
    )
    started = time.monotonic()
    results: dict[tuple[str, str], list[Run]] = {}
    for sc in scenarios:
        servers = [
            s for s in args.servers
            if (s != "axum" or "axum" in sc.only) and (not sc.servers or s in sc.servers)
        ]  # fmt: skip
        print(f"== {sc.name}: {sc.app}, {sc.connections} connections, {sc.threads} threads per worker")
        for rnd in range(1, args.rounds + 1):
            for server in servers:
                run = run_one(server, sc, rnd, args)
                results.setdefault((sc.name, server), []).append(run)
                if run.result:
                    r = run.result
                    status = (
                        f"{r.rps:9.0f} req/s  p50 {fmt_ms(r.p50_us)} ms  p99 {fmt_ms(r.p99_us)} ms  "
                        f"RSS {run.rss_kib / 1024:.0f} MiB  CPU {run.cpu_us_per_request:.0f} µs/req  "
                        f"errors {describe_errors(run)}  CPU% server "
                        f"{run.server_cpu_percent:.0f} wrk {100 * r.wrk_cpu_seconds / args.duration:.0f} "
                        f"other {run.other_cpu_percent:.0f}"
                    )
                else:
                    status = "FAILED"
                print(f"  round {rnd} {server:9} {status}")
                if run.failure:
                    print(f"    {server} failed: {run.failure}")
                for problem in run.problems:
                    print(f"    {server} stop: {problem}")
    elapsed = time.monotonic() - started

    print()
    print_table(results, scenarios, [s for s in ALL_SERVERS if s in args.servers])
    print(
        f"\nreq/s, p50, p99: medians over the rounds (rounds req/s: each round in order); "
        f"RSS: the server's processes summed, max of 1 s samples during each measured run, median "
        f"over rounds; CPU µs/req: CPU time of the server's processes per answered request during "
        f"the measured run, median over rounds (gw: sluice's gateway process alone, the rest is its "
        f"workers); non-2xx (status >= 400) and sock err (connect/read/write/timeout): totals over "
        f"all warm-ups and measured runs; sluice/x: sluice's median req/s over this row's.\n"
        f"took {elapsed / 60:.1f} min"
    )
    raw = {
        f"{sc}/{server}": [
            {"result": r.result and r.result.__dict__, "warmup": r.warmup and r.warmup.__dict__,
             "rss_kib": r.rss_kib, "server_cpu_percent": r.server_cpu_percent,
             "cpu_us_per_request": r.cpu_us_per_request,
             "root_cpu_us_per_request": r.root_cpu_us_per_request,
             "other_cpu_percent": r.other_cpu_percent, "failure": r.failure, "problems": r.problems}
            for r in runs
        ]
        for (sc, server), runs in results.items()
    }  # fmt: skip
    out = WORK / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.NamedTemporaryFile("w", dir=WORK, delete=False) as f:
        json.dump(raw, f, indent=1)
    os.replace(f.name, out)
    print(f"raw results: {out.relative_to(ROOT)}")

    def is_noisy(r: Run) -> bool:
        return r.result is not None and r.other_cpu_percent > OTHER_CPU_WARN_PERCENT

    noisy = [
        f"{sc}/{server}: "
        + ", ".join(f"round {i} {r.other_cpu_percent:.0f}%" for i, r in enumerate(runs, 1) if is_noisy(r))
        for (sc, server), runs in results.items()
        if any(is_noisy(r) for r in runs)
    ]
    if noisy:
        print(
            f"\nwarning: other processes used more than {OTHER_CPU_WARN_PERCENT:.0f}% of a core during "
            "these measured runs, so their numbers are disturbed (CPU% other in the log above):\n  "
            + "\n  ".join(noisy)
        )
    bad = [
        f"{sc}/{server} round {i}: " + (r.failure or "; ".join(r.problems) or f"errors {describe_errors(r)}")
        for (sc, server), runs in results.items()
        for i, r in enumerate(runs, 1)
        if r.failure or r.problems or errors_of(r)
    ]
    if bad:
        print("\nFAILED: errors or failures, these numbers are not a clean run:\n  " + "\n  ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
