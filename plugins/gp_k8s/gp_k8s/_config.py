"""Which cluster the server talks to, decided on first use (never at import): a kubeconfig when one is
configured, the pod's service account when the server runs in a pod (in-cluster config), else the default
kubeconfig. One ``ApiClient`` per configuration serves every kernel (one connection pool, one TLS
handshake per connection, not per call)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from gp_core import BackendError

#: Where Kubernetes mounts a pod's service account (class attributes so tests can point elsewhere).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ClusterRef:
    """What identifies a configuration: the kubeconfig file (``""``: none given) and its context."""

    kubeconfig: str
    context: str


_clients: dict[ClusterRef, Any] = {}
_lock = threading.Lock()


def in_cluster(service_account_dir: str = SERVICE_ACCOUNT_DIR) -> bool:
    """True when this process runs in a Kubernetes pod with a service account token mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(
        os.path.join(service_account_dir, "token")
    )


def load_configuration(ref: ClusterRef, service_account_dir: str = SERVICE_ACCOUNT_DIR) -> Any:
    """A ``kubernetes.client.Configuration`` for ``ref`` (blocking: reads files).

    :raises BackendError: When no configuration can be found, saying what was tried.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if ref.kubeconfig:
            config.load_kube_config(
                config_file=ref.kubeconfig, context=ref.context or None, client_configuration=configuration
            )
        elif in_cluster(service_account_dir):
            loader = config.incluster_config.InClusterConfigLoader(
                token_filename=os.path.join(service_account_dir, "token"),
                cert_filename=os.path.join(service_account_dir, "ca.crt"),
            )
            loader.load_and_set(configuration)
        else:
            # The client reads KUBECONFIG once, at its import; the server's environment now is what counts.
            default = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            config.load_kube_config(
                config_file=default, context=ref.context or None, client_configuration=configuration
            )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        tried = (
            f"kubeconfig {ref.kubeconfig!r}"
            if ref.kubeconfig
            else "in-cluster config (not in a pod), then the default kubeconfig (KUBECONFIG, else ~/.kube/config)"
        )
        raise BackendError(
            f"gp-k8s cannot configure its Kubernetes client from {tried}: {exc}. Set kubeconfig "
            "(env GP_KUBECONFIG or KUBECONFIG), or run the server in a pod with a service account."
        ) from exc
    # Every kernel's calls share this client; urllib3's default pool (cpu count x 5) would make
    # concurrent launches wait for a connection.
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 32)
    return configuration


def api_client(ref: ClusterRef) -> Any:
    """The process's ``kubernetes.client.ApiClient`` for ``ref``, created on first use (blocking)."""
    with _lock:
        existing = _clients.get(ref)
        if existing is not None:
            return existing
    from kubernetes import client

    created = client.ApiClient(load_configuration(ref))
    with _lock:
        return _clients.setdefault(ref, created)


def reset_clients() -> None:
    """Forget every client (tests)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for item in clients:
        close_client(item)


def close_client(item: Any) -> None:
    """Close an ApiClient and the connections of its pool (``ApiClient.close`` leaves those open)."""
    try:
        item.close()
        item.rest_client.pool_manager.clear()
    except Exception:
        pass
