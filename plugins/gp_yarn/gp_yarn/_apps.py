"""The life cycle of a kernel that is a YARN application.

- ``launch`` starts the kernelspec's ``run.sh`` (-> ``spark-submit --master yarn --deploy-mode cluster``)
  as a local process, no shell involved, and returns at once.
- ``poll`` finds the application by its exact name (the kernel id) among applications started after the
  launch began, adds its id (and the AM's address) to the handle, and reads its state: every kernel of one
  ResourceManager is served from ONE listing of the RM's live applications per ``status_interval``
  (a :class:`gp_core.StatusSource`). A final state during start-up fails the launch with the application's
  diagnostics; a spark-submit that exits non-zero before an application exists fails it with its output.
  An RM outage raises (core: "status unknown", never dead).
- ``terminate`` kills the application through the RM REST API and waits for a final state, stops the
  local spark-submit if it still runs, and removes its files and the application's staging directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import logging
import os
import shutil
import signal
import subprocess
import time
from typing import Any

from gp_core import (
    BackendError,
    Handle,
    LaunchError,
    Resources,
    Rollback,
    StatusSource,
    file_tail,
    process_status,
    signal_group,
    start_process,
    stop_process_group,
)

from ._options import YarnOptions
from ._rm import ALIVE_STATES, FINAL_STATES, ResourceManagerClient, configured_endpoints
from ._submit import am_environment, process_env, properties_text, submit_options, write_private

#: How long before the launch's wall-clock start an application may have started and still be the
#: kernel's (clock skew between the server and the RM; a previous application of the same kernel id is
#: excluded by id, see ``_ended``).
CLOCK_SKEW_MS = 5_000
#: After spark-submit exited 0, how long (s) the live listing may miss the application before one
#: listing of every application since the launch looks for it (it may have ended before any poll saw it).
MISSING_GRACE = 3.0
KILL_POLL_INTERVAL = 0.5

#: spark-submit processes this server started (to reap them); adopted kernels are probed by pid.
_children: dict[int, subprocess.Popen[bytes]] = {}
#: Application ids whose kernel ended (terminated here): a restart's new launch never takes them.
_ended: dict[str, set[str]] = {}
#: When this process first saw an application id (monotonic): listings from before say nothing of it.
_learned: dict[str, float] = {}
#: Last "look for a vanished application" query per kernel (monotonic), to rate-limit it.
_searched: dict[str, float] = {}
#: When this process saw a kernel's spark-submit exit (monotonic).
_exited_at: dict[str, float] = {}


class _Rm:
    """One ResourceManager (endpoint set) of this server: its client and its shared application listing."""

    def __init__(self, options: YarnOptions) -> None:
        self.client = ResourceManagerClient(
            configured_endpoints(options),
            verify=options.verify(),
            kerberos=options.yarn_endpoint_security_enabled,
            timeout=options.request_timeout,
        )
        self.source: StatusSource[dict[str, Any]] = StatusSource(
            f"YARN applications ({', '.join(self.client.endpoints)})",
            self._list,
            max_age=options.status_interval,
        )

    def _list(self) -> dict[str, dict[str, Any]]:
        return {app["id"]: app for app in self.client.alive_applications()}


_rms: dict[tuple[Any, ...], _Rm] = {}


def rm_for(options: YarnOptions) -> _Rm:
    key = (
        tuple(configured_endpoints(options)),
        str(options.verify()),
        options.yarn_endpoint_security_enabled,
        options.request_timeout,
        options.status_interval,
    )
    rm = _rms.get(key)
    if rm is None:
        rm = _rms[key] = _Rm(options)
    return rm


# ---------------------------------------------------------------------------------------------- render


def render(
    kernel_id: str, cmd: list[str], env: dict[str, str], request_env: dict[str, str], options: YarnOptions
) -> Resources:
    configured_endpoints(options)  # a backend without any RM is refused before anything starts
    if not cmd:
        raise BackendError("The kernelspec's argv is empty: it must start with its bin/run.sh")
    base = os.path.join(options.kernel_log_dir, f"gp-yarn-{kernel_id}")
    spark_opts = submit_options(kernel_id, env, options, base + ".properties")
    return {
        "argv": [cmd[0], *spark_opts, "--", *cmd[1:]],
        "env": process_env(env, request_env),
        "am_env": am_environment(env),
        "log_path": base + ".log",
        "properties_path": base + ".properties",
    }


# ---------------------------------------------------------------------------------------------- launch


def _start(resources: Resources) -> subprocess.Popen[bytes]:
    write_private(resources["properties_path"], properties_text(resources["am_env"]))
    try:
        return start_process(resources["argv"], resources["env"], resources["log_path"])
    except BaseException:
        _remove_files(resources["properties_path"], resources["log_path"])
        raise


def _remove_files(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _undo_start(
    resources: Resources, kernel_id: str, started_ms: int, rm: _Rm, process: subprocess.Popen[bytes]
) -> None:
    """The launch did not complete (cancelled, timed out): no handle will ever stop what it started."""
    with contextlib.suppress(BackendError):
        signal_group(process.pid, signal.SIGKILL)
    process.wait()
    _children.pop(process.pid, None)
    try:  # spark-submit may have got as far as submitting the application
        for app in rm.client.applications_since(started_ms - CLOCK_SKEW_MS):
            if app.get("name") == kernel_id and app.get("state") in ALIVE_STATES:
                rm.client.kill(app["id"])
    except BackendError as exc:
        logging.getLogger("gp_yarn").warning(
            "Could not look for kernel %s's YARN application: %s", kernel_id, exc
        )
    _remove_files(resources["properties_path"], resources["log_path"])


async def launch(kernel_id: str, resources: Resources, options: YarnOptions, rollback: Rollback) -> Handle:
    rm = rm_for(options)
    started_ms = int(time.time() * 1000)
    process = await rollback.create_in_thread(
        functools.partial(_start, resources),
        functools.partial(_undo_start, resources, kernel_id, started_ms, rm),
        what=f"spark-submit of kernel {kernel_id}",
    )
    _children[process.pid] = process
    return {
        "kernel_id": kernel_id,
        "started_ms": started_ms,
        "submit_pid": process.pid,
        "submit_log": resources["log_path"],
        "properties_path": resources["properties_path"],
        "endpoints": rm.client.endpoints,
    }


# ---------------------------------------------------------------------------------------------- poll


def _is_submitter(pid: int, kernel_id: str) -> bool:
    """Whether ``pid`` is still the kernel's spark-submit (an adopted kernel's pid may have been reused)."""
    if pid in _children:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return kernel_id.encode() in cmdline.read().split(b"\0")
    except OSError:
        return False


def _submitter_status(handle: Handle) -> int | None:
    pid = int(handle["submit_pid"])
    child = _children.get(pid)
    status = process_status(pid, child) if child is not None or _is_submitter(pid, handle["kernel_id"]) else 0
    if status is not None:
        _children.pop(pid, None)
        # spark-submit has long read its properties file (which holds the launch token): drop it.
        _remove_files(handle["properties_path"])
        _exited_at.setdefault(handle["kernel_id"], time.monotonic())
    return status


def _pick(apps: Any, handle: Handle) -> dict[str, Any] | None:
    """The kernel's application among ``apps``: exact name, started after the launch, not a previous one."""
    kernel_id = handle["kernel_id"]
    previous = _ended.get(kernel_id, set())
    earliest = int(handle["started_ms"]) - CLOCK_SKEW_MS
    mine = [
        app
        for app in apps
        if app.get("name") == kernel_id
        and app["id"] not in previous
        and int(app.get("startedTime") or 0) >= earliest
    ]
    # The newest (application ids grow with submission order within one RM).
    return max(mine, key=lambda app: (int(app.get("startedTime") or 0), app["id"])) if mine else None


