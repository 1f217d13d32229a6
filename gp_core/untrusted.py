"""Checks for text that comes from requests or the network: names are checked whole, with ``fullmatch``.

A ``^...$`` pattern used with ``re.match`` accepts a trailing newline (``$`` matches before one), which
turned ``"KERNEL_X\\n"`` into a shell command in gp-ssh's launch script; the repository's tests refuse any
validator regex ending in ``$``.
"""

from __future__ import annotations

import re

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_env_name(name: object) -> bool:
    """True for a POSIX shell variable name: ASCII letters, digits and ``_``, not starting with a digit."""
    return isinstance(name, str) and _ENV_NAME.fullmatch(name) is not None


__all__ = ["is_env_name"]
