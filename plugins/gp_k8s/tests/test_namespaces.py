"""The three namespace modes, each run by a server identity holding only the RBAC rules gp documents."""

from __future__ import annotations

import pytest
from gp_k8s._rbac import POD_RULES, automatic_rules

from gp_core import BackendError
from gp_core.testing import execute

pytestmark = pytest.mark.k8s

READ_NAMESPACE = "print(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())"


async def test_shared_mode_with_a_role_in_its_namespace_only(identities, kernels, cluster, monkeypatch):
    monkeypatch.setenv("GP_K8S_MOUNT_SERVICE_ACCOUNT_TOKEN", "true")  # a server policy
    namespace = identities.namespace("gp-shared")
    kubeconfig = identities.identity(namespace)
    identities.grant(namespace, namespace, "gp-server", POD_RULES)
    km = kernels.manager(kernels.spec(config={"kubeconfig": kubeconfig, "namespace": namespace}))
    kernel_id = await kernels.start(km)
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert pod.metadata.namespace == namespace
    output, _ = await execute(km, READ_NAMESPACE)
    assert output.strip() == namespace
    await km.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []
    assert cluster.core.read_namespace(namespace).status.phase == "Active"


async def test_bring_your_own_namespace_and_service_account(identities, kernels, cluster, monkeypatch):
    monkeypatch.setenv("GP_ALLOW_KERNEL_NAMESPACE", "true")  # a server policy
    server_ns = identities.namespace("gp-server")
    kubeconfig = identities.identity(server_ns)
    identities.grant(None, server_ns, "gp-server", POD_RULES)
    own = identities.namespace("gp-byo")
    cluster.core.create_namespaced_service_account(own, {"metadata": {"name": "analyst"}})
    km = kernels.manager(kernels.spec(config={"kubeconfig": kubeconfig}))
    kernel_id = await kernels.start(km, KERNEL_NAMESPACE=own, KERNEL_SERVICE_ACCOUNT_NAME="analyst")
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert (pod.metadata.namespace, pod.spec.service_account_name) == (own, "analyst")
    output, _ = await execute(km, READ_NAMESPACE)
    assert output.strip() == own
    await km.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []
    assert cluster.core.read_namespace(own).status.phase == "Active"  # never deleted: not gp's


async def test_a_request_cannot_pick_its_namespace_unless_allowed(kernels, monkeypatch):
    km = kernels.manager(kernels.spec())
    with pytest.raises(BackendError, match="KERNEL_NAMESPACE='kube-system' refused.*allow_kernel_namespace"):
        await kernels.start(km, KERNEL_NAMESPACE="kube-system")
    monkeypatch.setenv("GP_ALLOW_KERNEL_NAMESPACE", "true")  # a server policy
    km2 = kernels.manager(kernels.spec("k2"))
    with pytest.raises(BackendError, match="not a namespace name"):
        await kernels.start(km2, KERNEL_NAMESPACE="Bad_Name\nkind: Secret")
    monkeypatch.delenv("GP_ALLOW_KERNEL_NAMESPACE")
    km3 = kernels.manager(kernels.spec("k3"))
    with pytest.raises(BackendError, match="KERNEL_SERVICE_ACCOUNT_NAME='admin' refused"):
        await kernels.start(km3, KERNEL_SERVICE_ACCOUNT_NAME="admin")


async def test_automatic_namespace_with_rolebinding_survives_restart_and_goes_at_shutdown(
    identities, kernels, cluster
):
    server_ns = identities.namespace("gp-server")
    kubeconfig = identities.identity(server_ns)
    identities.grant(None, server_ns, "gp-server", automatic_rules("view"))
    km = kernels.manager(kernels.spec(config={"kubeconfig": kubeconfig, "shared_namespace": False}))
    kernel_id = await kernels.start(km, KERNEL_USERNAME="Dr. Ünïcode O'Brien.the.3rd")
    [namespace] = cluster.namespaces(f"kernel_id={kernel_id}")
    name = namespace.metadata.name
    assert name.startswith("dr-unicode-o-brien-the-3rd-") and name.endswith(kernel_id) and len(name) <= 63
    [binding] = cluster.role_bindings(f"kernel_id={kernel_id}")
    assert binding.metadata.namespace == name
    assert binding.role_ref.name == "view"
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", "default", name)]
    output, _ = await execute(km, READ_NAMESPACE)
    assert output.strip() == name

    # A graceful restart: jupyter_client's restart_kernel(now=True) kills with restart=False (see README)
    await km.restart_kernel()
    output, _ = await execute(km, READ_NAMESPACE + "; print(6 * 7)")
    assert output.split() == [name, "42"]
    [after] = cluster.namespaces(f"kernel_id={kernel_id}")
    assert after.metadata.uid == namespace.metadata.uid  # the same namespace, kept across the restart

    await km.shutdown_kernel()
    assert cluster.namespaces(f"kernel_id={kernel_id}") == []
    assert cluster.role_bindings(f"kernel_id={kernel_id}") == []


async def test_an_automatic_namespace_is_rolled_back_when_the_launch_fails(kernels, cluster):
    km = kernels.manager(kernels.spec(config={"shared_namespace": False, "image": "gp/no-such-image:x"}))
    with pytest.raises(BackendError, match="ErrImageNeverPull"):
        await kernels.start(km)
    assert kernels.kernel_ids
    [kernel_id] = kernels.kernel_ids
    assert cluster.namespaces(f"kernel_id={kernel_id}") == []


async def test_an_automatic_namespace_is_rolled_back_when_the_pod_is_refused(kernels, cluster):
    # requests above limits: the apiserver refuses the pod after the namespace was made
    resources = {"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}}
    km = kernels.manager(kernels.spec(config={"shared_namespace": False, "resources": resources}))
    with pytest.raises(BackendError, match="422"):
        await kernels.start(km)
    [kernel_id] = kernels.kernel_ids
    assert cluster.namespaces(f"kernel_id={kernel_id}") == []
