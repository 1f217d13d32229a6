"""End to end through AsyncKernelManager, each on a real kernel pod of the test cluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from gp_core import BackendError
from gp_core.testing import adopt_kernel, check_interrupt_without_launcher, execute, interrupt_sleep

from .conftest import ROOT, wait_until

pytestmark = pytest.mark.k8s


async def test_a_kernel_runs_in_its_pod_is_interrupted_restarted_and_shut_down(kernels, cluster):
    km = kernels.manager(kernels.spec())
    kernel_id = await kernels.start(km)
    pods = cluster.pods(f"kernel_id={kernel_id}")
    assert len(pods) == 1
    pod = pods[0]
    assert pod.metadata.labels["component"] == "kernel" and pod.metadata.labels["app"] == "gp"
    output, reply = await execute(km, "import os; print(os.environ['KERNEL_POD_NAME'], os.getuid())")
    assert reply["status"] == "ok"
    assert output.split() == [pod.metadata.name, "1000"]

    reply = await interrupt_sleep(km)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"

    await km.restart_kernel(now=True)
    output, _ = await execute(km, "print(6 * 7)")
    assert output.strip() == "42"
    pods = cluster.pods(f"kernel_id={kernel_id}")
    assert len(pods) == 1 and pods[0].metadata.uid != pod.metadata.uid

    await km.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []


async def test_an_interrupt_reaches_the_kernel_through_exec_when_the_launcher_is_silent(kernels):
    km = kernels.manager(kernels.spec())
    await kernels.start(km)
    await check_interrupt_without_launcher(km)
    await km.shutdown_kernel()


async def test_hostile_request_values_are_inert_data_in_the_pod(kernels, cluster, monkeypatch):
    monkeypatch.setenv(
        "GP_K8S_ALLOWED_KINDS", "Pod,Secret"
    )  # the server's policy (kernel.json cannot widen it)
    km = kernels.manager(kernels.spec())
    value = "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\n{{ 7 * 7 }}{% raw %}"
    username = "Ünïcode.User " + "z" * 280
    kernel_id = await kernels.start(km, KERNEL_EXTRA=value, KERNEL_USERNAME=username)
    output, _ = await execute(
        km, "import os, json; print(json.dumps([os.environ['KERNEL_EXTRA'], os.environ['KERNEL_USERNAME']]))"
    )
    assert json.loads(output) == [value, username]
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert len(pod.metadata.name) <= 63 and pod.metadata.name.endswith(kernel_id)
    assert cluster.core.list_namespaced_secret("default", field_selector="metadata.name=stolen").items == []
    await km.shutdown_kernel()


@pytest.mark.parametrize("uid", ["0", "00", " 0", "+0"])
async def test_a_root_uid_in_any_spelling_is_refused_before_anything_is_created(kernels, cluster, uid):
    km = kernels.manager(kernels.spec())
    with pytest.raises(BackendError, match="KERNEL_UID.*refused"):
        await kernels.start(km, KERNEL_UID=uid)
    [kernel_id] = kernels.kernel_ids
    assert cluster.pods(f"kernel_id={kernel_id}") == []


async def test_options_are_accepted_by_the_apiserver(kernels, cluster):
    config = {
        "node_selector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "gp-test", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}}
        ]}},
        "image_pull_secrets": ["gp-test-pull-secret"],
        "extra_labels": {"team": "data"},
        "extra_annotations": {"sidecar.istio.io/inject": "false"},
        # memory only: the node's CPU may be fully requested by other pods (its 2 cores are shared)
        "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "max_resources": {"cpu": "1", "memory": "1Gi"},
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "volume_mounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "working_dir": "/scratch",
    }  # fmt: skip
    km = kernels.manager(kernels.spec(config=config))
    kernel_id = await kernels.start(km, KERNEL_MEMORY="200Mi")
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert pod.spec.node_selector == {"kubernetes.io/os": "linux"}
    assert pod.metadata.labels["team"] == "data"
    assert pod.spec.containers[0].resources.requests == {"memory": "200Mi"}
    output, _ = await execute(km, "import os; print(os.getcwd(), os.access('/scratch', os.W_OK))")
    assert output.split() == ["/scratch", "True"]
    await km.shutdown_kernel()


async def test_a_second_manager_adopts_the_running_kernel(kernels, cluster):
    name = kernels.spec()
    km = kernels.manager(name)
    kernel_id = await kernels.start(km)
    await execute(km, "x = 'set before adoption'")
    info = await km.provisioner.get_provisioner_info()
    adopted = await adopt_kernel(kernels.directory, name, json.loads(json.dumps(info)))
    kernels.managers.append(adopted)
    assert await adopted.is_alive()
    output, _ = await execute(adopted, "print(x)")
    assert output.strip() == "set before adoption"
    reply = await interrupt_sleep(adopted)
    assert reply["ename"] == "KeyboardInterrupt"
    await adopted.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []
    assert not await km.is_alive()


def _apiserver(action: str) -> None:
    script = ROOT / "scripts" / ("stop-k8s.sh" if action == "stop" else "start-k8s.sh")
    env = {**os.environ}
    if os.environ.get("GP_TEST_K8S_STATE"):
        env["GP_K8S_STATE"] = os.environ["GP_TEST_K8S_STATE"]
    subprocess.run(
        ["bash", str(script), "--apiserver"], check=True, env=env, capture_output=True, timeout=120
    )


async def test_an_apiserver_outage_makes_the_status_unknown_not_dead(kernels, cluster):
    km = kernels.manager(kernels.spec())
    kernel_id = await kernels.start(km)
    await asyncio.to_thread(_apiserver, "stop")
    try:
        for _ in range(6):  # several poll intervals, through the watch failing and the lists failing
            assert await km.is_alive()
            await asyncio.sleep(0.5)
        output, _ = await execute(km, "print('still here')")  # the kernel itself does not need the API
        assert output.strip() == "still here"
    finally:
        await asyncio.to_thread(_apiserver, "start")
    wait_until(lambda: cluster.pods(f"kernel_id={kernel_id}") != [], 60, "the apiserver to answer again")
    assert await km.is_alive()
    await km.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []


async def test_ten_launch_terminate_cycles_leave_nothing(kernels, cluster):
    name = kernels.spec(config={"shared_namespace": False})
    for _ in range(10):
        km = kernels.manager(name)
        kernel_id = await kernels.start(km)
        output, _ = await execute(km, "print(1)")
        assert output.strip() == "1"
        await km.shutdown_kernel()
        assert cluster.leftovers({kernel_id}) == []
    assert cluster.leftovers(kernels.kernel_ids) == []
