"""Pools of parked pods (pool_size): a launch takes a parked pod when one of its exact shape is ready."""

from __future__ import annotations

import asyncio
import json

import pytest
from gp_k8s import _pool

from gp_core.testing import execute, interrupt_sleep

pytestmark = pytest.mark.k8s


@pytest.fixture
async def pools(cluster):
    yield
    await asyncio.to_thread(_pool.close_pools)
    assert cluster.pods("component=kernel-pool,app=gp") == [] or all(
        p.metadata.deletion_timestamp for p in cluster.pods("component=kernel-pool,app=gp")
    )


async def _settled(timeout: float = 60) -> None:
    for _ in range(int(timeout * 10)):
        if _pool.pools_settled():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the pool did not fill")


async def test_a_pooled_launch_is_an_ordinary_kernel_with_the_requests_own_env(kernels, cluster, pools):
    name = kernels.spec(config={"pool_size": 1})
    first = kernels.manager(name)
    await kernels.start(first)  # cold: the pool is empty, and starts filling
    await _settled()
    [parked] = cluster.pods("component=kernel-pool,app=gp")
    km = kernels.manager(name)
    hostile = "x\n---\nkind: Secret {{ 1 }}"
    kernel_id = await kernels.start(km, KERNEL_EXTRA=hostile, KERNEL_UID="1000")
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert pod.metadata.name == parked.metadata.name and pod.metadata.uid == parked.metadata.uid
    assert pod.metadata.labels["component"] == "kernel"
    output, _ = await execute(
        km,
        "import os, json; print(json.dumps([os.environ['KERNEL_EXTRA'], os.environ['KERNEL_ID'], os.getuid()]))",
    )
    assert json.loads(output) == [hostile, kernel_id, 1000]
    reply = await interrupt_sleep(km)
    assert reply["ename"] == "KeyboardInterrupt"
    await km.shutdown_kernel()
    assert cluster.pods(f"kernel_id={kernel_id}") == []
    await first.shutdown_kernel()


async def test_a_parked_pod_that_died_is_never_served(kernels, cluster, pools):
    name = kernels.spec(config={"pool_size": 1})
    first = kernels.manager(name)
    await kernels.start(first)
    await _settled()
    [parked] = cluster.pods("component=kernel-pool,app=gp")
    cluster.core.delete_namespaced_pod(
        parked.metadata.name, parked.metadata.namespace, grace_period_seconds=0
    )
    km = kernels.manager(name)
    kernel_id = await kernels.start(km)
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert pod.metadata.uid != parked.metadata.uid
    output, _ = await execute(km, "print(2 + 2)")
    assert output.strip() == "4"
    await km.shutdown_kernel()
    await first.shutdown_kernel()


async def test_a_launch_of_another_shape_does_not_take_the_parked_pod(kernels, cluster, pools):
    name = kernels.spec(config={"pool_size": 1})
    first = kernels.manager(name)
    await kernels.start(first)
    await _settled()
    [parked] = cluster.pods("component=kernel-pool,app=gp")
    km = kernels.manager(name)
    kernel_id = await kernels.start(km, KERNEL_UID="1234", KERNEL_GID="1234")  # another user: not that pod
    [pod] = cluster.pods(f"kernel_id={kernel_id}")
    assert pod.metadata.uid != parked.metadata.uid
    output, _ = await execute(km, "import os; print(os.getuid())")
    assert output.strip() == "1234"
    await km.shutdown_kernel()
    await first.shutdown_kernel()
