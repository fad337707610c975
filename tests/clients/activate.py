"""Starts a program the way systemd's socket activation does: opens the listening sockets named
on the command line, passes them from descriptor 3 on (LISTEN_FDS, LISTEN_FDNAMES) and execs the
program with LISTEN_PID set to its own pid, which exec keeps.

    activate.py [--names A:B] SOCKET... -- PROGRAM ARG...

A SOCKET is tcp:HOST:PORT or unix:PATH; port 0 picks a free port.
"""

import os
import socket
import sys


def listen(spec):
    kind, _, where = spec.partition(":")
    if kind == "tcp":
        host, _, port = where.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    elif kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where)
    else:
        raise SystemExit(f"unknown socket {spec!r}")
    sock.listen(128)
    return sock


def main(argv):
    names = None
    if argv[:1] == ["--names"]:
        names, argv = argv[1], argv[2:]
    split = argv.index("--")
    specs, program = argv[:split], argv[split + 1:]
    sockets = [listen(spec) for spec in specs]
    for fd, sock in enumerate(sockets, start=3):
        if sock.fileno() != fd:
            os.dup2(sock.fileno(), fd)
        os.set_inheritable(fd, True)
    os.environ["LISTEN_FDS"] = str(len(sockets))
    os.environ["LISTEN_PID"] = str(os.getpid())
    if names is not None:
        os.environ["LISTEN_FDNAMES"] = names
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
