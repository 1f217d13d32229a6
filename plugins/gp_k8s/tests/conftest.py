"""Fixtures for gp-k8s's tests: the test cluster, the kernel image, and a guarantee that every kernel a test
starts leaves no pod, namespace or RoleBinding behind, even when the test fails.

The cluster is the one ``scripts/test.sh`` starts (``GP_TEST_K8S_KUBECONFIG``); kernel pods use hostNetwork
and report to 127.0.0.1. Without a reachable cluster the tests are skipped, unless ``GP_REQUIRED_BACKENDS``
names ``k8s``: then they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gp_core.testing import kernel_env, kernel_manager, launcher_argv, require_backend, write_kernelspec

IMAGE = os.environ.get("GP_TEST_KERNEL_IMAGE", "gp/kernel-py:test")
#: Where ``jupyter image-bootstrap install`` puts the launcher in the test image.
IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
LAUNCHER_ARGV = launcher_argv("python3", IMAGE_LAUNCHER)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _loopback_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test traffic stays on 127.0.0.1; port 0 so concurrent test runs never fight over 8877.
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")


class Cluster:
    """The test cluster, seen with the admin kubeconfig (the tests' own view, not the backend's)."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)

    def pods(self, selector: str) -> list[Any]:
        return self.core.list_pod_for_all_namespaces(label_selector=selector).items

    def namespaces(self, selector: str) -> list[Any]:
        return self.core.list_namespace(label_selector=selector).items

    def role_bindings(self, selector: str) -> list[Any]:
        return self.rbac.list_role_binding_for_all_namespaces(label_selector=selector).items

    def leftovers(self, kernel_ids: set[str]) -> list[str]:
        found = []
        for kernel_id in kernel_ids:
            selector = f"kernel_id={kernel_id}"
            found += [
                f"pod {p.metadata.namespace}/{p.metadata.name} ({p.status.phase})"
                for p in self.pods(selector)
            ]
            found += [f"namespace {n.metadata.name} ({n.status.phase})" for n in self.namespaces(selector)]
            found += [
                f"rolebinding {r.metadata.namespace}/{r.metadata.name}" for r in self.role_bindings(selector)
            ]
        return found

    def remove(self, kernel_ids: set[str]) -> None:
        from kubernetes.client.exceptions import ApiException

        for kernel_id in kernel_ids:
            selector = f"kernel_id={kernel_id}"
            for pod in self.pods(selector):
                try:
                    self.core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                    )
                except ApiException:
                    pass
            for namespace in self.namespaces(selector):
                try:
                    self.core.delete_namespace(namespace.metadata.name)
                except ApiException:
                    pass


def _cluster_or_error() -> Cluster | str:
    kubeconfig = os.environ.get("GP_TEST_K8S_KUBECONFIG", "")
    if not kubeconfig or not os.path.isfile(kubeconfig):
        return f"GP_TEST_K8S_KUBECONFIG={kubeconfig!r} is not a kubeconfig file (scripts/test.sh starts the cluster)"
    try:
        cluster = Cluster(kubeconfig)
        cluster.core.list_namespace(_request_timeout=5)
    except Exception as exc:
        return f"the test cluster is unreachable: {exc}"
    return cluster


@pytest.fixture(scope="session")
def cluster_or_error() -> Any:
    found = _cluster_or_error()
    yield found
    if isinstance(found, Cluster):
        found.api_client.close()
        found.api_client.rest_client.pool_manager.clear()


@pytest.fixture
def cluster(cluster_or_error: Cluster | str) -> Cluster:
    if isinstance(cluster_or_error, str):
        require_backend("k8s", cluster_or_error)
    return cluster_or_error


def image_present() -> bool:
    result = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    return result.returncode == 0


