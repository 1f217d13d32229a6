"""The ``docker`` backend: each kernel is one Docker container.

Status comes from one labelled container listing shared by every kernel in the process, kept fresh by the
daemon's event stream (``gp_docker._client.CONTAINERS``, a :class:`gp_core.StatusSource`); every docker SDK
call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any

from gp_core import BackendError, Handle, LaunchError, Resources, Rollback, hookimpl

from . import _client, _kernelspec, _pool
from ._kernelspec import docker_kernel_spec
from ._options import DockerOptions
from ._spec import render

#: Container states in which the kernel still runs (or is about to).
ALIVE_STATES = frozenset({"created", "running", "paused", "restarting"})


@hookimpl
def declare_options() -> type[DockerOptions]:
    return DockerOptions


@hookimpl
def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    options: DockerOptions,
    log: logging.Logger,
) -> Resources:
    resources = render("container", kernel_id, cmd, env, request_env, options, log)
    resources["shaped_by_request"] = _pool.shaped_by_request(request_env or {})
    return resources


@hookimpl
async def launch(
    resources: Resources, options: DockerOptions, rollback: Rollback, log: logging.Logger
) -> Handle:
    def undo(handle: Handle) -> None:
        _client.remove_container(handle, graceful=False, stop_timeout=0, keep=False, log=log)

    if options.pool_size:
        shaped = bool(resources.get("shaped_by_request"))
        pool = _pool.pool_for(resources, options.pool_size, create=not shaped)
        parked = pool.take() if pool is not None else None
        if parked is not None:
            try:
                handle = await rollback.create_in_thread(
                    partial(_pool.assign, parked, resources, log), undo, what=f"container {resources['name']}"
                )
            except BackendError as exc:
                log.warning("%s; starting a new container instead", exc)
            else:
                log.debug(
                    "Kernel container %s (%s) taken from the pool", handle["name"], parked.container_id[:12]
                )
                return handle
        elif pool is None and shaped:
            log.debug("The request sets what the container fixes at creation, and no pool has its shape")
        elif pool is None:
            log.debug("pool_size is set, but this kernel's argv does not run gp's launcher: not pooled")
    handle = await rollback.create_in_thread(
        partial(_client.create_container, resources, log), undo, what=f"container {resources['name']}"
    )
    log.debug("Kernel container %s (%s) started", handle["name"], handle["container_id"][:12])
    return handle


@hookimpl
async def poll(handle: Handle, options: DockerOptions, launching: bool, log: logging.Logger) -> int | None:
    container_id = handle["container_id"]
    status = await _client.CONTAINERS.get(
        container_id,
        # While a kernel starts, its container's state may change without an event the stream reports
        # (the source serves from the stream otherwise); 90 %: a poller on the interval's beat must not be
        # served the listing its previous poll started.
        max_age=options.status_interval * 0.9 if launching else None,
        not_before=_client.created_at.get(container_id, float("-inf")),
    )
    # The daemon sends "die" before its listing stops saying "running": a listing fetched right after
    # the event would hide the exit until it ages out, so the event wins.
    died = _client.EVENTS.exit_code(container_id)
    if status is not None and status.state in ALIVE_STATES and died is None:
        return None
    if launching:
        raise LaunchError(await asyncio.to_thread(_client.container_failure, handle))
    if died is not None:
        return died
    if status is None or status.exit_code is None:
        return 0
    return status.exit_code


@hookimpl
async def send_signal(handle: Handle, signum: int) -> bool:
    """The launcher's communication port did not answer: signal the container through the Docker API."""
    return await asyncio.to_thread(_client.signal_container, handle["container_id"], signum)


@hookimpl
async def terminate(handle: Handle, options: DockerOptions, force: bool, log: logging.Logger) -> None:
    await asyncio.to_thread(
        _client.remove_container,
        handle,
        graceful=not force,
        stop_timeout=options.stop_timeout,
        keep=not options.remove_container,
        log=log,
    )


@hookimpl
def tunnel_route(handle: Handle, options: DockerOptions) -> Any:
    return _kernelspec.tunnel_route(handle, options)


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    return docker_kernel_spec(app, kernel_spec, spec_dir, log)
