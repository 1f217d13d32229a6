"""``python -m gp_core``: the same as ``gp run`` (see :mod:`gp_core.run_demo`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
