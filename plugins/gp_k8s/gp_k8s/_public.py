"""The functions gp-k8s offers backends that build on it (re-exported, lazily, by :mod:`gp_k8s`): namespace
handling, injection-proof template rendering, the shared pod status watch, pod failure reasons and removal.

Every blocking one says so; callers run them in a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gp_core import Handle, Resources, Rollback

from . import _kube, _pods, _render, _spark, _status
from ._config import api_client as _api_client
from ._kube import PodStatus
from ._options import K8sOptions


async def resolve_namespace(
    kernel_id: str,
    options: K8sOptions,
    env: dict[str, str],
    request_env: dict[str, str],
    rollback: Rollback,
    log: logging.Logger,
) -> str:
    """The kernel's namespace in gp-k8s's three modes (shared, bring-your-own, automatic); an automatic
    namespace (and its RoleBinding) is created here, and removed by ``rollback`` when the launch fails."""
    from .hooks import resolve_namespace as hook

    return await hook(kernel_id, options, env, request_env, rollback, log)


def render_pod(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    options: K8sOptions,
    resource_dir: str | None,
    log: logging.Logger,
    request_env: dict[str, str] | None = None,
) -> Resources:
    """The kernel's pod as gp-k8s renders it (template, checks, labels, env, Pod Security), plus the
    namespace plan: ``{"namespace": {...}, "pod": {...}, "objects": [...]}``. Pure; blocking (reads files)."""
    from ._namespaces import plan as namespace_plan

    plan = namespace_plan(kernel_id, env, options, request_env)
    namespace = {"name": plan.name, "mode": plan.mode, "service_account": plan.service_account}
    return _render.render(kernel_id, cmd, env, options, namespace, resource_dir, log, request_env)


def render_template(path: str | Path, variables: dict[str, Any]) -> list[Any]:
    """Render a Jinja YAML template as gp-k8s renders pod templates: every ``{{ expression }}`` is data
    (sandboxed; values put in after the safe YAML parse), so no value can add keys, objects or documents.
    Returns the documents. Blocking (reads the file)."""
    return _render.render_documents(Path(path), variables)


def spark_pod_templates(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spark's driver and executor pod templates from a rendered kernel pod (the driver: the pod without
    its command, with its service account token, without the server's Spark/Java variables; the executors:
    labelled ``component=worker``, without the launch protocol's variables)."""
    return _spark.pod_templates(pod)


def track_pod(namespace: str, pod: str) -> None:
    """Record that a pod of that name is being created now, so the status watch does not call it gone
    in a listing made before it existed."""
    import time

    _pods.created_at[_kube.pod_key(namespace, pod)] = time.monotonic()


async def pod_status(options: K8sOptions, namespace: str, pod: str) -> PodStatus | None:
    """The pod's status from gp-k8s's one shared LIST + WATCH of kernel pods (``component=kernel,app=gp``);
    None when it does not exist."""
    key = _kube.pod_key(namespace, pod)
    return await _status.source_for(options).get(key, not_before=_pods.created_at.get(key, float("-inf")))


async def poll_pod(
    options: K8sOptions, handle: Handle, status: PodStatus | None, launching: bool
) -> int | None:
    """gp-k8s's verdict on a kernel pod (``handle``: namespace, pod, uid): None while alive, its exit status
    once ended; while launching, a pod that cannot start raises :class:`gp_core.LaunchError` with its reason
    (image pull, unschedulable, crash, OOM, exit code and log tail)."""
    return await _pods.poll(_pods.cluster_ref(options), handle, status, launching)


def remove_kernel(
    options: K8sOptions, handle: Handle, restart: bool, force: bool, log: logging.Logger
) -> None:
    """Delete the kernel's pod (``handle``: namespace, namespace_mode, pod, objects), wait until it is gone,
    and delete an automatic namespace unless restarting. Blocking."""
    _pods.remove_kernel(_pods.cluster_ref(options), handle, options, restart, force, log)


def api_client(options: K8sOptions) -> Any:
    """The process's shared ``kubernetes.client.ApiClient`` for the options' cluster. Blocking on first use."""
    return _api_client(_pods.cluster_ref(options))


def api_error(exc: Exception, verb: str, resource: str, namespace: str | None) -> Exception:
    """A :class:`gp_core.BackendError` for a failed API call (a 403 names the verb, resource, namespace)."""
    return _kube.api_error(exc, verb, resource, namespace)


def wait_gone(check: Any, timeout: float, what: str) -> None:
    """Wait until ``check()`` is false, else raise BackendError naming ``what``. Blocking."""
    _kube.wait_gone(check, timeout, what)
