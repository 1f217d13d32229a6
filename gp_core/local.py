"""The built-in ``local`` backend: the launcher runs as a local process, through the full gp protocol.

It is the embedded default (no cluster needed) and the reference example for plugin authors: it registers
like any other backend (entry point ``local = "gp_core.local"`` in group ``gp_core.backends``) and
implements the hooks with nothing but the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Unicode, default

from .errors import BackendError, LaunchError
from .hookspecs import Handle, Resources, hookimpl
from .options import BackendOptions, env_default, inherited_server_env

#: Processes this server started, so poll can reap them; adopted kernels are probed by pid instead.
_children: dict[int, subprocess.Popen[bytes]] = {}
_LOG_TAIL_BYTES = 4000


class LocalOptions(BackendOptions):
    """Options of the ``local`` backend (server config: ``c.LocalOptions.<name>``)."""

    kernel_ip = Unicode(config=True, help="Address the kernel binds (env GP_LOCAL_KERNEL_IP).")
    log_dir = Unicode(config=True, help="Where kernel logs go while the kernel runs (env GP_KERNEL_LOG_DIR).")
    inherit_server_env = Bool(
        True,
        config=True,
        help="Start the kernel with the server's environment under its own, like jupyter; the server's "
        "GP_* variables (gp configuration, possibly secrets) are never inherited.",
    )
    stop_timeout = Float(5.0, config=True, help="Seconds between SIGTERM and SIGKILL on terminate.")

    _kernel_ip_default = default("kernel_ip")(env_default("GP_LOCAL_KERNEL_IP", "127.0.0.1"))
    _log_dir_default = default("log_dir")(env_default("GP_KERNEL_LOG_DIR", tempfile.gettempdir))


@hookimpl
def declare_options() -> type[BackendOptions]:
    return LocalOptions


@hookimpl
def render_resources(kernel_id: str, cmd: list[str], env: dict[str, str], options: LocalOptions) -> Resources:
    process_env = {**inherited_server_env(), **env} if options.inherit_server_env else dict(env)
    process_env["GP_KERNEL_IP"] = options.kernel_ip
    cwd = env.get("KERNEL_WORKING_DIR") or None
    return {
        "argv": cmd,
        "env": process_env,
        "cwd": cwd,
        "log_path": str(Path(options.log_dir) / f"gp-kernel-{kernel_id}.log"),
        "ip": options.kernel_ip,
    }


def _start_process(resources: Resources) -> subprocess.Popen[bytes]:
    """Open the log and start the launcher (blocking: fork/exec and file I/O; run in a thread)."""
    log_path = resources["log_path"]
    with open(log_path, "ab") as log_file:
        try:
            return subprocess.Popen(
                resources["argv"],
                env=resources["env"],
                cwd=resources["cwd"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: terminate reaches the kernel's children too
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(log_path)
            raise BackendError(
                f"Could not start the kernel launcher {resources['argv'][0]!r}: {exc}"
            ) from exc


def _kill_orphan(log_path: str, starting: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A launch was cancelled while its process started: no handle exists, so nothing would stop it."""
    if starting.cancelled() or starting.exception() is not None:
        return
    _signal_group(starting.result().pid, signal.SIGKILL)  # subprocess reaps it once the Popen is dropped
    with contextlib.suppress(OSError):
        os.unlink(log_path)


@hookimpl
async def launch(resources: Resources) -> Handle:
    starting = asyncio.ensure_future(asyncio.to_thread(_start_process, resources))
    try:
        process = await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(functools.partial(_kill_orphan, resources["log_path"]))
        raise
    _children[process.pid] = process
    return {"pid": process.pid, "pgid": process.pid, "log_path": resources["log_path"], "ip": resources["ip"]}


def _status(handle: Handle) -> int | None:
    pid = int(handle["pid"])
    process = _children.get(pid)
    if process is not None:
        return process.poll()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        return None  # exists, owned by someone else
    return None


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - _LOG_TAIL_BYTES))
            return log_file.read().decode(errors="replace").strip()
    except OSError:
        return "(no log)"


@hookimpl
def poll(handle: Handle, launching: bool) -> int | None:
    status = _status(handle)
    if status is not None and launching:
        raise LaunchError(
            f"Kernel process {handle['pid']} exited with status {status} during start-up. "
            f"Last lines of its log:\n{_log_tail(handle['log_path'])}"
        )
    return status


@hookimpl
async def terminate(handle: Handle, options: LocalOptions, force: bool, log: logging.Logger) -> None:
    pid, pgid = int(handle["pid"]), int(handle["pgid"])
    if pgid == os.getpgid(0):
        raise BackendError(f"Refusing to signal process group {pgid}: it is the server's own")
    _signal_group(pgid, signal.SIGKILL if force else signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (0 if force else options.stop_timeout)
    while _status(handle) is None and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if _status(handle) is None:
        log.debug("Kernel process %d ignored SIGTERM; killing its group", pid)
        _signal_group(pgid, signal.SIGKILL)
        deadline = loop.time() + options.stop_timeout
        while _status(handle) is None and loop.time() < deadline:
            await asyncio.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)  # leftovers the kernel spawned in its group
    _children.pop(pid, None)
    with contextlib.suppress(OSError):
        os.unlink(handle["log_path"])


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@hookimpl
def install_spec(kernel_spec: dict[str, Any]) -> dict[str, Any]:
    return kernel_spec  # core's default spec (the launcher copied into the spec dir) runs locally as is