async def _adopt_app(handle: Handle, app: dict[str, Any], log: logging.Logger) -> None:
    app_id = app["id"]
    handle["app_id"] = app_id
    _learned.setdefault(app_id, time.monotonic())
    log.info("Kernel %s is YARN application %s (%s)", handle["kernel_id"], app_id, app.get("state"))


async def _note_am_host(handle: Handle, app: dict[str, Any]) -> None:
    """The AM's host (where the kernel runs) from ``amHostHttpAddress``, as the address core connects to.

    Known once the AM's container is allocated; a Spark AM turns RUNNING only when its SparkContext is up,
    which a lazily initialised kernel reports before."""
    if handle.get("ip"):
        return
    address = str(app.get("amHostHttpAddress") or "")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if not host:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=0, type=1)
    except OSError:
        return
    addresses = [str(info[4][0]) for info in infos]
    handle["ip"] = next((a for a in addresses if ":" not in a), addresses[0]) if addresses else host
    handle["am_host"] = host


def _describe(app: dict[str, Any]) -> str:
    diagnostics = str(app.get("diagnostics") or "").strip() or "(no diagnostics)"
    return (
        f"YARN application {app['id']} is {app.get('state')} (final status {app.get('finalStatus')}) "
        f"in queue {app.get('queue')!r}: {diagnostics}"
    )


async def poll(handle: Handle, options: YarnOptions, launching: bool, log: logging.Logger) -> int | None:
    rm = rm_for(options)
    kernel_id = handle["kernel_id"]
    app_id = handle.get("app_id")
    if app_id is None:
        submitted = _submitter_status(handle)
        entries = await rm.source.entries()
        app = _pick(entries.values(), handle)
        if app is None and (submitted is not None or not launching):
            app = await _search(rm, handle, force=not launching)
        if app is None:
            if submitted not in (None, 0):
                message = (
                    f"spark-submit of kernel {kernel_id} exited with status {submitted} before a YARN "
                    f"application was running. Last lines of its output:\n{file_tail(handle['submit_log'])}"
                )
                if launching:
                    raise LaunchError(message)
                log.warning("%s", message)
                return submitted
            return None if launching else 0
        await _adopt_app(handle, app, log)
        app_id = app["id"]
        if app.get("state") not in ALIVE_STATES:
            return _ended_status(handle, app, launching)
    else:
        _submitter_status(handle)
    app = await rm.source.get(app_id, not_before=_learned.setdefault(app_id, time.monotonic()))
    if app is not None:
        await _note_am_host(handle, app)
        return None
    # Not among the live applications: it ended (or the RM forgot it). Ask for it once.
    app = await asyncio.to_thread(rm.client.application, app_id)
    if app is None:
        message = f"YARN application {app_id} of kernel {kernel_id} is unknown to the ResourceManager"
        if launching:
            raise LaunchError(message)
        return 0
    if app.get("state") in ALIVE_STATES:  # started between the listing and now
        rm.source.invalidate()
        return None
    return _ended_status(handle, app, launching)


