"""SparkApplications on the API server: blocking calls only (the hooks run them in worker threads), and the
status of every kernel's application from one LIST per poll interval (gp_core.StatusSource), so API
requests do not grow with the number of kernels."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gp_k8s

from gp_core import BackendError, StatusSource

from ._options import SparkOperatorOptions

#: Label selector of every SparkApplication gp creates (gp-k8s's kernel labels).
APP_SELECTOR = "component=kernel,app=gp"


@dataclass(frozen=True)
class AppStatus:
    """What a kernel needs from its SparkApplication's status."""

    uid: str
    state: str  # .status.applicationState.state ("" while the operator has not seen it)
    error: str  # .status.applicationState.errorMessage
    driver_pod: str  # .status.driverInfo.podName


@dataclass(frozen=True)
class Crd:
    group: str
    version: str
    plural: str

    @classmethod
    def of(cls, options: SparkOperatorOptions) -> Crd:
        return cls(options.crd_group, options.crd_version, options.crd_plural)

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"


def _custom(options: SparkOperatorOptions) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(gp_k8s.api_client(options))


def _missing_crd(crd: Crd, exc: Any) -> BackendError:
    return BackendError(
        f"The cluster has no {crd.resource}/{crd.version} resource (404: {getattr(exc, 'reason', exc)}): "
        "is the Spark Operator installed (its SparkApplication CRD applied)? "
        "(crd_group / crd_version / crd_plural name it)"
    )


def _call(verb: str, crd: Crd, namespace: str | None, function: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    kwargs.setdefault("_request_timeout", (5.0, 30.0))
    try:
        response = function(*args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(exc) from exc
        raise gp_k8s.api_error(exc, verb, crd.resource, namespace) from exc
    except Exception as exc:
        raise gp_k8s.api_error(exc, verb, crd.resource, namespace) from exc
    return json.loads(response.data) if response.data else {}


def crd_installed(options: SparkOperatorOptions) -> bool:
    """Whether the API server serves the custom resource (one discovery call)."""
    crd = Crd.of(options)
    try:
        response = gp_k8s.api_client(options).call_api(
            f"/apis/{crd.group}/{crd.version}", "GET", auth_settings=["BearerToken"],
            _preload_content=False, _request_timeout=(5.0, 30.0),
        )  # fmt: skip
        resources = json.loads(response[0].data)
    except Exception:
        return False
    return any(item.get("name") == crd.plural for item in resources.get("resources", []))


def create(options: SparkOperatorOptions, manifest: dict[str, Any]) -> dict[str, Any]:
    crd = Crd.of(options)
    namespace = manifest["metadata"]["namespace"]
    api = _custom(options)
    try:
        created = _call(
            "create", crd, namespace, api.create_namespaced_custom_object,
            crd.group, crd.version, namespace, crd.plural, manifest,
        )  # fmt: skip
    except LookupError as exc:
        if not crd_installed(options):
            raise _missing_crd(crd, exc.__cause__) from None
        raise BackendError(
            f"Cannot create SparkApplication: namespace {namespace!r} does not exist"
        ) from None
    return dict(created)


def delete(options: SparkOperatorOptions, namespace: str, name: str) -> bool:
    """Delete the application (the operator's driver pod and executors go with it); False if gone already."""
    crd = Crd.of(options)
    try:
        _call(
            "delete", crd, namespace, _custom(options).delete_namespaced_custom_object,
            crd.group, crd.version, namespace, crd.plural, name, propagation_policy="Background",
        )  # fmt: skip
    except LookupError:
        return False
    return True


def exists(options: SparkOperatorOptions, namespace: str, name: str) -> bool:
    crd = Crd.of(options)
    try:
        _call(
            "get", crd, namespace, _custom(options).get_namespaced_custom_object,
            crd.group, crd.version, namespace, crd.plural, name,
        )  # fmt: skip
    except LookupError:
        return False
    return True


def summarize(app: Mapping[str, Any]) -> AppStatus:
    status = app.get("status") or {}
    state = status.get("applicationState") or {}
    return AppStatus(
        uid=str((app.get("metadata") or {}).get("uid", "")),
        state=str(state.get("state") or ""),
        error=str(state.get("errorMessage") or ""),
        driver_pod=str((status.get("driverInfo") or {}).get("podName") or ""),
    )


def list_apps(options: SparkOperatorOptions, scope: str) -> dict[str, AppStatus]:
    """ONE list call for every kernel's application (of ``scope``, or all namespaces)."""
    crd = Crd.of(options)
    api = _custom(options)
    try:
        if scope:
            body = _call(
                "list", crd, scope, api.list_namespaced_custom_object, crd.group, crd.version, scope,
                crd.plural, label_selector=APP_SELECTOR,
            )  # fmt: skip
        else:
            body = _call(
                "list", crd, None, api.list_cluster_custom_object, crd.group, crd.version, crd.plural,
                label_selector=APP_SELECTOR,
            )  # fmt: skip
    except LookupError as exc:
        raise _missing_crd(crd, exc.__cause__) from None
    return {
        f"{item['metadata']['namespace']}/{item['metadata']['name']}": summarize(item)
        for item in body.get("items") or []
    }


_sources: dict[tuple[Any, ...], StatusSource[AppStatus]] = {}
_lock = threading.Lock()


def source_for(options: SparkOperatorOptions) -> StatusSource[AppStatus]:
    scope = options.namespace if options.shared_namespace and not options.allow_kernel_namespace else ""
    key = (options.kubeconfig, options.context, Crd.of(options), scope)
    with _lock:
        source = _sources.get(key)
        if source is None:
            source = _sources[key] = StatusSource(
                f"SparkApplications ({scope or 'all namespaces'})",
                lambda: list_apps(options, scope),  # the options that make up the key are the same
                max_age=0.45,
            )
        return source
