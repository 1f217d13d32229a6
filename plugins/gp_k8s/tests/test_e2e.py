"""End to end through AsyncKernelManager, each on a real kernel pod of the test cluster."""

from __future__ import annotations

import pytest

from gp_core.testing import execute, interrupt_sleep

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
