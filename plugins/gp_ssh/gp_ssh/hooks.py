"""The ``ssh`` backend's hooks: kernels on remote hosts, started over SSH (registered as ``ssh``).

The work lives in the private modules: placement in ``_placement``, the remote shell scripts in
``_command``, the pooled paramiko connections in ``_connections`` and the lifecycle in ``_remote``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gp_core import BackendOptions, Handle, Resources, Rollback, TunnelRoute, hookimpl

from . import _remote
from ._options import SshOptions


@hookimpl
def declare_options() -> type[BackendOptions]:
    return SshOptions


@hookimpl
def resolve_namespace(kernel_id: str, options: SshOptions, env: dict[str, str], rollback: Rollback) -> str:
    """The host: the request's KERNEL_REMOTE_HOST (one of remote_hosts), else the load balancer's pick."""
    return _remote.place(kernel_id, options, env, rollback)


@hookimpl
def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    options: SshOptions,
    namespace: str | None,
    request_env: dict[str, str],
) -> Resources:
    return _remote.render(kernel_id, cmd, env, options, namespace, request_env)


@hookimpl
async def launch(
    kernel_id: str, resources: Resources, options: SshOptions, rollback: Rollback, log: logging.Logger
) -> Handle:
    return await _remote.launch(kernel_id, resources, options, rollback, log)


@hookimpl
async def poll(handle: Handle, options: SshOptions, launching: bool, log: logging.Logger) -> int | None:
    return await _remote.poll(handle, options, launching, log)


@hookimpl
async def send_signal(handle: Handle, options: SshOptions, signum: int, log: logging.Logger) -> bool:
    """The launcher's communication port did not answer: signal the kernel's process group over SSH."""
    return await _remote.signal(handle, options, signum, log)


@hookimpl
def tunnel_route(handle: Handle, options: SshOptions) -> TunnelRoute:
    """GP_ENABLE_TUNNELING: the kernel's ports through the SSH connection to its host."""
    return _remote.tunnel_route(handle, options)


@hookimpl
async def terminate(
    handle: Handle, options: SshOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    await _remote.stop(handle, options, restart, force, log)


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    from .specapp import add_ssh_settings  # the installer's imports are not needed to run kernels

    return add_ssh_settings(app, kernel_spec)
