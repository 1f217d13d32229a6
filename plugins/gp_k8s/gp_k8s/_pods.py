"""A kernel's life on Kubernetes: namespace set-up, pod creation, status, signals and removal.

Every blocking call of :mod:`gp_k8s._kube` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from gp_core import BackendError, Handle, LaunchError, Resources

from . import _kube
from ._config import ClusterRef
from ._names import kernel_labels
from ._namespaces import AUTOMATIC, ROLE_BINDING_NAME, NamespacePlan
from ._options import K8sOptions

#: How long a pod creation in a new namespace retries while its service account (or token) is not there yet.
SERVICE_ACCOUNT_WAIT = 20.0

#: When this process created each pod (``time.monotonic()``): a status listing older than that cannot show it.
created_at: dict[str, float] = {}


def cluster_ref(options: K8sOptions) -> ClusterRef:
    return ClusterRef(options.kubeconfig, options.context)


# ---------------------------------------------------------------------------------------------------------
# namespaces


def _namespace_is_kernels(ref: ClusterRef, name: str, kernel_id: str) -> bool:
    """The namespace exists and carries this kernel's labels (so gp made it for this kernel)."""
    from kubernetes import client

    try:
        body = _kube._call(
            "get", "namespaces", None, client.CoreV1Api(_kube.api_client(ref)).read_namespace, name
        )
    except _kube.Gone:
        return False
    labels = (body.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in kernel_labels(kernel_id).items())


def set_up_namespace(
    ref: ClusterRef, plan: NamespacePlan, kernel_id: str, options: K8sOptions, log: logging.Logger
) -> bool:
    """Automatic mode: create the kernel's namespace and RoleBinding (blocking). Returns True when the
    namespace is this kernel's (created now, or kept from before a restart), so removing it is right when
    the launch fails."""
    if plan.mode != AUTOMATIC:
        return False
    labels = {**options.extra_labels, **kernel_labels(kernel_id)}
    created = _kube.create_namespace(ref, plan.name, labels)
    if not created and not _namespace_is_kernels(ref, plan.name, kernel_id):
        raise BackendError(
            f"Namespace {plan.name!r} exists but is not this kernel's (its labels differ): refusing to use it"
        )
    log.debug("Namespace %s %s", plan.name, "created" if created else "kept from before (restart)")
    if options.kernel_cluster_role:
        _kube.create_role_binding(
            ref, plan.name, ROLE_BINDING_NAME, options.kernel_cluster_role, plan.service_account, labels
        )
    return True


def tear_down_namespace(ref: ClusterRef, name: str, options: K8sOptions, log: logging.Logger) -> None:
    """Delete an automatic namespace (with all it holds) and wait until it is gone (blocking)."""
    if _kube.delete_namespace(ref, name):
        log.debug("Deleting namespace %s", name)
    _kube.wait_gone(lambda: _kube.namespace_exists(ref, name), options.delete_timeout, f"Namespace {name!r}")


# ---------------------------------------------------------------------------------------------------------
# creation


def _create_pod(ref: ClusterRef, pod: dict[str, Any], waits_for_account: bool) -> dict[str, Any]:
    deadline = time.monotonic() + (SERVICE_ACCOUNT_WAIT if waits_for_account else 0)
    delay = 0.05
    while True:
        try:
            return _kube.create_object(ref, pod)
        except BackendError as exc:
            # A new namespace's service account (and its token) appear a moment after the namespace does.
            message = str(exc)
            if "service account" not in message and "serviceaccount" not in message:
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def create_kernel(ref: ClusterRef, resources: Resources, log: logging.Logger) -> Handle:
    """Create the template's other objects, then the pod (blocking); returns the handle.

    On failure, removes what it created before raising.
    """
    namespace = resources["namespace"]
    made: list[list[str]] = []
    handle: Handle = {
        "namespace": namespace["name"],
        "namespace_mode": namespace["mode"],
        "pod": resources["pod"]["metadata"]["name"],
        "objects": made,
        "uid": "",
    }
    try:
        for manifest in resources["objects"]:
            _kube.create_object(ref, manifest)
            made.append([manifest["kind"], manifest["metadata"]["name"]])
        pod = _create_pod(ref, resources["pod"], waits_for_account=namespace["mode"] != "shared")
    except BaseException as failure:
        for kind, name in made:  # the pod was not created; what came before it goes
            try:
                _kube.delete_object(ref, kind, name, handle["namespace"])
            except BackendError as exc:
                failure.add_note(f"{kind} {handle['namespace']}/{name} could not be removed: {exc}")
        raise
    created_at[_kube.pod_key(handle["namespace"], handle["pod"])] = time.monotonic()
    handle["uid"] = (pod.get("metadata") or {}).get("uid", "")
    return handle


