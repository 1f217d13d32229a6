"""The cluster configuration is decided on first use: a kubeconfig when one is set, the pod's service
account (in-cluster config) when running in a pod, else an error that says what was tried."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from gp_k8s import _config
from gp_k8s._config import ClusterRef
from gp_k8s._rbac import POD_RULES

from gp_core import BackendError

from .conftest import yaml_load


@pytest.fixture(autouse=True)
def _fresh_clients():
    _config.reset_clients()
    yield
    _config.reset_clients()


def test_no_configuration_anywhere_says_what_was_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(
        BackendError, match="in-cluster config \\(not in a pod\\), then the default kubeconfig"
    ):
        _config.load_configuration(ClusterRef("", ""), service_account_dir=str(tmp_path / "none"))
    with pytest.raises(BackendError, match="kubeconfig '/nonexistent'"):
        _config.load_configuration(ClusterRef("/nonexistent", ""))


@pytest.mark.k8s
def test_in_cluster_config_from_a_service_account(
    identities, cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """What a server running in a pod sees: the service account's token and CA, the apiserver's address in
    KUBERNETES_SERVICE_HOST/PORT (here the loopback apiserver, never a ClusterIP)."""
    namespace = identities.namespace("gp-incluster")
    kubeconfig = identities.identity(namespace)
    identities.grant(namespace, namespace, "gp-server", POD_RULES)
    token = yaml_load(Path(kubeconfig).read_text())["users"][0]["user"]["token"]
    admin = yaml_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(base64.b64decode(admin["certificate-authority-data"]))
    (account / "namespace").write_text(namespace)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "16443")
    monkeypatch.setattr(_config, "SERVICE_ACCOUNT_DIR", str(account))
    assert _config.in_cluster(str(account))
    configuration = _config.load_configuration(ClusterRef("", ""), service_account_dir=str(account))
    assert configuration.host == "https://127.0.0.1:16443"
    from kubernetes import client

    api_client = client.ApiClient(configuration)
    try:
        api = client.CoreV1Api(api_client)
        assert api.list_namespaced_pod(namespace).items == []  # authenticated as the service account
        with pytest.raises(client.exceptions.ApiException) as refused:
            api.list_namespaced_pod("kube-system")
    finally:
        _config.close_client(api_client)
    assert (
        refused.value.status == 403 and f"system:serviceaccount:{namespace}:gp-server" in refused.value.body
    )


@pytest.mark.k8s
def test_one_client_per_configuration(cluster):
    ref = ClusterRef(cluster.kubeconfig, "")
    assert _config.api_client(ref) is _config.api_client(ref)
    assert _config.api_client(ref).configuration.connection_pool_maxsize >= 32
