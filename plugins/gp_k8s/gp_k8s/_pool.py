"""Pools of parked kernel pods (option ``pool_size``, shared namespace mode only).

A parked pod is created ahead of any request, running gp's launcher with ``--park`` (docs/protocol.md §4):
it imports ipykernel, IPython, debugpy and the payload crypto, then waits on its stdin. A launch whose pod
would look exactly like a pooled one (same namespace, image, user and group, resources, volumes, security,
scheduling and template-made env; only the kernel's own env, name and labels differ) takes a parked pod:
gp relabels it as the kernel's (``kernel_id``, ``component=kernel``) and writes the kernel's launcher
arguments and environment to its stdin through the Kubernetes attach API, which needs the same rights as
creating the pod. From there it is an ordinary kernel pod.

The attach is opened once the pod runs and held by this process; the pod is created with ``stdinOnce``, so
if this process dies its parked launchers read end-of-input and exit. A parked pod that is no longer
running (or was replaced) is never served: each take checks the pod first. At exit this process deletes the
pods it still has parked. Pools refill in a background thread, a moment after each take.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gp_core import BackendError, Handle, Resources

from . import _kube
from ._config import ClusterRef, load_configuration
from ._names import kernel_labels
from ._namespaces import SHARED

#: Labels of parked pods: not ``component=kernel``, so the status watch does not take them for kernels.
POOL_LABELS = {"component": "kernel-pool", "app": "gp"}
#: How long a new parked pod may take to run before it is given up.
PARK_TIMEOUT = 60.0
#: Delay of a refill after a take: the kernel just assigned gets the CPU for its start first.
REFILL_DELAY = 0.5
MAX_POOL_SIZE = 16

log = logging.getLogger("gp_k8s.pool")


@dataclass
class Parked:
    name: str
    namespace: str
    uid: str
    attach: Any  # the held WSClient of the kernel container's stdin


def pool_shape(resources: Resources) -> dict[str, Any] | None:
    """What a parked pod for ``resources`` looks like (the kernel's own env, name and labels left out), or
    None when the launch cannot be pooled (not shared mode, more objects than the pod, or an argv that
    does not run gp's launcher as ``<python> <path>/launch_ipykernel.py ...``)."""
    cmd = resources.get("cmd") or []
    if resources["namespace"]["mode"] != SHARED or resources["objects"]:
        return None
    if len(cmd) < 2 or not cmd[1].endswith("/launch_ipykernel.py"):
        return None
    pod = copy.deepcopy(resources["pod"])
    metadata = pod["metadata"]
    metadata.pop("name", None)
    for key in ("kernel_id", "component"):
        metadata.get("labels", {}).pop(key, None)
    metadata.get("annotations", {}).pop("gp/kernel-username", None)
    kernel_env = resources["env"]
    for container in pod["spec"]["containers"]:
        if container.get("name") == "kernel" or container is pod["spec"]["containers"][0]:
            container["env"] = [e for e in container.get("env", []) if e.get("name") not in kernel_env]
            container["command"] = [cmd[0], cmd[1], "--park"]
            container.pop("args", None)
            container["stdin"] = True
            container["stdinOnce"] = True
            container["tty"] = False
    return pod


class PodPool:
    """Parked pods of one shape."""

    def __init__(self, ref: ClusterRef, shape: dict[str, Any], size: int) -> None:
        self.ref = ref
        self.shape = shape
        self.size = size
        self._parked: deque[Parked] = deque()
        self._lock = threading.Lock()
        self._filling = False
        self._closed = False
        self._filler: threading.Thread | None = None

    def take(self) -> Parked | None:
        """A parked pod that still runs, or None (then the caller starts a pod of its own)."""
        while True:
            with self._lock:
                parked = self._parked.popleft() if self._parked else None
            if parked is None:
                self.fill()
                return None
            status = _kube.read_pod(self.ref, parked.namespace, parked.name)
            if (
                status is not None
                and status.uid == parked.uid
                and status.phase == "Running"
                and status.exit_code is None
            ):
                self.fill(REFILL_DELAY)
                return parked
            log.info("Parked pod %s/%s no longer runs; discarded", parked.namespace, parked.name)
            _discard(self.ref, parked)

    def fill(self, delay: float = 0.0) -> None:
        with self._lock:
            if self._filling or self._closed:
                return
            self._filling = True
            self._filler = threading.Thread(target=self._fill, args=(delay,), name="gp-k8s-pool", daemon=True)
            self._filler.start()

    def _fill(self, delay: float) -> None:
        try:
            time.sleep(delay)
            while not self._closed:
                with self._lock:
                    if len(self._parked) >= self.size:
                        return
                try:
                    parked = park_pod(self.ref, self.shape)
                except Exception as exc:
                    log.warning("Could not park a kernel pod: %s", exc)
                    return
                with self._lock:
                    if self._closed:
                        _discard(self.ref, parked)
                        return
                    self._parked.append(parked)
        finally:
            with self._lock:
                self._filling = False

    def settled(self) -> bool:
        with self._lock:
            return not self._filling and len(self._parked) >= self.size

    def close(self) -> None:
        """Delete the parked pods, including one a refill is creating right now (it is waited for)."""
        with self._lock:
            self._closed = True
            parked, self._parked = list(self._parked), deque()
            filler = self._filler
        for item in parked:
            _discard(self.ref, item)
        if filler is not None and filler is not threading.current_thread():
            filler.join(PARK_TIMEOUT + 10)  # it discards what it parks once it sees the pool closed


_pools: dict[str, PodPool] = {}
_pools_lock = threading.Lock()


def pool_for(ref: ClusterRef, resources: Resources, size: int) -> PodPool | None:
    shape = pool_shape(resources)
    if shape is None:
        return None
    key = json.dumps([ref.kubeconfig, ref.context, shape], sort_keys=True)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = PodPool(ref, shape, min(size, MAX_POOL_SIZE))
        return pool


def close_pools() -> None:
    """Delete every pod this process's pools hold parked (blocking)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def pools_settled() -> bool:
    with _pools_lock:
        return all(pool.settled() for pool in _pools.values())


atexit.register(close_pools)

_attach_lock = threading.Lock()
_attach_clients: dict[ClusterRef, Any] = {}


def _attach(ref: ClusterRef, namespace: str, name: str) -> Any:
    """Open (and return) a websocket attached to the kernel container's stdin.

    The client's ``stream()`` swaps the ApiClient's transport while it runs, so attaches have a client of
    their own, used by one call at a time.
    """
    from kubernetes import client
    from kubernetes.stream import stream

    with _attach_lock:
        api = _attach_clients.get(ref)
        if api is None:
            api = _attach_clients[ref] = client.CoreV1Api(client.ApiClient(load_configuration(ref)))
        try:
            return stream(
                api.connect_get_namespaced_pod_attach, name, namespace, container="kernel",
                stdin=True, stdout=False, stderr=False, tty=False, _preload_content=False,
            )  # fmt: skip
        except Exception as exc:
            raise _kube.api_error(exc, "create", "pods/attach", namespace) from exc


def park_pod(ref: ClusterRef, shape: dict[str, Any]) -> Parked:
    """Create one parked pod of ``shape``, wait until it runs, and attach (and hold) its stdin (blocking)."""
    pod = copy.deepcopy(shape)
    name = f"gp-pool-{secrets.token_hex(8)}"
    pod["metadata"]["name"] = name
    pod["metadata"]["labels"] = {**pod["metadata"].get("labels", {}), **POOL_LABELS}
    namespace = pod["metadata"]["namespace"]
    created = _kube.create_object(ref, pod)
    uid = created["metadata"]["uid"]
    parked = Parked(name, namespace, uid, None)
    try:
        deadline = time.monotonic() + PARK_TIMEOUT
        while True:
            status = _kube.read_pod(ref, namespace, name)
            if status is not None and status.phase == "Running" and status.container_started:
                break
            if status is None or status.failure or time.monotonic() > deadline:
                raise BackendError(
                    f"parked pod {namespace}/{name} did not start: {status and status.failure}"
                )
            time.sleep(0.1)
        parked.attach = _attach(ref, namespace, name)
    except BaseException:
        _discard(ref, parked)
        raise
    return parked


def assign(ref: ClusterRef, parked: Parked, resources: Resources, kernel_id: str) -> Handle:
    """Make ``parked`` the kernel's pod: relabel it, then send the launcher its arguments and env (blocking).

    On failure the parked pod is deleted and BackendError raised (the caller then starts a pod of its own).
    """
    from kubernetes import client

    labels = {**resources["pod"]["metadata"].get("labels", {}), **kernel_labels(kernel_id)}
    patch = {
        "metadata": {
            "labels": {**labels, **{k: None for k in POOL_LABELS if k not in labels}},
            "annotations": {"gp/kernel-username": resources["env"].get("KERNEL_USERNAME", "")},
        }
    }
    cmd = resources["cmd"]
    line = json.dumps({"argv": list(cmd[2:]), "env": resources["env"]}) + "\n"
    try:
        _kube._call(
            "patch", "pods", parked.namespace, client.CoreV1Api(_kube.api_client(ref)).patch_namespaced_pod,
            parked.name, parked.namespace, patch,
        )  # fmt: skip
        parked.attach.write_stdin(line)
        _kube.close_websocket(parked.attach)
    except Exception as exc:
        _discard(ref, parked)
        raise BackendError(f"Could not assign parked pod {parked.namespace}/{parked.name}: {exc}") from exc
    return {
        "namespace": parked.namespace,
        "namespace_mode": SHARED,
        "pod": parked.name,
        "objects": [],
        "uid": parked.uid,
        "pooled": True,
    }


def _discard(ref: ClusterRef, parked: Parked) -> None:
    if parked.attach is not None:
        _kube.close_websocket(parked.attach)
    try:
        _kube.delete_object(ref, "Pod", parked.name, parked.namespace, grace_seconds=0)
    except BackendError as exc:
        log.warning("Could not delete parked pod %s/%s: %s", parked.namespace, parked.name, exc)
