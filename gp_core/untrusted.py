"""Handling text that comes from requests or the network: names are checked whole (``fullmatch``), and
what is logged or echoed is escaped and cut (:func:`loggable`).

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


def loggable(text: object, limit: int = 300) -> str:
    """``text`` from untrusted input, fit for one log line or a reply: every character that is not
    printable (C0 and C1 controls, DEL, U+2028/U+2029, bidi overrides, ...) escaped as ``\\xNN`` /
    ``\\uNNNN``, and cut after ``limit`` characters, so it can neither forge log lines nor flood them."""
    text = str(text)
    shown = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text[:limit]
    )
    if len(text) > limit:
        shown += f"... ({len(text) - limit} more characters)"
    return shown


__all__ = ["is_env_name", "loggable"]