class Kernels:
    """Starts kernels for one test and remembers their ids, so the teardown can prove (and enforce) that
    nothing of them is left."""

    def __init__(self, directory: Path, kubeconfig: str) -> None:
        self.directory = directory
        self.kubeconfig = kubeconfig
        self.kernel_ids: set[str] = set()
        self.managers: list[Any] = []

    def spec(
        self,
        name: str = "k",
        *,
        argv: list[str] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        template: str | None = None,
    ) -> str:
        options = {
            "image": IMAGE,
            "host_network": True,
            "image_pull_policy": "Never",
            "kubeconfig": self.kubeconfig,
            **(config or {}),
        }
        write_kernelspec(
            self.directory, name, backend="k8s", argv=argv or LAUNCHER_ARGV, config=options, env=env
        )
        if template is not None:
            scripts = self.directory / name / "scripts"
            scripts.mkdir(exist_ok=True)
            (scripts / "kernel-pod.yaml.j2").write_text(template)
        return name

    def manager(self, name: str = "k") -> Any:
        km = kernel_manager(self.directory, name)
        self.managers.append(km)
        return km

    async def start(self, km: Any, **variables: str) -> str:
        """Start ``km`` with ``variables`` as the request's ``KERNEL_*`` values; returns the kernel id."""
        kernel_id = str(uuid.uuid4())
        self.kernel_ids.add(kernel_id)
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(**variables))
        return kernel_id

    def new_id(self) -> str:
        kernel_id = str(uuid.uuid4())
        self.kernel_ids.add(kernel_id)
        return kernel_id

    async def shutdown_all(self) -> None:
        for km in self.managers:
            if km.has_kernel:
                try:
                    await km.shutdown_kernel(now=True)
                except Exception:  # teardown goes on: leftovers are checked below
                    pass


@pytest.fixture
async def kernels(tmp_path: Path, cluster: Cluster) -> Any:
    """A :class:`Kernels`; at teardown, fails the test if any of its kernels left a pod, namespace or
    RoleBinding behind (and removes it, so one failure does not leak into the next test)."""
    if not image_present():
        require_backend(
            "k8s", f"kernel image {IMAGE} is missing (bash scripts/build-kernel-image.sh builds it)"
        )
    started = Kernels(tmp_path / "kernels", cluster.kubeconfig)
    yield started
    await started.shutdown_all()
    left = cluster.leftovers(started.kernel_ids)
    cluster.remove(started.kernel_ids)
    assert not left, f"resources left behind: {left}"


def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


class ServiceAccountKubeconfig:
    """Kubeconfigs for service accounts the test creates (a server identity with only some rights), and
    the RBAC objects granting them; all removed at teardown."""

    def __init__(self, cluster: Cluster, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self.namespaces: list[str] = []
        self.cluster_objects: list[tuple[str, str]] = []

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.cluster.core.create_namespace({"metadata": {"name": name, "labels": {"gp-test": "rbac"}}})
        self.namespaces.append(name)
        return name

    def identity(self, namespace: str, name: str = "gp-server") -> str:
        """A service account ``namespace/name``; returns a kubeconfig file that authenticates as it."""
        import base64

        self.cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        token = ""

        def has_token() -> bool:
            nonlocal token
            account = self.cluster.core.read_namespaced_service_account(name, namespace)
            for ref in account.secrets or []:
                secret = self.cluster.core.read_namespaced_secret(ref.name, namespace)
                if secret.data and "token" in secret.data:
                    token = base64.b64decode(secret.data["token"]).decode()
                    return True
            return False

        wait_until(has_token, 30, f"the token of service account {namespace}/{name}")
        admin = yaml_load(Path(self.cluster.kubeconfig).read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": admin["clusters"][0]["name"], "user": name}}],
            "current-context": name,
        }
        path = self.directory / f"{namespace}-{name}.kubeconfig"
        path.write_text(json.dumps(config))
        return str(path)

    def grant(
        self, namespace: str | None, subject_namespace: str, subject: str, rules: list[dict[str, Any]]
    ) -> None:
        """Give the service account ``rules``: in ``namespace`` (a Role), or cluster-wide (a ClusterRole)."""
        name = f"gp-test-{uuid.uuid4().hex[:8]}"
        role = {"metadata": {"name": name}, "rules": rules}
        binding = {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role" if namespace else "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": subject_namespace}],
        }
        rbac = self.cluster.rbac
        if namespace:
            rbac.create_namespaced_role(namespace, role)
            rbac.create_namespaced_role_binding(namespace, binding)
        else:
            rbac.create_cluster_role(role)
            rbac.create_cluster_role_binding(binding)
            self.cluster_objects.append(("ClusterRole", name))

    def clean_up(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for _kind, name in self.cluster_objects:
            try:
                self.cluster.rbac.delete_cluster_role_binding(name)
                self.cluster.rbac.delete_cluster_role(name)
            except ApiException:
                pass
        for name in self.namespaces:
            try:
                self.cluster.core.delete_namespace(name)
            except ApiException:
                pass


def yaml_load(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


@pytest.fixture
def identities(cluster: Cluster, tmp_path: Path) -> Any:
    made = ServiceAccountKubeconfig(cluster, tmp_path)
    yield made
    made.clean_up()