def _ended_status(handle: Handle, app: dict[str, Any], launching: bool) -> int:
    if launching:
        tail = file_tail(handle["submit_log"], lines=15)
        raise LaunchError(f"{_describe(app)}\nLast lines of spark-submit's output:\n{tail}")
    return 0 if app.get("finalStatus") == "SUCCEEDED" else 1


async def _search(rm: _Rm, handle: Handle, force: bool) -> dict[str, Any] | None:
    """One listing of every application since the launch (any state), for an application that may have
    ended before the live listing ever showed it. Rate-limited per kernel."""
    kernel_id = handle["kernel_id"]
    now = time.monotonic()
    exited = _exited_at.get(kernel_id, now)
    if not force and (now - exited < MISSING_GRACE or now - _searched.get(kernel_id, 0.0) < MISSING_GRACE):
        return None
    _searched[kernel_id] = now
    apps = await asyncio.to_thread(rm.client.applications_since, int(handle["started_ms"]) - CLOCK_SKEW_MS)
    return _pick(apps, handle)


# ---------------------------------------------------------------------------------------------- signals


async def signal_kernel(handle: Handle, options: YarnOptions, signum: int, log: logging.Logger) -> bool:
    """Without the launcher's comm port, only SIGKILL can still reach a YARN kernel: as a kill."""
    if signum == signal.SIGKILL and handle.get("app_id"):
        await asyncio.to_thread(rm_for(options).client.kill, handle["app_id"])
        return True
    return False


# ---------------------------------------------------------------------------------------------- terminate


async def _wait_final(rm: _Rm, app_id: str, seconds: float) -> dict[str, Any] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        app = await asyncio.to_thread(rm.client.application, app_id)
        if app is None or app.get("state") in FINAL_STATES or loop.time() >= deadline:
            return app
        await asyncio.sleep(KILL_POLL_INTERVAL)


def _remove_staging(options: YarnOptions, app_id: str, log: logging.Logger) -> None:
    base = options.local_staging_dir()
    if not base:
        return
    for path in glob.glob(
        os.path.join(glob.escape(base), "*", ".sparkStaging", glob.escape(app_id))
    ) + glob.glob(os.path.join(glob.escape(base), ".sparkStaging", glob.escape(app_id))):
        log.debug("Removing the staging directory %s", path)
        shutil.rmtree(path, ignore_errors=True)


async def terminate(
    handle: Handle, options: YarnOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    rm = rm_for(options)
    kernel_id = handle["kernel_id"]
    problems: list[str] = []
    app_id = handle.get("app_id")
    if app_id is None:  # the launch failed or was stopped before a poll found the application
        try:
            app = await _search(rm, handle, force=True)
        except BackendError as exc:
            app = None
            problems.append(f"could not look for its YARN application: {exc}")
        if app is not None:
            app_id = handle["app_id"] = app["id"]
    if app_id is not None:
        try:
            app = await asyncio.to_thread(rm.client.application, app_id)
            if app is not None and app.get("state") not in FINAL_STATES:
                await asyncio.to_thread(rm.client.kill, app_id)
                app = await _wait_final(rm, app_id, options.shutdown_wait_time)
            if app is not None and app.get("state") not in FINAL_STATES:
                problems.append(
                    f"YARN application {app_id} is still {app.get('state')} {options.shutdown_wait_time:g} s "
                    "after the kill request"
                )
            else:
                _ended.setdefault(kernel_id, set()).add(app_id)
                rm.source.invalidate()
                await asyncio.to_thread(_remove_staging, options, app_id, log)
        except BackendError as exc:
            problems.append(f"could not kill YARN application {app_id}: {exc}")
    # The local spark-submit (done long ago with waitAppCompletion=false, unless the launch failed early).
    pid = int(handle["submit_pid"])
    if _submitter_status(handle) is None:
        await stop_process_group(pid, pid, force=True, stop_timeout=2.0, process=_children.get(pid))
    _children.pop(pid, None)
    _exited_at.pop(kernel_id, None)
    _remove_files(handle["properties_path"])
    if not problems:
        _remove_files(handle["submit_log"])
        _searched.pop(kernel_id, None)
    if problems:
        raise BackendError(f"Kernel {kernel_id}: {'; '.join(problems)} (log: {handle['submit_log']})")
