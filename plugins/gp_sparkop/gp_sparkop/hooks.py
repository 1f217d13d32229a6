"""The ``spark-operator`` backend's hooks: each kernel is a SparkApplication that the Spark Operator
submits; the kernel lives in its driver pod (registered as ``spark-operator``).

Namespaces, template rendering, the driver pod's status and its removal are gp-k8s's, through its public
API; the SparkApplication calls and status live in ``_apps``, its rendering in ``_render``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

import gp_k8s

from gp_core import BackendOptions, Handle, LaunchError, Resources, Rollback, hookimpl, log_tail

from . import _apps, _render
from ._options import SparkOperatorOptions

#: Application states that end a kernel (the operator's).
FAILED_STATES = frozenset({"FAILED", "SUBMISSION_FAILED"})
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "SUBMISSION_FAILED"})
#: When this process created each application (``time.monotonic()``), and when it first saw it UNKNOWN.
_created_at: dict[str, float] = {}
_unknown_since: dict[str, float] = {}


@hookimpl
def declare_options() -> type[BackendOptions]:
    return SparkOperatorOptions


@hookimpl
async def resolve_namespace(
    kernel_id: str,
    options: SparkOperatorOptions,
    env: dict[str, str],
    request_env: dict[str, str],
    rollback: Rollback,
    log: logging.Logger,
) -> str:
    return await gp_k8s.resolve_namespace(kernel_id, options, env, request_env, rollback, log)


def _master(options: SparkOperatorOptions) -> str:
    """The apiserver URL the driver reaches from its pod (the kubeconfig's: loopback on a test cluster)."""
    configuration = gp_k8s.api_client(options).configuration
    return str(configuration.host or "")


@hookimpl
async def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    resource_dir: str | None,
    options: SparkOperatorOptions,
    log: logging.Logger,
) -> Resources:
    master = await asyncio.to_thread(_master, options) if options.host_network else ""
    return await asyncio.to_thread(
        _render.render, kernel_id, cmd, env, request_env, options, resource_dir, master, log
    )


def _create(options: SparkOperatorOptions, resources: Resources, log: logging.Logger) -> Handle:
    app = resources["app"]
    namespace = resources["namespace"]
    name = app["metadata"]["name"]
    gp_k8s.track_pod(namespace["name"], resources["pod"])
    created = _apps.create(options, app)
    _created_at[f"{namespace['name']}/{name}"] = time.monotonic()
    return {
        "namespace": namespace["name"],
        "namespace_mode": namespace["mode"],
        "app": name,
        "app_uid": (created.get("metadata") or {}).get("uid", ""),
        "pod": resources["pod"],
        "objects": [],
        "uid": "",
    }


def _remove(
    options: SparkOperatorOptions, handle: Handle, restart: bool, force: bool, log: logging.Logger
) -> None:
    """Delete the SparkApplication, wait until it and its driver pod (and executors) are gone, then what
    gp-k8s created (the automatic namespace unless restarting). Blocking."""
    namespace, name = handle["namespace"], handle["app"]
    if _apps.delete(options, namespace, name):
        log.debug("Deleting SparkApplication %s/%s", namespace, name)
    gp_k8s.wait_gone(
        lambda: _apps.exists(options, namespace, name),
        options.delete_timeout,
        f"SparkApplication {namespace}/{name}",
    )
    gp_k8s.remove_kernel(
        options, handle, restart, force, log
    )  # the driver pod: deleted if still there, waited for
    _created_at.pop(f"{namespace}/{name}", None)
    _unknown_since.pop(f"{namespace}/{name}", None)


_CAUSE = re.compile(r"(Exception in thread|^Error: |^\S*(Exception|Error): )", re.MULTILINE)


def _reason(error: str) -> str:
    """The operator's errorMessage, its Java cause first (spark-submit's stderr ends in a stack trace)."""
    if not error:
        return "the operator gave no message"
    cause = next((line.strip() for line in error.splitlines() if _CAUSE.search(line)), "")
    head = error.splitlines()[0][:300]
    return f"{head}\ncause: {cause[:1000]}\n{log_tail(error)}" if cause else log_tail(error)


@hookimpl
async def launch(
    resources: Resources, options: SparkOperatorOptions, rollback: Rollback, log: logging.Logger
) -> Handle:
    handle = await rollback.create_in_thread(
        partial(_create, options, resources, log),
        lambda created: _remove(options, created, restart=True, force=True, log=log),
        what=f"SparkApplication {resources['namespace']['name']}/{resources['app']['metadata']['name']}",
    )
    log.debug("SparkApplication %s/%s created", handle["namespace"], handle["app"])
    return handle


@hookimpl
async def poll(
    handle: Handle, options: SparkOperatorOptions, launching: bool, log: logging.Logger
) -> int | None:
    key = f"{handle['namespace']}/{handle['app']}"
    app = await _apps.source_for(options).get(key, not_before=_created_at.get(key, float("-inf")))
    where = f"SparkApplication {key}"
    if app is None or (handle.get("app_uid") and app.uid and app.uid != handle["app_uid"]):
        if launching:
            raise LaunchError(f"{where} disappeared during start-up")
        return 0
    if app.state in FAILED_STATES:
        if launching:
            raise LaunchError(f"{where} {app.state}: {_reason(app.error)}")
        return 1
    if app.state == "COMPLETED":
        return 0
    if app.state == "UNKNOWN":
        since = _unknown_since.setdefault(key, time.monotonic())
        if launching and time.monotonic() - since > options.unknown_timeout:
            raise LaunchError(f"{where} has been UNKNOWN for {options.unknown_timeout:g} s: {app.error}")
    else:
        _unknown_since.pop(key, None)
    # SUBMITTED, RUNNING, a new (empty) state, ...: alive as far as the operator knows; the driver pod says more
    status = await gp_k8s.pod_status(options, handle["namespace"], handle["pod"])
    if status is None:
        if handle.get("uid") and not launching:
            return 0  # the driver pod was there and is gone
        return None  # not created yet (the operator submits it)
    if not handle.get("uid"):
        handle["uid"] = status.uid  # the driver pod the operator made: the handle grows with it
        handle["driver_pod"] = handle["pod"]
    return await gp_k8s.poll_pod(options, handle, status, launching)


@hookimpl
async def send_signal(
    handle: Handle, options: SparkOperatorOptions, signum: int, log: logging.Logger
) -> bool:
    """The launcher's communication port did not answer: nothing else reaches a driver's python."""
    return False


@hookimpl
async def terminate(
    handle: Handle, options: SparkOperatorOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    await asyncio.to_thread(partial(_remove, options, handle, restart, force, log))


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    from .specapp import sparkop_kernel_spec

    return sparkop_kernel_spec(app, kernel_spec, spec_dir, log)
