"""End to end on the test YARN: real kernels are YARN applications (spark-submit --deploy-mode cluster),
started through AsyncKernelManager, with gp's launcher in the application master's container.

A Spark kernel takes tens of seconds to start on two cores, so the module shares one kernel between the
tests that allow it (in file order: run a Spark job, hostile values, interrupt, adoption, restart, killed
from outside); the failure cases and the launch/terminate cycles start their own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gp_core import BackendError, LaunchError
from gp_core.testing import adopt_kernel, execute, kernel_env, kernel_manager

from .conftest import (
    alive_apps,
    apps_named,
    close_listener,
    install_spec,
    kill_app,
    rm_get,
    staging_left,
    submit_processes,
)

pytestmark = [pytest.mark.yarn, pytest.mark.asyncio(loop_scope="module")]

SPEC = "yarn_spark_test"


async def handle_of(km: Any) -> dict[str, Any]:
    return dict((await km.provisioner.get_provisioner_info())["handle"])


def app_state(endpoint: str, app_id: str) -> dict[str, Any]:
    return rm_get(endpoint, f"/ws/v1/cluster/apps/{app_id}")["app"]


async def wait_final(endpoint: str, app_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        app = app_state(endpoint, app_id)
        if app["state"] in ("FINISHED", "FAILED", "KILLED") or time.monotonic() > deadline:
            return app
        await asyncio.sleep(0.5)


def assert_nothing_left(yarn: dict[str, Any], kernel_id: str, log_dir: Path) -> None:
    """No live application named after the kernel, no local process naming it (spark-submit, or the AM's
    container, which the NodeManager reaps a moment after the application ended), no staging, no files."""
    live = [app["id"] for app in alive_apps(yarn["endpoint"]) if app["name"] == kernel_id]
    assert live == [], f"applications of kernel {kernel_id} still alive: {live}"
    deadline = time.monotonic() + 30
    while submit_processes(kernel_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert submit_processes(kernel_id) == [], "processes naming the kernel are still running"
    for app in apps_named(yarn["endpoint"], kernel_id):
        assert staging_left(yarn["staging_dir"], app["id"]) == []
    assert [p.name for p in log_dir.glob(f"gp-yarn-{kernel_id}*")] == []


@pytest.fixture(scope="module")
def specs(yarn: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("yarn-specs")
    kernels = install_spec(directory, SPEC, yarn)
    install_spec(directory, "yarn_plain", yarn, init_mode="none")
    return kernels


@pytest.fixture(scope="module")
def log_dir(specs: Path) -> Path:
    return specs.parent.parent.parent / "logs"


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary")


def hostile_values(canary: Path) -> dict[str, str]:
    return {
        "KERNEL_SUBST": f"$(touch {canary}/subst)",
        "KERNEL_BACKTICK": f"`touch {canary}/backtick`",
        "KERNEL_SEMICOLON": f"x; touch {canary}/semicolon",
        "KERNEL_QUOTES": 'it\'s "quoted" \\\' \\" = : # !',
        "KERNEL_NEWLINE": f"one\ntouch {canary}/newline\nspark.yarn.appMasterEnv.KERNEL_ID=forged",
        "KERNEL_GLOB": "/*",
        "KERNEL_UNICODE": "héllo wörld ✓",
        # What the NodeManager itself expands in container environments.
        "KERNEL_YARN_MARKERS": "{{PWD}} <CPS> {{ }} $PWD ${HOME}",
        "KERNEL_QUEUE": "gp",
        # Data for spark-submit: --conf values with shell syntax and a glob stay literal.
        "KERNEL_EXTRA_SPARK_OPTS": f"--conf 'spark.gp.subst=$(touch {canary}/conf)' --conf spark.gp.glob=* "
        "--executor-memory 512m",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(yarn: dict[str, Any], specs: Path, canary: Path) -> AsyncIterator[Any]:
    """One Spark kernel on YARN for the tests that can share it, started with hostile KERNEL_* values."""
    km = kernel_manager(specs, SPEC)
    await km.start_kernel(kernel_id=str(uuid.uuid4()), env=kernel_env(**hostile_values(canary)))
    try:
        yield km
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
        await close_listener()


async def test_spark_job_runs_in_a_yarn_application(yarn: dict[str, Any], shared: Any) -> None:
    handle = await handle_of(shared)
    kernel_id = shared.kernel_id
    app = app_state(yarn["endpoint"], handle["app_id"])
    # RUNNING once the AM registered, i.e. once the kernel's SparkSession (created lazily) is up.
    assert app["name"] == kernel_id and app["state"] in ("ACCEPTED", "RUNNING")
    assert app["applicationType"] == "SPARK" and app["queue"] in ("gp", "root.gp")
    assert shared.provisioner.connection_info["ip"] == handle["ip"] == "127.0.0.1"
    code = (
        "import os\n"
        "print(spark.range(1000).count(), spark.sparkContext.master, spark.conf.get('spark.submit.deployMode'))\n"
        "print(os.environ['KERNEL_ID'], os.environ.get('CONTAINER_ID', '').startswith('container_'))\n"
    )
    output, reply = await execute(shared, code, timeout=180)
    assert reply["status"] == "ok", output
    assert output.split() == ["1000", "yarn", "cluster", kernel_id, "True"]


async def test_hostile_kernel_values_are_data(shared: Any, canary: Path) -> None:
    expected = hostile_values(canary)
    names = [n for n in expected if n not in ("KERNEL_EXTRA_SPARK_OPTS",)]
    code = (
        "import os, json\n"
        f"print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))\n"
        "print(json.dumps([spark.conf.get('spark.gp.subst'), spark.conf.get('spark.gp.glob'), os.environ['KERNEL_ID']]))\n"
    )
    output, reply = await execute(shared, code, timeout=120)
    assert reply["status"] == "ok", output
    env_line, conf_line = output.strip().splitlines()
    assert json.loads(env_line) == {n: expected[n] for n in names}
    assert json.loads(conf_line) == [f"$(touch {canary}/conf)", "*", shared.kernel_id]
    assert list(canary.iterdir()) == []  # nothing ran any of it


async def test_interrupt_cancels_a_running_spark_job(shared: Any) -> None:
    client = shared.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        # A job of 60 slow tasks (a minute on the one executor core): the interrupt must cancel it.
        msg_id = client.execute(
            "import time\nsc.setJobGroup('gp-test', 'slow')\n"
            "sc.parallelize(range(60), 60).map(lambda x: time.sleep(1) or x).sum()"
        )
        while True:
            msg = await client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
                break
        await asyncio.sleep(8)  # the job's tasks are running by now (the executor is up since the first test)
        await shared.interrupt_kernel()
        while True:
            reply = await client.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    # The cell ends in an error (KeyboardInterrupt, the cancelled job's Py4JJavaError, or py4j's own
    # AttributeError while it handles the KeyboardInterrupt, depending on where the signal lands).
    assert reply["content"]["status"] == "error", reply["content"]
    output, _ = await execute(
        shared, "print(len(sc.statusTracker().getActiveJobsIds()), spark.range(10).count())"
    )
    assert output.split() == ["0", "10"]  # the job is gone, Spark still works


async def test_adoption_by_a_second_manager(yarn: dict[str, Any], specs: Path, shared: Any) -> None:
    info = await shared.provisioner.get_provisioner_info()
    assert info["handle"]["app_id"].startswith("application_")
    other = await adopt_kernel(specs, SPEC, info)
    assert await other.provisioner.poll() is None
    output, reply = await execute(other, "print(spark.range(7).count())", timeout=120)
    assert reply["status"] == "ok" and output.strip() == "7"


async def test_restart_is_a_new_application(yarn: dict[str, Any], shared: Any, log_dir: Path) -> None:
    before = await handle_of(shared)
    await shared.restart_kernel(now=False)
    after = await handle_of(shared)
    assert after["app_id"] != before["app_id"]
    old = await wait_final(yarn["endpoint"], before["app_id"])
    assert old["state"] in ("FINISHED", "KILLED")
    assert staging_left(yarn["staging_dir"], before["app_id"]) == []
    output, reply = await execute(shared, "print(spark.range(1000).count())", timeout=180)
    assert reply["status"] == "ok" and output.strip() == "1000"


async def test_killed_from_outside_is_reported_dead(yarn: dict[str, Any], shared: Any, log_dir: Path) -> None:
    handle = await handle_of(shared)
    await asyncio.to_thread(kill_app, yarn["endpoint"], handle["app_id"])
    assert (await wait_final(yarn["endpoint"], handle["app_id"]))["state"] == "KILLED"
    deadline = time.monotonic() + 30
    while await shared.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert not await shared.is_alive()
    await shared.shutdown_kernel(now=True)
    assert_nothing_left(yarn, shared.kernel_id, log_dir)


async def test_failed_submission_fails_fast_with_its_output(specs: Path) -> None:
    km = kernel_manager(specs, "yarn_plain")
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        # More memory than any node has: spark-submit refuses it before an application exists.
        await km.start_kernel(env=kernel_env(KERNEL_EXTRA_SPARK_OPTS="--driver-memory 900g"))
    message = str(caught.value)
    assert "spark-submit" in message and "exited with status" in message
    assert "above the max threshold" in message or "memory" in message.lower()
    assert time.monotonic() - started < 60  # not the 150 s launch timeout


async def test_bad_queue_fails_fast_with_its_reason(yarn: dict[str, Any], specs: Path, log_dir: Path) -> None:
    km = kernel_manager(specs, "yarn_plain")
    kernel_id = str(uuid.uuid4())
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(KERNEL_QUEUE="nosuchqueue"))
    assert "nosuchqueue" in str(caught.value)
    assert time.monotonic() - started < 60
    assert_nothing_left(yarn, kernel_id, log_dir)


async def test_application_failing_during_startup_reports_diagnostics(
    yarn: dict[str, Any], specs: Path, log_dir: Path
) -> None:
    km = kernel_manager(specs, "yarn_plain")
    kernel_id = str(uuid.uuid4())
    with pytest.raises(LaunchError) as caught:
        # The AM starts, but its python does not exist: the application FAILS during start-up.
        await km.start_kernel(
            kernel_id=kernel_id,
            env=kernel_env(
                KERNEL_EXTRA_SPARK_OPTS="--conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=/nonexistent/python"
            ),
        )
    message = str(caught.value)
    assert "FAILED" in message and "application_" in message
    assert_nothing_left(yarn, kernel_id, log_dir)


async def test_refused_extra_spark_opts_start_nothing(specs: Path, log_dir: Path) -> None:
    km = kernel_manager(specs, "yarn_plain")
    for hostile in ("--proxy-user root", "--files /etc/shadow", "--conf spark.yarn.keytab=/etc/krb5.keytab"):
        with pytest.raises(BackendError, match="KERNEL_EXTRA_SPARK_OPTS"):
            await km.start_kernel(env=kernel_env(KERNEL_EXTRA_SPARK_OPTS=hostile))
    assert list(log_dir.glob("gp-yarn-*")) == []


async def test_launch_terminate_cycles_leave_nothing(
    yarn: dict[str, Any], specs: Path, log_dir: Path
) -> None:
    kernel_ids: list[str] = []

    async def cycle() -> None:
        km = kernel_manager(specs, "yarn_plain")
        kernel_id = str(uuid.uuid4())
        kernel_ids.append(kernel_id)
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
        output, reply = await execute(km, "print(6 * 7)")
        assert reply["status"] == "ok" and output.strip() == "42"
        await km.shutdown_kernel()

    for _ in range(2):  # 10 kernels, five at a time (application masters only: 5 x 896 MB of the 6 GB)
        await asyncio.gather(*(cycle() for _ in range(5)))
    assert len(kernel_ids) == 10
    for kernel_id in kernel_ids:
        assert_nothing_left(yarn, kernel_id, log_dir)
        assert len(apps_named(yarn["endpoint"], kernel_id)) == 1