# ---------------------------------------------------------------------------------------------------------
# removal


def remove_objects(ref: ClusterRef, handle: Handle, grace_seconds: int, log: logging.Logger) -> None:
    """Delete the pod and the template's other objects (blocking; gone already is fine)."""
    namespace = handle["namespace"]
    errors = []
    for kind, name in [["Pod", handle["pod"]], *handle.get("objects", [])]:
        try:
            _kube.delete_object(
                ref, kind, name, namespace, grace_seconds=grace_seconds if kind == "Pod" else None
            )
        except BackendError as exc:
            errors.append(str(exc))
    if errors:
        raise BackendError("; ".join(errors))


def remove_kernel(
    ref: ClusterRef, handle: Handle, options: K8sOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    """Delete everything gp created for the kernel and wait until it is gone (blocking)."""
    namespace, pod = handle["namespace"], handle["pod"]
    # Forced: grace period 0, the pod leaves the API at once and the kubelet kills its containers (a grace
    # period of 1 s keeps it listed until then, but the kubelet takes 5-15 s to confirm on a busy node).
    grace = 0 if force else int(options.stop_timeout)
    remove_objects(ref, handle, grace, log)
    _kube.wait_gone(
        lambda: _kube.read_pod(ref, namespace, pod) is not None,
        options.delete_timeout + grace,
        f"Pod {namespace}/{pod}",
    )
    for kind, name in handle.get("objects", []):
        _kube.wait_gone(
            partial(_kube.object_exists, ref, kind, name, namespace),
            options.delete_timeout,
            f"{kind} {namespace}/{name}",
        )
    created_at.pop(_kube.pod_key(namespace, pod), None)
    if handle.get("namespace_mode") == AUTOMATIC and not restart:
        tear_down_namespace(ref, namespace, options, log)


# ---------------------------------------------------------------------------------------------------------
# status


async def failure_message(ref: ClusterRef, handle: Handle, status: _kube.PodStatus) -> str:
    namespace, pod = handle["namespace"], handle["pod"]
    details = await asyncio.to_thread(_kube.pod_failure_details, ref, namespace, pod, status)
    message = f"Kernel pod {namespace}/{pod} failed to start: {status.failure}"
    return f"{message}\n{details}" if details else message


def check_status(status: _kube.PodStatus | None, handle: Handle, launching: bool) -> int | None:
    """None while the kernel lives; its exit status once it ended. Raises LaunchError-worthy states to
    the caller through ``status.failure`` (the caller adds details)."""
    if status is None:
        return 0
    if status.uid and handle.get("uid") and status.uid != handle["uid"]:
        return 0  # a pod of the same name, created later, is not this kernel
    if status.exit_code is not None:
        return status.exit_code
    if launching and status.failure is not None:
        raise _Failed(status)
    return None


class _Failed(Exception):
    def __init__(self, status: _kube.PodStatus) -> None:
        super().__init__(status.failure)
        self.status = status


async def poll(
    ref: ClusterRef, handle: Handle, status: _kube.PodStatus | None, launching: bool
) -> int | None:
    try:
        result = check_status(status, handle, launching)
    except _Failed as failed:
        raise LaunchError(await failure_message(ref, handle, failed.status)) from None
    if launching and result is not None:
        if status is None:
            raise LaunchError(f"Kernel pod {handle['namespace']}/{handle['pod']} disappeared during start-up")
        raise LaunchError(await failure_message(ref, handle, status))
    return result
