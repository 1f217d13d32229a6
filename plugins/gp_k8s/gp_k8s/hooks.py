"""The ``k8s`` backend's hooks: each kernel is a Kubernetes pod (registered as ``k8s``).

The work lives in the private modules: options in ``_options``, the cluster configuration in ``_config``,
names in ``_names``, namespace modes in ``_namespaces``, the pod template in ``_render``, the API calls in
``_kube``, the shared status watch in ``_status`` and the kernel's lifecycle in ``_pods``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

from gp_core import BackendError, BackendOptions, Handle, Resources, Rollback, hookimpl

from . import _kube, _namespaces, _pods, _render, _spark, _status
from ._options import K8sOptions


@hookimpl
def declare_options() -> type[BackendOptions]:
    return K8sOptions


@hookimpl
async def resolve_namespace(
    kernel_id: str,
    options: K8sOptions,
    env: dict[str, str],
    request_env: dict[str, str],
    rollback: Rollback,
    log: logging.Logger,
) -> str:
    """The kernel's namespace; in automatic mode it is created here, with its RoleBinding, and removed
    again by the rollback when the launch fails."""
    plan = _namespaces.plan(kernel_id, env, options, request_env)
    if plan.mode == _namespaces.AUTOMATIC:
        ref = _pods.cluster_ref(options)
        await rollback.create_in_thread(
            partial(_pods.set_up_namespace, ref, plan, kernel_id, options, log),
            lambda _owned: _pods.tear_down_namespace(ref, plan.name, options, log),
            what=f"namespace {plan.name}",
        )
    return plan.name


@hookimpl
async def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    resource_dir: str | None,
    options: K8sOptions,
    log: logging.Logger,
) -> Resources:
    plan = _namespaces.plan(kernel_id, env, options, request_env)
    namespace = {"name": plan.name, "mode": plan.mode, "service_account": plan.service_account}
    resources = await asyncio.to_thread(
        _render.render, kernel_id, cmd, env, options, namespace, resource_dir, log, request_env
    )
    if options.spark:
        return _spark.prepare(kernel_id, cmd, env, request_env, options, resources, log)
    return resources


@hookimpl
async def launch(
    kernel_id: str, resources: Resources, options: K8sOptions, rollback: Rollback, log: logging.Logger
) -> Handle:
    ref = _pods.cluster_ref(options)
    if options.spark:
        submitted: Handle = await rollback.create_in_thread(
            partial(_spark.submit, ref, resources, log),
            lambda created: _spark.remove_kernel(ref, created, options, restart=True, force=True, log=log),
            what=f"spark-submit of {resources['namespace']['name']}/{resources['pod']['metadata']['name']}",
        )
        log.debug("spark-submit of driver pod %s/%s started", submitted["namespace"], submitted["pod"])
        return submitted
    if options.pool_size:
        handle = await _launch_pooled(ref, kernel_id, resources, options, rollback, log)
        if handle is not None:
            return handle
    handle = await rollback.create_in_thread(
        partial(_pods.create_kernel, ref, resources, log),
        lambda created: _pods.remove_kernel(ref, created, options, restart=True, force=True, log=log),
        what=f"pod {resources['namespace']['name']}/{resources['pod']['metadata']['name']}",
    )
    log.debug("Kernel pod %s/%s created", handle["namespace"], handle["pod"])
    return handle


async def _launch_pooled(
    ref: Any,
    kernel_id: str,
    resources: Resources,
    options: K8sOptions,
    rollback: Rollback,
    log: logging.Logger,
) -> Handle | None:
    """Take a parked pod for this launch, if its pool has one; None: start a pod of its own."""
    from . import _pool  # the pool's imports are not needed without pool_size

    pool = _pool.pool_for(ref, resources, options.pool_size)
    if pool is None:
        log.debug("pool_size is set, but this launch cannot be pooled (shared namespace, launcher argv only)")
        return None
    parked = await asyncio.to_thread(pool.take)
    if parked is None:
        return None
    resources = {**resources, "env": {**resources["env"], "KERNEL_POD_NAME": parked.name}}
    try:
        handle = await rollback.create_in_thread(
            partial(_pool.assign, ref, parked, resources, kernel_id),
            lambda created: _pods.remove_kernel(ref, created, options, restart=True, force=True, log=log),
            what=f"pod {parked.namespace}/{parked.name} (from the pool)",
        )
    except BackendError as exc:
        log.warning("%s; starting a new pod instead", exc)
        return None
    _pods.created_at[_kube.pod_key(handle["namespace"], handle["pod"])] = time.monotonic()
    log.debug("Kernel pod %s/%s taken from the pool", handle["namespace"], handle["pod"])
    return handle


@hookimpl
async def poll(handle: Handle, options: K8sOptions, launching: bool, log: logging.Logger) -> int | None:
    key = _kube.pod_key(handle["namespace"], handle["pod"])
    status = await _status.source_for(options).get(key, not_before=_pods.created_at.get(key, float("-inf")))
    if "spark" in handle:
        return await _spark.poll(_pods.cluster_ref(options), handle, status, launching)
    return await _pods.poll(_pods.cluster_ref(options), handle, status, launching)


@hookimpl
async def send_signal(handle: Handle, options: K8sOptions, signum: int, log: logging.Logger) -> bool:
    """The launcher's communication port did not answer: ``kill`` the kernel through the exec API."""
    if "spark" in handle and signum not in (signal.SIGKILL, signal.SIGTERM):
        # PID 1 of a driver pod is Spark's JVM, not the kernel: an interrupt there would end the driver.
        log.warning(
            "Signal %d not delivered: the kernel's launcher in driver pod %s did not answer",
            signum,
            handle["pod"],
        )
        return False
    ref = _pods.cluster_ref(options)
    return await asyncio.to_thread(_kube.exec_signal, ref, handle["namespace"], handle["pod"], signum, log)


@hookimpl
async def terminate(
    handle: Handle, options: K8sOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    ref = _pods.cluster_ref(options)
    remove = _spark.remove_kernel if "spark" in handle else _pods.remove_kernel
    await asyncio.to_thread(partial(remove, ref, handle, options, restart, force, log))


@hookimpl
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    from .specapp import k8s_kernel_spec  # the installer's imports are not needed to run kernels

    return k8s_kernel_spec(app, kernel_spec, spec_dir, log)
