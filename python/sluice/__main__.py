"""`python -m sluice ...` is the `sluice` command this package installed (as `python -m gunicorn`
is gunicorn's)."""

import os
import sys

from ._arbiter import sluice_command
from ._settings import ConfigError


def main():
    try:
        command = sluice_command()
    except ConfigError as e:
        print(f"sluice: error: {e}", file=sys.stderr)
        return 1
    os.execv(command, [command, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
