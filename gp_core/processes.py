"""Helpers for backends that run a process on the server's host: the ``local`` backend's kernels, a YARN
backend's local ``spark-submit``. Public: re-exported from :mod:`gp_core`.

The blocking ones (``start_process``) run in a worker thread; ``stop_process_group`` is async.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import BackendError

LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000


def log_tail(raw: bytes | str, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of a log, decoded, for an error message."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    tail = "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]
    return tail or "(the log is empty)"


def file_tail(path: str | os.PathLike[str], lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """:func:`log_tail` of a file's end (reads at most ``4 * chars`` bytes); ``(no log)`` if unreadable."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 4 * chars))
            return log_tail(log_file.read(), lines, chars)
    except OSError:
        return "(no log)"


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: str | os.PathLike[str],
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (process group), stdout and stderr appended to ``log_path``.

    No shell is involved: request data in ``argv``/``env`` stays data. Blocking (fork/exec and file I/O):
    run it in a worker thread. :raises BackendError: When the program cannot be started.
    """
    with open(log_path, "ab") as log_file:
        try:
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stopping it reaches the children too
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                Path(log_path).unlink()
            raise BackendError(f"Could not start {argv[0]!r}: {exc}") from exc


def process_status(pid: int, process: subprocess.Popen[bytes] | None = None) -> int | None:
    """``None`` while ``pid`` runs, else its exit status (``0`` when it is not our child and is gone).

    Pass the ``Popen`` of a process this server started, so it is reaped; an adopted one is probed by pid.
    """
    if process is not None:
        return process.poll()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        return None  # exists, owned by someone else
    return None


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; ``False`` when it is gone. Never the server's own group
    (nor pgid 0 or 1, which ``killpg`` reads as "my group" / init)."""
    if pgid <= 1 or pgid == os.getpgid(0):
        raise BackendError(f"Refusing to signal process group {pgid}: it is not a kernel's")
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


async def stop_process_group(
    pid: int,
    pgid: int,
    *,
    force: bool,
    stop_timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    poll_every: float = 0.02,
) -> bool:
    """Stop a process group: SIGTERM, then SIGKILL after ``stop_timeout`` s (at once when ``force``).

    Returns ``True`` once ``pid`` is gone; leftovers of the group get a final SIGKILL either way.
    """
    loop = asyncio.get_running_loop()

    async def gone_within(seconds: float) -> bool:
        deadline = loop.time() + seconds
        while process_status(pid, process) is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_every)
        return True

    signal_group(pgid, signal.SIGKILL if force else signal.SIGTERM)
    gone = await gone_within(0 if force else stop_timeout)
    if not gone:
        signal_group(pgid, signal.SIGKILL)
        gone = await gone_within(max(stop_timeout, 1.0))
    signal_group(pgid, signal.SIGKILL)  # whatever else the process left in its group
    return gone


__all__ = [
    "file_tail",
    "log_tail",
    "process_status",
    "signal_group",
    "start_process",
    "stop_process_group",
]
