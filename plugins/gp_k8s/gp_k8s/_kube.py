"""The Kubernetes API side of gp-k8s: blocking calls only (the hooks run them in worker threads).

Responses are read as JSON (``_preload_content=False``) rather than deserialised into the client's model
classes: a kernel needs a few fields, and the models cost milliseconds per object.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gp_core import BackendError

from ._config import ClusterRef, api_client, load_configuration
from ._names import KERNEL_SELECTOR

#: Container waiting reasons that mean the kernel will not start by itself.
FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)
LOG_TAIL_LINES = 40
#: Request timeouts (connect, read) of ordinary calls: an unreachable apiserver must not hang a poll.
REQUEST_TIMEOUT = (5.0, 30.0)


class Gone(Exception):
    """The object does not exist (404)."""


def _core(ref: ClusterRef) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client(ref))


def _rbac(ref: ClusterRef) -> Any:
    from kubernetes import client

    return client.RbacAuthorizationV1Api(api_client(ref))


def _message(exc: Any) -> str:
    try:
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


def api_error(exc: Exception, verb: str, resource: str, namespace: str | None) -> BackendError:
    """A user-facing error for a failed call; a 403 names the verb, resource and namespace refused."""
    from kubernetes.client.exceptions import ApiException

    where = f"in namespace {namespace!r}" if namespace else "(cluster-wide)"
    if isinstance(exc, ApiException):
        if exc.status == 403:
            return BackendError(
                f"Kubernetes refused to {verb} {resource} {where} (403 Forbidden): {_message(exc)}. Grant the "
                f"server's identity '{verb}' on '{resource}' {where} (see the gp-k8s README for the roles each "
                "namespace mode needs)."
            )
        return BackendError(f"Kubernetes could not {verb} {resource} {where} ({exc.status}): {_message(exc)}")
    return BackendError(f"Kubernetes API unreachable while trying to {verb} {resource} {where}: {exc}")


def _call(
    verb: str, resource: str, namespace: str | None, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Run one API call and return its JSON body; 404 raises :class:`Gone`, other failures BackendError."""
    from kubernetes.client.exceptions import ApiException

    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        response = function(*args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise Gone(f"{resource} not found") from exc
        raise api_error(exc, verb, resource, namespace) from exc
    except BackendError:
        raise
    except Exception as exc:  # urllib3 / connection errors
        raise api_error(exc, verb, resource, namespace) from exc
    data = response.data
    return json.loads(data) if data else {}


# ---------------------------------------------------------------------------------------------------------
# objects


_CREATE = {
    "Pod": ("create_namespaced_pod", "pods"),
    "ConfigMap": ("create_namespaced_config_map", "configmaps"),
    "Secret": ("create_namespaced_secret", "secrets"),
    "Service": ("create_namespaced_service", "services"),
    "PersistentVolumeClaim": ("create_namespaced_persistent_volume_claim", "persistentvolumeclaims"),
}
_DELETE = {
    "Pod": ("delete_namespaced_pod", "read_namespaced_pod", "pods"),
    "ConfigMap": ("delete_namespaced_config_map", "read_namespaced_config_map", "configmaps"),
    "Secret": ("delete_namespaced_secret", "read_namespaced_secret", "secrets"),
    "Service": ("delete_namespaced_service", "read_namespaced_service", "services"),
    "PersistentVolumeClaim": (
        "delete_namespaced_persistent_volume_claim",
        "read_namespaced_persistent_volume_claim",
        "persistentvolumeclaims",
    ),
}


def create_object(ref: ClusterRef, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create one namespaced object; returns the created object's JSON."""
    kind = manifest["kind"]
    method, resource = _CREATE[kind]
    namespace = manifest["metadata"]["namespace"]
    try:
        return _call("create", resource, namespace, getattr(_core(ref), method), namespace, manifest)
    except Gone as exc:  # the namespace is missing
        raise BackendError(
            f"Cannot create {kind} {manifest['metadata'].get('name')!r}: namespace {namespace!r} does not exist"
        ) from exc


def delete_object(
    ref: ClusterRef, kind: str, name: str, namespace: str, grace_seconds: int | None = None
) -> bool:
    """Delete one object; False when it was already gone."""
    method, _read, resource = _DELETE[kind]
    kwargs: dict[str, Any] = {"propagation_policy": "Background"}
    if grace_seconds is not None:
        kwargs["grace_period_seconds"] = grace_seconds
    try:
        _call("delete", resource, namespace, getattr(_core(ref), method), name, namespace, **kwargs)
    except Gone:
        return False
    return True


def delete_pods(ref: ClusterRef, namespace: str, selector: str) -> None:
    """Delete every pod of ``namespace`` matching the label ``selector`` (one collection call)."""
    _call(
        "delete", "pods", namespace, _core(ref).delete_collection_namespaced_pod, namespace,
        label_selector=selector, grace_period_seconds=0,
    )  # fmt: skip


def list_pod_names(ref: ClusterRef, namespace: str, selector: str) -> list[str]:
    body = _call(
        "list", "pods", namespace, _core(ref).list_namespaced_pod, namespace, label_selector=selector
    )
    return [item["metadata"]["name"] for item in body.get("items") or []]


def object_exists(ref: ClusterRef, kind: str, name: str, namespace: str) -> bool:
    _method, read, resource = _DELETE[kind]
    try:
        _call("get", resource, namespace, getattr(_core(ref), read), name, namespace)
    except Gone:
        return False
    return True


def wait_gone(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` says the object no longer exists."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while check():
        if time.monotonic() > deadline:
            raise BackendError(f"{what} still exists {timeout:g} s after its deletion (delete_timeout)")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# ---------------------------------------------------------------------------------------------------------
# namespaces and RBAC (automatic mode)


def create_namespace(ref: ClusterRef, name: str, labels: Mapping[str, str]) -> bool:
    """Create the kernel's namespace; False when it already existed (a restart, or a 409)."""
    from kubernetes.client.exceptions import ApiException

    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
    try:
        _core(ref).create_namespace(body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise api_error(exc, "create", "namespaces", None) from exc
    except Exception as exc:
        raise api_error(exc, "create", "namespaces", None) from exc
    return True


def delete_namespace(ref: ClusterRef, name: str) -> bool:
    try:
        _call(
            "delete", "namespaces", None, _core(ref).delete_namespace, name, propagation_policy="Background"
        )
    except Gone:
        return False
    return True


def namespace_exists(ref: ClusterRef, name: str) -> bool:
    try:
        _call("get", "namespaces", None, _core(ref).read_namespace, name)
    except Gone:
        return False
    return True


def create_role_binding(
    ref: ClusterRef,
    namespace: str,
    name: str,
    cluster_role: str,
    service_account: str,
    labels: Mapping[str, str],
) -> bool:
    """Bind ``cluster_role`` to the kernel's service account inside its namespace; False if it existed.

    A plain dict body: the client's ``V1Subject`` model, which the anchor used, no longer exists.
    """
    from kubernetes.client.exceptions import ApiException

    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    try:
        _rbac(ref).create_namespaced_role_binding(
            namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise api_error(exc, "create", "rolebindings", namespace) from exc
    except Exception as exc:
        raise api_error(exc, "create", "rolebindings", namespace) from exc
    return True


def delete_role_binding(ref: ClusterRef, namespace: str, name: str) -> bool:
    try:
        _call("delete", "rolebindings", namespace, _rbac(ref).delete_namespaced_role_binding, name, namespace)
    except Gone:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class PodStatus:
    """What a kernel's status needs from its pod."""

    phase: str
    uid: str
    deleting: bool
    failure: str | None  # why the kernel cannot start, or None
    exit_code: int | None  # the kernel container's, once it terminated
    container_started: bool

    @property
    def alive(self) -> bool:
        return self.phase in ("Pending", "Running") and self.exit_code is None


def pod_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def summarize(pod: Mapping[str, Any]) -> PodStatus:
    """A pod's JSON (from a list, a watch event or a get) reduced to what :class:`PodStatus` holds."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    failure = None
    exit_code = None
    started = False
    statuses = status.get("containerStatuses") or []
    kernel = next((c for c in statuses if c.get("name") == "kernel"), statuses[0] if statuses else None)
    if kernel is not None:
        state = kernel.get("state") or {}
        waiting = state.get("waiting")
        terminated = state.get("terminated")
        if "running" in state:
            started = True
        if waiting and waiting.get("reason") in FATAL_WAITING:
            failure = f"{waiting['reason']}: {waiting.get('message') or 'no message'}"
        if terminated:
            started = True
            exit_code = int(terminated.get("exitCode", 1))
            reason = terminated.get("reason") or "Exited"
            failure = f"the kernel container exited with code {exit_code} ({reason})"
            if terminated.get("message"):
                failure += f": {terminated['message']}"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            if condition.get("reason") == "Unschedulable":
                failure = f"Unschedulable: {condition.get('message') or 'no node fits the pod'}"
    if phase in ("Failed", "Succeeded") and failure is None:
        failure = f"the pod {phase.lower()}" + (
            f" ({status['reason']}: {status.get('message', '')})" if status.get("reason") else ""
        )
        exit_code = 0 if phase == "Succeeded" else 1
    if phase in ("Failed", "Succeeded") and exit_code is None:
        exit_code = 0 if phase == "Succeeded" else 1
    return PodStatus(
        phase=phase,
        uid=str(metadata.get("uid", "")),
        deleting=bool(metadata.get("deletionTimestamp")),
        failure=failure,
        exit_code=exit_code,
        container_started=started,
    )


def read_pod(ref: ClusterRef, namespace: str, name: str) -> PodStatus | None:
    """One pod's status by a GET; None when it does not exist."""
    try:
        return summarize(_call("get", "pods", namespace, _core(ref).read_namespaced_pod, name, namespace))
    except Gone:
        return None


def list_kernel_pods(ref: ClusterRef, namespace: str | None) -> tuple[dict[str, PodStatus], str]:
    """ONE list call for every kernel pod (of ``namespace``, or all): ({key: status}, resourceVersion)."""
    core = _core(ref)
    if namespace:
        body = _call(
            "list", "pods", namespace, core.list_namespaced_pod, namespace, label_selector=KERNEL_SELECTOR
        )
    else:
        body = _call("list", "pods", None, core.list_pod_for_all_namespaces, label_selector=KERNEL_SELECTOR)
    entries = {
        pod_key(item["metadata"]["namespace"], item["metadata"]["name"]): summarize(item)
        for item in body.get("items") or []
    }
    return entries, str((body.get("metadata") or {}).get("resourceVersion", ""))


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def watch_kernel_pods(
    ref: ClusterRef,
    namespace: str | None,
    resource_version: str,
    on_event: Callable[[str, str, PodStatus | None], None],
    on_response: Callable[[Any], None],
    timeout_seconds: int = 240,
) -> str:
    """Stream pod events from ``resource_version`` until the server ends the watch; returns the last
    resourceVersion seen. ``on_event(type, key, status)``; ``on_response(http_response)`` lets the caller
    close the stream from another thread. Raises :class:`WatchExpired` on 410, BackendError on failures."""
    from kubernetes.watch.watch import iter_resp_lines

    core = _core(ref)
    kwargs: dict[str, Any] = {
        "label_selector": KERNEL_SELECTOR,
        "watch": True,
        "resource_version": resource_version,
        "allow_watch_bookmarks": True,
        "timeout_seconds": timeout_seconds,
        "_request_timeout": (REQUEST_TIMEOUT[0], timeout_seconds + 30),
        "_preload_content": False,
    }
    try:
        if namespace:
            response = core.list_namespaced_pod(namespace, **kwargs)
        else:
            response = core.list_pod_for_all_namespaces(**kwargs)
    except Exception as exc:
        raise api_error(exc, "watch", "pods", namespace) from exc
    connection = getattr(response, "connection", None)  # urllib3 forgets it when a read fails
    sock = getattr(connection, "sock", None)
    on_response(response)
    try:
        for line in iter_resp_lines(response):
            event = json.loads(line)
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise WatchExpired(str(obj.get("message")))
                raise BackendError(f"the pod watch failed: {obj.get('message')}")
            metadata = obj.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or resource_version)
            if kind == "BOOKMARK":
                continue
            key = pod_key(metadata.get("namespace", ""), metadata.get("name", ""))
            on_event(kind, key, summarize(obj) if kind != "DELETED" else None)
    finally:
        # Closed here, in the reading thread, and not returned to the pool: after an abort (abort_response)
        # the socket is shut down, and nothing else would ever close it.
        response.close()
        if connection is not None:
            connection.close()
        if sock is not None:
            sock.close()
    return resource_version


def close_websocket(ws: Any) -> None:
    """Close a kubernetes stream WSClient and its socket: once the server has closed its side,
    ``WSClient.close()`` sends nothing and leaves the socket open."""
    try:
        ws.close()
    except Exception:
        pass
    sock = getattr(ws, "sock", None)
    if sock is not None:
        try:
            sock.shutdown()  # websocket-client: closes the underlying socket
        except Exception:
            pass


def abort_response(response: Any) -> None:
    """Make a read blocked on ``response`` (in another thread) return now.

    Closing an SSL socket waits for the reader to let go of it; shutting the socket down underneath does not.
    """
    import socket

    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def pod_failure_details(ref: ClusterRef, namespace: str, name: str, status: PodStatus) -> str:
    """The log tail of an exited kernel container, or the pod's warning events (best effort)."""
    parts = []
    if status.container_started:
        try:
            response = _core(ref).read_namespaced_pod_log(
                name, namespace, container="kernel", tail_lines=LOG_TAIL_LINES, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
            text = response.data.decode(errors="replace").strip()
            if text:
                parts.append("log tail:\n" + text[-4000:])
        except Exception as exc:
            parts.append(f"(its log could not be read: {exc})")
    else:
        try:
            body = _call(
                "list", "events", namespace, _core(ref).list_namespaced_event, namespace,
                field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
            )  # fmt: skip
            warnings = [
                f"{item.get('reason')}: {item.get('message')}"
                for item in body.get("items") or []
                if item.get("type") == "Warning"
            ]
            fresh = [
                text
                for text in dict.fromkeys(warnings[-5:])
                if text.split(": ", 1)[-1] not in (status.failure or "")
            ]
            if fresh:
                parts.append("events: " + "; ".join(fresh))
        except BackendError:
            pass
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# signals


_exec_lock = threading.Lock()
_exec_clients: dict[ClusterRef, Any] = {}


def exec_signal(ref: ClusterRef, namespace: str, name: str, signum: int, log: logging.Logger) -> bool:
    """Send ``signum`` to the kernel (PID 1 of its container) with ``kill`` run through the exec API.

    The client's ``stream()`` swaps the ApiClient's transport while it runs, so exec has a client of its own,
    used by one call at a time.
    """
    from kubernetes import client
    from kubernetes.stream import stream

    with _exec_lock:
        api = _exec_clients.get(ref)
        if api is None:
            api = _exec_clients[ref] = client.CoreV1Api(client.ApiClient(load_configuration(ref)))
        try:
            ws = stream(
                api.connect_get_namespaced_pod_exec, name, namespace, container="kernel",
                command=["/bin/sh", "-c", 'kill -s "$0" 1 && echo delivered', str(int(signum))],
                stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
            )  # fmt: skip
        except Exception as exc:
            raise api_error(exc, "create", "pods/exec", namespace) from exc
        try:
            ws.run_forever(timeout=REQUEST_TIMEOUT[1])
            output = "".join(ws.read_all())
        finally:
            close_websocket(ws)
    delivered = "delivered" in str(output)
    if not delivered:
        log.warning("kill %d in pod %s/%s said: %s", signum, namespace, name, str(output).strip()[:500])
    return delivered
