"""gp-k8s: the gp backend that runs Jupyter kernels as Kubernetes pods (``k8s``).

The backend is the module :mod:`gp_k8s.hooks`, registered under the entry-point group ``gp_core.backends``.
Importing this package does not import the kubernetes client; the backend's modules do, on first use.

Public API for backends that build on gp-k8s (e.g. gp-sparkop), versioned with this distribution: the names
in ``__all__``, loaded on first access.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "K8sOptions": "._options",
    "PodStatus": "._kube",
    "kernel_labels": "._names",
    "kernel_name": "._names",
    "resolve_namespace": "._public",
    "render_pod": "._public",
    "render_template": "._public",
    "spark_pod_templates": "._public",
    "track_pod": "._public",
    "pod_status": "._public",
    "poll_pod": "._public",
    "remove_kernel": "._public",
    "api_client": "._public",
    "api_error": "._public",
    "wait_gone": "._public",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gp_k8s' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
