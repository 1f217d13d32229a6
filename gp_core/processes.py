"""Helpers for backends that run a process on the server's host: the ``local`` backend's kernels, a YARN
backend's local ``spark-submit``. Public: re-exported from :mod:`gp_core`.

The blocking ones (``start_process``) run in a worker thread; ``stop_process_group`` is async.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
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


_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_private_log(path: str | os.PathLike[str]) -> int:
    """Open a log for appending: created exclusively with mode 0600, never through a link (a log directory
    is often the shared temp directory). A file already there is appended to only when it is a plain file
    of ours with no other name (an earlier start's log); anything else at the path is replaced.
    Returns the file descriptor. :raises OSError: When the file cannot be created.
    """
    for _ in range(2):
        try:
            return os.open(path, _LOG_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, _LOG_FLAGS | getattr(os, "O_NONBLOCK", 0))
        except OSError:  # a symlink (ELOOP), ...: not a log of ours
            fd = -1
        if fd >= 0:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_nlink == 1:
                os.set_blocking(fd, True)
                os.fchmod(fd, 0o600)
                return fd
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    raise FileExistsError(errno.EEXIST, "something keeps replacing it", str(path))


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: str | os.PathLike[str],
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (process group), stdout and stderr appended to ``log_path``
    (opened with :func:`open_private_log`: mode 0600, exclusively, no link followed).

    No shell is involved: request data in ``argv``/``env`` stays data. Blocking (fork/exec and file I/O):
    run it in a worker thread. :raises BackendError: When the log or the program cannot be created.
    """
    try:
        log_fd = open_private_log(log_path)
    except OSError as exc:
        raise BackendError(f"Could not create the log {log_path}: {exc}") from exc
    with open(log_fd, "ab") as log_file:
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
    "open_private_log",
    "process_status",
    "signal_group",
    "start_process",
    "stop_process_group",
]
