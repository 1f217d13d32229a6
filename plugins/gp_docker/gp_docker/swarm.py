"""The ``docker-swarm`` backend: each kernel is a Docker Swarm service with one task, never restarted.

The kernel's status is its task's. A task in an error state (failed, rejected, shutdown, complete, ...)
fails a launch at once with the swarm's error message; terminate removes the service and waits until
its task and container are gone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from gp_core import Handle, LaunchError, Resources, Rollback, hookimpl

from . import _client, _kernelspec
from ._kernelspec import docker_kernel_spec
from ._options import DockerSwarmOptions
from ._spec import render

ALIVE_STATES = _client.TASK_ACTIVE_STATES
#: Services whose scheduling problem was already logged (a pending task's error repeats every poll).
_reported_pending: set[str] = set()


@hookimpl
def declare_options() -> type[DockerSwarmOptions]:
    return DockerSwarmOptions


@hookimpl
def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    options: DockerSwarmOptions,
    log: logging.Logger,
) -> Resources:
    return render("service", kernel_id, cmd, env, request_env, options, log)


@hookimpl
async def launch(resources: Resources, rollback: Rollback, log: logging.Logger) -> Handle:
    def undo(handle: Handle) -> None:
        _client.remove_service(handle, graceful=False, stop_timeout=0, log=log)

    handle = await rollback.create_in_thread(
        partial(_client.create_service, resources, log), undo, what=f"service {resources['name']}"
    )
    log.debug("Kernel service %s (%s) created", handle["name"], handle["service_id"][:12])
    return handle


@hookimpl
async def poll(
    handle: Handle, options: DockerSwarmOptions, launching: bool, log: logging.Logger
) -> int | None:
    service_id = handle["service_id"]
    task = await _client.TASKS.get(
        service_id,
        max_age=options.status_interval * 0.9 if launching else None,  # see gp_docker.container.poll
        not_before=_client.created_at.get(service_id, float("-inf")),
    )
    if task is None:
        # No task yet (the swarm creates it just after the service), or the service is gone.
        if await asyncio.to_thread(_client.service_exists, handle):
            return None
        if launching:
            raise LaunchError(f"Kernel service {handle['name']} disappeared during start-up")
        return 0
    exited = _client.EVENTS.exit_code(task.container_id)
    if task.state in ALIVE_STATES and exited is not None:
        # Its container died; the swarm will say so a moment later.
        task = replace(task, state="complete" if exited == 0 else "failed", exit_code=exited)
    if task.state in ALIVE_STATES:
        if task.error and task.state == "pending" and service_id not in _reported_pending:
            _reported_pending.add(service_id)
            log.warning("Kernel service %s cannot be scheduled yet: %s", handle["name"], task.error)
        return None
    if launching:
        raise LaunchError(await asyncio.to_thread(_client.service_failure, handle, task))
    return task.exit_code or 0


@hookimpl
async def send_signal(handle: Handle, signum: int) -> bool:
    """The launcher's communication port did not answer: signal the task's container, if it is local."""
    return await asyncio.to_thread(_client.signal_service, handle, signum)


@hookimpl
async def terminate(handle: Handle, options: DockerSwarmOptions, force: bool, log: logging.Logger) -> None:
    _reported_pending.discard(handle["service_id"])
    await asyncio.to_thread(
        _client.remove_service, handle, graceful=not force, stop_timeout=options.stop_timeout, log=log
    )


@hookimpl
def tunnel_route(handle: Handle, options: DockerSwarmOptions) -> Any:
    return _kernelspec.tunnel_route(handle, options)


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    return docker_kernel_spec(app, kernel_spec, spec_dir, log)
