"""Run an unmodified pulsar script with sluice: `python -m sluice.pulsar manage.py [flags]`.

For this run only, `pulsar` (and `pulsar.apps.wsgi`, `pulsar.api`) resolve to sluice's API, in
this process and in the workers; nothing named pulsar is installed, so other packages of that
name are never shadowed outside it. The script runs as `__main__`, with `sys.argv` as if it had
been started directly.
"""

import os
import sys

from . import _boot

USAGE = "usage: python -m sluice.pulsar SCRIPT [flags...]"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("Runs a pulsar WSGI script (from pulsar.apps import wsgi) with sluice.")
        return 0 if argv else 2
    script = os.path.realpath(argv[0])
    if not os.path.isfile(script):
        print(f"{USAGE}\nerror: {argv[0]}: no such file", file=sys.stderr)
        return 2
    _boot.install_pulsar_alias()
    sys.argv = [argv[0], *argv[1:]]
    sys.path.insert(0, os.path.dirname(script))
    _boot.run_script(script, "__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
