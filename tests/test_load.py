"""Many kernels at once through one AsyncMultiKernelManager, as a Jupyter server starts them: all succeed,
each with its own connection info, and nothing is left behind (issue: gp under load)."""

from __future__ import annotations

import asyncio
import os

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from gp_core.testing import execute, kernel_env, write_kernelspec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def manager(tmp_path) -> AsyncMultiKernelManager:
    write_kernelspec(tmp_path, "gp-local", backend="local", config={"launch_timeout": 120})
    return AsyncMultiKernelManager(kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path)]))


async def _run(manager: AsyncMultiKernelManager, kernel_id: str) -> str:
    output, reply = await execute(manager.get_kernel(kernel_id), "import os; print(os.getpid())", timeout=120)
    assert reply["status"] == "ok", reply
    return output.strip()


async def test_twenty_kernels_launched_at_once_all_start_on_their_own_ports(manager):
    kernel_ids = await asyncio.gather(
        *(manager.start_kernel(kernel_name="gp-local", env=kernel_env()) for _ in range(20))
    )
    try:
        assert len(set(kernel_ids)) == 20
        infos = [manager.get_kernel(k).get_connection_info() for k in kernel_ids]
        ports = [info[name] for info in infos for name in ("shell_port", "iopub_port", "control_port")]
        assert len(set(ports)) == len(ports)  # no two kernels share a port
        assert len({bytes(info["key"]) for info in infos}) == 20
        pids = await asyncio.gather(*(_run(manager, k) for k in kernel_ids))
        assert len(set(pids)) == 20
    finally:
        await manager.shutdown_all(now=True)
    assert not any(_alive(int(pid)) for pid in pids)
    assert manager.list_kernel_ids() == []


async def test_a_hundred_launches_in_batches_of_five_fail_none_and_leave_nothing(manager):
    pids: list[int] = []
    for _ in range(20):
        batch = await asyncio.gather(
            *(manager.start_kernel(kernel_name="gp-local", env=kernel_env()) for _ in range(5))
        )
        pids += [manager.get_kernel(k).provisioner._handle["pid"] for k in batch]  # type: ignore[union-attr]
        await asyncio.gather(*(manager.shutdown_kernel(k, now=True) for k in batch))
    assert len(set(pids)) == 100
    assert not any(_alive(pid) for pid in pids)
    assert manager.list_kernel_ids() == []
