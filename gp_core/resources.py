"""Resource limits a start request may set (``KERNEL_MEMORY_LIMIT``, ``KERNEL_CPUS_LIMIT``, ...): one
grammar for quantities and one rule for requests, shared by every backend.

The rule (:func:`request_limit`): a request's limit must stay within the configured one. ``0`` means "no
limit" to every container runtime and scheduler, so a requested ``0``, or anything that rounds to ``0`` in
the unit the backend hands its API (``0.0001k`` bytes, ``1e-10`` CPUs), is a request for no limit and is
refused whenever a limit is configured. Quantities are parsed exactly (no floats) into whole units,
rounding down, so what is checked is what the backend passes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from .errors import BackendError

#: Units per CPU of :func:`parse_cpus`' default result: the docker API's nano CPUs.
NANO_CPUS = 10**9
#: Units per CPU for APIs counting in millicores (Kubernetes).
MILLI_CPUS = 10**3
#: The largest memory size accepted (a signed 64-bit count of bytes, what the runtimes take).
MAX_MEMORY_BYTES = 2**63 - 1
#: CPU counts from this many up are refused as nonsense.
MAX_CPUS = 10**6

_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_MEMORY = re.compile(rf"({_NUMBER})[ \t]*([kmgt]?)(?:ib|i|b)?", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_CPUS = re.compile(rf"({_NUMBER}(?:[eE][+-]?[0-9]{{1,3}})?)(m?)", re.ASCII)


def parse_memory(value: str, what: str) -> int:
    """A memory size in whole bytes (rounded down); ``""`` is ``0`` (no limit).

    Grammar: a decimal number, optional blanks, an optional binary unit ``k``/``m``/``g``/``t``
    (case-insensitive; ``m`` = MiB) and an optional ``i``, ``b`` or ``ib``: ``512m``, ``512Mi``,
    ``1.5GiB``, ``1024``.

    :raises ValueError: Naming ``what`` for anything else (negative, exponent, non-ASCII digits, ...).
    """
    text = str(value).strip(" \t")
    if not text:
        return 0
    match = _MEMORY.fullmatch(text)
    if match is None:
        raise ValueError(f"{what}={value!r} is not a memory size like 512m, 2g or 1.5GiB")
    size = int(Decimal(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"{what}={value!r} is not a memory size: it is beyond {MAX_MEMORY_BYTES} bytes")
    return size


def parse_cpus(value: str, what: str, per_cpu: int = NANO_CPUS) -> int:
    """A CPU count in units of ``1/per_cpu`` CPU (rounded down); ``""`` is ``0`` (no limit).

    Grammar: a decimal number with an optional exponent (``1.5``, ``2e-1``) or millicores (``500m``).

    :raises ValueError: Naming ``what`` for anything else, or a count of :data:`MAX_CPUS` or more.
    """
    text = str(value).strip(" \t")
    if not text:
        return 0
    match = _CPUS.fullmatch(text)
    if match is None:
        raise ValueError(f"{what}={value!r} is not a number of CPUs like 1.5 or 500m")
    count = Decimal(match.group(1)) / (1000 if match.group(2) else 1)
    if not count < MAX_CPUS:
        raise ValueError(f"{what}={value!r} is not a number of CPUs below {MAX_CPUS}")
    return int(count * per_cpu)


def request_limit(
    name: str,
    requested: str | None,
    parse: Callable[[str, str], int],
    *,
    configured: int,
    maximum: int = 0,
) -> int:
    """The limit a kernel gets for one resource, in ``parse``'s unit; ``0`` means no limit.

    ``requested`` is the request's text for ``name`` (``None``: the request did not set it), ``configured``
    the kernelspec's limit and ``maximum`` the highest a request may ask (``0``: ``configured`` is the cap).
    When a limit is configured (either is non-zero), a request must ask for more than ``0`` and at most
    the cap: a ``0``, or a value that rounds to ``0``, is a request for no limit and refused.

    :raises BackendError: Naming the variable, its value and what is allowed.
    """
    if requested is None:
        return configured
    try:
        value = parse(requested, name)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    cap = maximum or configured
    if cap and value <= 0:
        raise BackendError(
            f"{name}={requested!r} refused: it amounts to 0, which means no limit, and this kernel has a "
            "limit; ask for a positive amount within it"
        )
    if cap and value > cap:
        raise BackendError(f"{name}={requested!r} refused: this kernel allows at most {describe(parse, cap)}")
    return value


def describe(parse: Callable[[str, str], int], amount: int) -> str:
    """``amount`` in words a person can compare with their request."""
    if parse is parse_memory:
        for unit in ("t", "g", "m", "k"):
            if amount % _MEMORY_UNITS[unit] == 0:
                return f"{amount // _MEMORY_UNITS[unit]}{unit} ({amount} bytes)"
        return f"{amount} bytes"
    if parse is parse_cpus:
        return f"{Decimal(amount) / NANO_CPUS:g} CPUs"
    return str(amount)


__all__ = ["MILLI_CPUS", "NANO_CPUS", "parse_cpus", "parse_memory", "request_limit"]
