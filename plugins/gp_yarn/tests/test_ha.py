"""End to end on the test YARN's HA pair (two ResourceManagers, manual failover, recovery from a shared
state store): the kernel's RM is found from HADOOP_CONF_DIR's yarn-site.xml (both rm-ids), a failover while
the kernel runs is followed, and a moment without any active RM is "status unknown", never "dead".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from gp_yarn import _apps
from gp_yarn._options import YarnOptions

from gp_core.testing import execute, kernel_env, kernel_manager

from .conftest import close_listener, control, install_spec, rm_get, submit_processes

pytestmark = [pytest.mark.yarn, pytest.mark.asyncio(loop_scope="module")]


def active_app(endpoints: list[str], app_id: str) -> dict[str, Any]:
    for endpoint in endpoints:
        info = rm_get(endpoint, "/ws/v1/cluster/info")["clusterInfo"]
        if info["haState"] == "ACTIVE":
            return rm_get(endpoint, f"/ws/v1/cluster/apps/{app_id}")["app"]
    raise AssertionError("no active ResourceManager")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ha_kernel(yarn_ha: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    directory = tmp_path_factory.mktemp("yarn-ha-specs")
    # No yarn_endpoint: the RMs come from the HA pair's yarn-site.xml (hadoop_conf_dir).
    specs = install_spec(
        directory, "yarn_ha", yarn_ha, endpoint=False, config={"hadoop_conf_dir": yarn_ha["conf_dir"]}
    )
    km = kernel_manager(specs, "yarn_ha")
    await km.start_kernel(kernel_id=str(uuid.uuid4()), env=kernel_env())
    try:
        yield km
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
        await close_listener()
        # Leave rm0 active for the next run.
        control(yarn_ha["controls"][1], "standby")
        control(yarn_ha["controls"][0], "active")


async def test_kernel_found_through_hadoop_conf_dir(yarn_ha: dict[str, Any], ha_kernel: Any) -> None:
    handle = (await ha_kernel.provisioner.get_provisioner_info())["handle"]
    assert handle["endpoints"] == yarn_ha["endpoints"]
    assert active_app(yarn_ha["endpoints"], handle["app_id"])["name"] == ha_kernel.kernel_id
    output, reply = await execute(ha_kernel, "print(spark.range(100).count())", timeout=180)
    assert reply["status"] == "ok" and output.strip() == "100"


async def test_failover_while_the_kernel_runs(yarn_ha: dict[str, Any], ha_kernel: Any) -> None:
    rm0, rm1 = yarn_ha["controls"]
    handle = (await ha_kernel.provisioner.get_provisioner_info())["handle"]
    assert control(rm0, "standby") == "standby"
    assert control(rm1, "active") == "active"
    # The new active RM recovered the application from the state store; the kernel goes on.
    assert active_app(yarn_ha["endpoints"], handle["app_id"])["state"] in ("ACCEPTED", "RUNNING")
    for _ in range(5):
        assert await ha_kernel.provisioner.poll() is None
        await asyncio.sleep(0.5)
    options = YarnOptions(hadoop_conf_dir=yarn_ha["conf_dir"])
    assert _apps.rm_for(options).client.active_endpoint == yarn_ha["endpoints"][1]
    output, reply = await execute(ha_kernel, "print(spark.range(50).count())", timeout=180)
    assert reply["status"] == "ok" and output.strip() == "50"


async def test_no_active_resourcemanager_is_status_unknown_not_dead(
    yarn_ha: dict[str, Any], ha_kernel: Any
) -> None:
    rm1 = yarn_ha["controls"][1]
    assert control(rm1, "standby") == "standby"  # now neither RM is active: an RM outage for clients
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert await ha_kernel.provisioner.poll() is None  # unknown: taken as alive
            await asyncio.sleep(0.5)
        assert await ha_kernel.is_alive()
    finally:
        assert control(rm1, "active") == "active"
    output, reply = await execute(ha_kernel, "print(6 * 7)")
    assert reply["status"] == "ok" and output.strip() == "42"


async def test_shutdown_through_the_active_resourcemanager(yarn_ha: dict[str, Any], ha_kernel: Any) -> None:
    handle = (await ha_kernel.provisioner.get_provisioner_info())["handle"]
    await ha_kernel.shutdown_kernel()
    app = active_app(yarn_ha["endpoints"], handle["app_id"])
    assert app["state"] in ("FINISHED", "KILLED")
    deadline = time.monotonic() + 30
    while submit_processes(ha_kernel.kernel_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert submit_processes(ha_kernel.kernel_id) == []
    assert list(Path(yarn_ha["staging_dir"]).glob(f"*/.sparkStaging/{handle['app_id']}")) == []
