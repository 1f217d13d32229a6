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
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Unicode, default

from .errors import BackendError, LaunchError
from .hookspecs import Handle, Resources, hookimpl
from .options import BackendOptions, env_default, inherited_server_env
from .processes import file_tail, process_status, signal_group, start_process, stop_process_group
from .rollback import Rollback

#: Processes this server started, so poll can reap them; adopted kernels are probed by pid instead.
_children: dict[int, subprocess.Popen[bytes]] = {}
_CONNECTION_DIR_PREFIX = "gp-kernel-connection-"
#: A file in a connection directory naming the kernel's pid: ``kernel-pid-<pid>``.
_OWNER_PREFIX = "kernel-pid-"
#: Seconds a connection directory without an owner is left alone (its launch may be under way).
_UNOWNED_GRACE = 300.0
#: Whether this process swept the connection directories dead servers left.
_swept = False


class LocalOptions(BackendOptions):
    """Options of the ``local`` backend (server config: ``c.LocalOptions.<name>``)."""

    request_variables = {"KERNEL_WORKING_DIR": "The kernel's working directory (else the server's)."}

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
    # ipykernel exits once this process is gone (its parent poller), so a local kernel dies with its
    # server, as jupyter's own local kernels do; remote backends' kernels outlive a server on purpose.
    process_env["JPY_PARENT_PID"] = str(os.getpid())
    cwd = env.get("KERNEL_WORKING_DIR") or None
    return {
        "argv": cmd,
        "env": process_env,
        "cwd": cwd,
        "log_path": str(Path(options.log_dir) / f"gp-kernel-{kernel_id}.log"),
        "ip": options.kernel_ip,
    }


def _start(resources: Resources) -> subprocess.Popen[bytes]:
    process = start_process(resources["argv"], resources["env"], resources["log_path"], resources["cwd"])
    connection_dir = resources["env"].get("GP_CONNECTION_DIR")
    if connection_dir:
        with contextlib.suppress(OSError):  # whose it is, for the sweep of a dead server's leftovers
            Path(connection_dir, f"{_OWNER_PREFIX}{process.pid}").touch()
    return process


def _kill(log_path: str, process: subprocess.Popen[bytes]) -> None:
    """Undo a start whose launch did not complete (cancelled, timed out): no handle will ever stop it."""
    with contextlib.suppress(BackendError):
        signal_group(process.pid, signal.SIGKILL)
    process.wait()
    with contextlib.suppress(OSError):
        os.unlink(log_path)


@hookimpl
async def launch(resources: Resources, rollback: Rollback) -> Handle:
    global _swept
    # The launcher's connection directory (it holds the kernel's key) lives in one of ours, removed by
    # terminate: a kernel killed by a signal never runs the launcher's own clean-up. What a dead server's
    # kernels left (they exit with their server, and no terminate comes) the next server's first launch
    # removes.
    if not _swept:
        _swept = True
        await asyncio.to_thread(_sweep_connection_dirs)
    connection_dir = await rollback.create_in_thread(
        functools.partial(tempfile.mkdtemp, prefix=_CONNECTION_DIR_PREFIX),
        _remove_connection_dir,
        what="kernel connection directory",
    )
    resources = {**resources, "env": {**resources["env"], "GP_CONNECTION_DIR": connection_dir}}
    process = await rollback.create_in_thread(
        functools.partial(_start, resources),
        functools.partial(_kill, resources["log_path"]),
        what=f"kernel process ({resources['argv'][0]})",
    )
    _children[process.pid] = process
    return {
        "pid": process.pid,
        "pgid": process.pid,
        "log_path": resources["log_path"],
        "ip": resources["ip"],
        "connection_dir": connection_dir,
    }


def _sweep_connection_dirs() -> None:
    """Remove our connection directories in the temp directory whose kernel is gone (blocking)."""
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob(f"{_CONNECTION_DIR_PREFIX}*"):
        try:
            info = path.lstat()
            owners = [entry.name for entry in path.iterdir() if entry.name.startswith(_OWNER_PREFIX)]
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        pids = [int(name[len(_OWNER_PREFIX) :]) for name in owners if name[len(_OWNER_PREFIX) :].isdigit()]
        if pids:
            alive = any(_runs_with(pid, str(path)) for pid in pids)
        else:  # its launch is under way, or its server died before the kernel started
            alive = now - info.st_mtime < _UNOWNED_GRACE
        if not alive:
            _remove_connection_dir(str(path))


def _runs_with(pid: int, connection_dir: str) -> bool:
    """Whether ``pid`` runs, and (where /proc tells) is the kernel given ``connection_dir``."""
    if process_status(pid) is not None:
        return False
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited, not yet reaped
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, IndexError):
        return True  # cannot tell: keep it
    return f"GP_CONNECTION_DIR={connection_dir}".encode() in environ.split(b"\0")


def _remove_connection_dir(path: str | None) -> None:
    if path and os.path.basename(path).startswith(_CONNECTION_DIR_PREFIX):  # never anything else
        shutil.rmtree(path, ignore_errors=True)


def _status(handle: Handle) -> int | None:
    pid = int(handle["pid"])
    return process_status(pid, _children.get(pid))


@hookimpl
def poll(handle: Handle, launching: bool) -> int | None:
    status = _status(handle)
    if status is not None and launching:
        raise LaunchError(
            f"Kernel process {handle['pid']} exited with status {status} during start-up. "
            f"Last lines of its log:\n{file_tail(handle['log_path'])}"
        )
    return status


@hookimpl
async def terminate(handle: Handle, options: LocalOptions, force: bool, log: logging.Logger) -> None:
    pid, pgid = int(handle["pid"]), int(handle["pgid"])
    gone = await stop_process_group(
        pid, pgid, force=force, stop_timeout=options.stop_timeout, process=_children.get(pid)
    )
    if not gone:
        log.warning("Kernel process %d survived SIGKILL", pid)
    _children.pop(pid, None)
    with contextlib.suppress(OSError):
        os.unlink(handle["log_path"])
    await asyncio.to_thread(_remove_connection_dir, handle.get("connection_dir"))


@hookimpl
def send_signal(handle: Handle, signum: int) -> bool:
    """The launcher did not answer on its communication port: signal the kernel's process group, the
    session launch started (never the server's own group, nor 0 or 1: see gp_core.signal_group)."""
    if _status(handle) is not None:
        return False  # gone: nothing to deliver to
    return signal_group(int(handle["pgid"]), signum)


@hookimpl
def install_spec(kernel_spec: dict[str, Any]) -> dict[str, Any]:
    return kernel_spec  # core's default spec (the launcher copied into the spec dir) runs locally as is
