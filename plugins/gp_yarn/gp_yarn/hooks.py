"""The ``yarn`` backend's hooks: kernels as Hadoop YARN applications (registered as ``yarn``).

The work lives in the private modules: options in ``_options``, the ResourceManager REST client in ``_rm``,
spark-submit's options and environment in ``_submit``, and the life cycle in ``_apps``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gp_core import BackendOptions, Handle, Resources, Rollback, hookimpl

from . import _apps
from ._options import YarnOptions


@hookimpl
def declare_options() -> type[BackendOptions]:
    return YarnOptions


@hookimpl
def render_resources(
    kernel_id: str, cmd: list[str], env: dict[str, str], request_env: dict[str, str], options: YarnOptions
) -> Resources:
    return _apps.render(kernel_id, cmd, env, request_env, options)


@hookimpl
async def launch(kernel_id: str, resources: Resources, options: YarnOptions, rollback: Rollback) -> Handle:
    return await _apps.launch(kernel_id, resources, options, rollback)


@hookimpl
async def poll(handle: Handle, options: YarnOptions, launching: bool, log: logging.Logger) -> int | None:
    return await _apps.poll(handle, options, launching, log)


@hookimpl
async def send_signal(handle: Handle, options: YarnOptions, signum: int, log: logging.Logger) -> bool:
    """The launcher's communication port did not answer: only a kill still reaches a YARN kernel."""
    return await _apps.signal_kernel(handle, options, signum, log)


@hookimpl
async def terminate(
    handle: Handle, options: YarnOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    await _apps.terminate(handle, options, restart, force, log)


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    from .specapp import add_yarn_settings  # the installer's imports are not needed to run kernels

    return add_yarn_settings(app, kernel_spec, spec_dir)
