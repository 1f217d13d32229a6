"""The Spark flavour end to end on the test cluster: spark-submit --deploy-mode cluster from the server, the
kernel in the Spark driver pod (gp's Spark image), executors running real Spark jobs.

One kernel is shared by the module's lifecycle tests (a Spark kernel takes tens of seconds to start on the
test machine). Required in CI when GP_REQUIRED_BACKENDS names ``spark``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gp_core import BackendError, LaunchError
from gp_core.testing import execute, kernel_env, kernel_manager, require_backend, write_kernelspec

from .conftest import Cluster, _cluster_or_error

pytestmark = [pytest.mark.spark, pytest.mark.asyncio(loop_scope="module")]

SPARK_IMAGE = os.environ.get("GP_TEST_SPARK_IMAGE", "gp/kernel-py:test-spark")
SPARK_HOME = os.environ.get("GP_TEST_SPARK_HOME", "")
LAUNCHER = "local:///usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
PLACEHOLDERS = [
    "--kernel-id", "{kernel_id}", "--port-range", "{port_range}",
    "--response-address", "{response_address}", "--public-key", "{public_key}",
]  # fmt: skip
SPARK_JOB = "print(spark.range(1000).count())"
#: A Spark job long enough to be interrupted while it runs (each task sleeps).
LONG_JOB = "sc.parallelize(range(4), 2).map(lambda x: __import__('time').sleep(120) or x).count()"


def spark_argv(master: str, init_mode: str = "lazy") -> list[str]:
    return [
        f"{SPARK_HOME}/bin/spark-submit", "--master", master, "--deploy-mode", "cluster",
        LAUNCHER, *PLACEHOLDERS, "--spark-context-initialization-mode", init_mode, "--cluster-type", "spark",
    ]  # fmt: skip


def master_of(kubeconfig: str) -> str:
    import yaml

    config = yaml.safe_load(Path(kubeconfig).read_text())
    return "k8s://" + config["clusters"][0]["cluster"]["server"]


class SparkSetup:
    """A namespace of the test run with a service account the drivers create their executors as."""

    def __init__(self, cluster: Cluster, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self.namespace = f"gp-spark-test-{uuid.uuid4().hex[:8]}"
        self.kernel_ids: set[str] = set()
        core, rbac = cluster.core, cluster.rbac
        core.create_namespace({"metadata": {"name": self.namespace, "labels": {"gp-test": "spark"}}})
        core.create_namespaced_service_account(self.namespace, {"metadata": {"name": "spark"}})
        rbac.create_namespaced_role_binding(
            self.namespace,
            {
                "metadata": {"name": "spark-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": self.namespace}],
            },
        )

    def spec(self, name: str, *, config: dict[str, Any] | None = None, env: dict[str, str] | None = None,
             init_mode: str = "lazy") -> str:  # fmt: skip
        options = {
            "spark": True,
            "image": SPARK_IMAGE,
            "host_network": True,
            "image_pull_policy": "Never",
            "kubeconfig": self.cluster.kubeconfig,
            "namespace": self.namespace,
            "service_account_name": "spark",
            "spark_advertise_address": "127.0.0.1",
            "launch_timeout": 240,
            **(config or {}),
        }
        spark_env = {"SPARK_HOME": SPARK_HOME, "SPARK_OPTS": "--conf spark.executor.instances=1 "
                     "--conf spark.executor.memory=512m --conf spark.driver.memory=512m", **(env or {})}  # fmt: skip
        write_kernelspec(
            self.directory, name, backend="k8s", argv=spark_argv(master_of(self.cluster.kubeconfig), init_mode),
            config=options, env=spark_env,
        )  # fmt: skip
        return name

    async def start(self, km: Any, **variables: str) -> str:
        kernel_id = str(uuid.uuid4())
        self.kernel_ids.add(kernel_id)
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(**variables))
        return kernel_id

    def leftovers(self) -> list[str]:
        core = self.cluster.core
        found = [
            f"pod {p.metadata.name} ({p.status.phase})"
            for p in core.list_namespaced_pod(self.namespace).items
        ]
        found += [f"service {s.metadata.name}" for s in core.list_namespaced_service(self.namespace).items]
        found += [
            f"configmap {c.metadata.name}"
            for c in core.list_namespaced_config_map(self.namespace).items
            if c.metadata.name != "kube-root-ca.crt"
        ]
        return found

    def wait_clean(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def remove(self) -> None:
        self.cluster.core.delete_namespace(self.namespace)


def _prerequisites() -> Cluster | str:
    cluster = _cluster_or_error()
    if isinstance(cluster, str):
        return cluster
    if not SPARK_HOME or not Path(SPARK_HOME, "bin", "spark-submit").is_file():
        return f"GP_TEST_SPARK_HOME={SPARK_HOME!r} has no bin/spark-submit (scripts/build-spark-image.sh)"
    if subprocess.run(["docker", "image", "inspect", SPARK_IMAGE], capture_output=True).returncode:
        return f"Spark kernel image {SPARK_IMAGE} is missing (bash scripts/build-spark-image.sh builds it)"
    return cluster


@pytest.fixture(scope="module")
def spark_setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = _prerequisites()
    if isinstance(cluster, str):
        require_backend("spark", cluster)
    setup = SparkSetup(cluster, tmp_path_factory.mktemp("spark-kernels"))
    with pytest.MonkeyPatch.context() as patch:  # the module's shared kernel starts before function fixtures
        patch.setenv("GP_RESPONSE_IP", "127.0.0.1")
        patch.setenv("GP_RESPONSE_PORT", "0")
        yield setup
    setup.remove()


@pytest.fixture(autouse=True)
def _nothing_left(spark_setup: SparkSetup, request: pytest.FixtureRequest) -> Any:
    yield
    if "shared_kernel" in request.fixturenames:
        return  # the shared kernel runs on; the module's last test checks after shutting it down
    left = spark_setup.wait_clean()
    assert not left, f"left behind in {spark_setup.namespace}: {left}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_kernel(spark_setup: SparkSetup) -> Any:
    km = kernel_manager(spark_setup.directory, spark_setup.spec("spark"))
    started = time.monotonic()
    kernel_id = await spark_setup.start(km)
    km.gp_start_seconds = time.monotonic() - started
    km.gp_kernel_id = kernel_id
    yield km
    if km.has_kernel:
        await km.shutdown_kernel(now=True)


async def test_a_spark_kernel_runs_a_spark_job_with_executors(shared_kernel, spark_setup):
    km = shared_kernel
    pods = spark_setup.cluster.pods(f"kernel_id={km.gp_kernel_id}")
    [driver] = [p for p in pods if p.metadata.labels.get("spark-role") == "driver"]
    assert (
        driver.metadata.labels["component"] == "kernel" and driver.metadata.namespace == spark_setup.namespace
    )
    assert driver.spec.host_network and driver.spec.containers[0].image == SPARK_IMAGE
    output, reply = await execute(km, SPARK_JOB, timeout=180)
    assert reply["status"] == "ok", reply
    assert output.strip().splitlines()[-1] == "1000"
    output, _ = await execute(
        km, "print(spark.sparkContext.appName, spark.conf.get('spark.submit.deployMode'))"
    )
    assert output.split() == [driver.metadata.name, "client"]  # the driver runs inside its pod
    executors = spark_setup.cluster.pods(f"kernel_id={km.gp_kernel_id},component=worker")
    assert executors and all(e.metadata.labels.get("spark-role") == "executor" for e in executors)
    info = await km.provisioner.get_provisioner_info()
    assert driver.metadata.uid in json.dumps(info)  # the handle grew with the driver pod Spark made


async def test_an_interrupt_cancels_the_running_spark_job(shared_kernel):
    km = shared_kernel
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute(LONG_JOB)
        await asyncio.sleep(12)  # the job's tasks are running on the executor
        started = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await client.get_shell_msg(timeout=90)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        took = time.monotonic() - started
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "error"
    assert took < 60, f"the interrupted job ran on for {took:.0f} s (its tasks sleep 120 s)"
    output, _ = await execute(km, SPARK_JOB, timeout=120)
    assert output.strip().splitlines()[-1] == "1000"


async def test_a_restart_gives_a_new_driver_pod_and_shutdown_leaves_nothing(shared_kernel, spark_setup):
    km = shared_kernel
    before = {
        p.metadata.uid for p in spark_setup.cluster.pods(f"kernel_id={km.gp_kernel_id},component=kernel")
    }
    await km.restart_kernel(now=True)
    output, _ = await execute(km, SPARK_JOB, timeout=180)
    assert output.strip().splitlines()[-1] == "1000"
    after = {
        p.metadata.uid for p in spark_setup.cluster.pods(f"kernel_id={km.gp_kernel_id},component=kernel")
    }
    assert len(after) == 1 and not after & before
    await km.shutdown_kernel()
    assert spark_setup.cluster.pods(f"kernel_id={km.gp_kernel_id}") == []
    left = spark_setup.wait_clean()
    assert not left, f"left behind in {spark_setup.namespace}: {left}"


async def test_a_missing_image_fails_fast_with_its_reason(spark_setup):
    km = kernel_manager(
        spark_setup.directory, spark_setup.spec("bad-image", config={"image": "gp/no-such:1"})
    )
    started = time.monotonic()
    with pytest.raises(LaunchError, match="ErrImageNeverPull"):
        await spark_setup.start(km)
    assert time.monotonic() - started < 90


async def test_a_bad_spark_option_fails_fast_with_spark_submits_reason(spark_setup):
    spec = spark_setup.spec("bad-option", env={"SPARK_OPTS": "--conf spark.executor.memory=lots"})
    km = kernel_manager(spark_setup.directory, spec)
    started = time.monotonic()
    with pytest.raises(
        LaunchError, match="spark-submit .* failed .*Executor memory must be a positive number"
    ):
        await spark_setup.start(km)
    assert time.monotonic() - started < 90


@pytest.mark.parametrize(
    "opts",
    [
        "--conf spark.kubernetes.namespace=kube-system",
        "--master local[2]",
        "--conf spark.kubernetes.driver.podTemplateFile=/etc/passwd",
        "--properties-file /etc/shadow",
        "--conf 'spark.executor.memory=1g\n--conf x'",
    ],
)
async def test_hostile_extra_spark_opts_are_refused_before_anything_runs(spark_setup, opts):
    km = kernel_manager(spark_setup.directory, spark_setup.spec("hostile"))
    with pytest.raises(BackendError, match="KERNEL_EXTRA_SPARK_OPTS"):
        await spark_setup.start(km, KERNEL_EXTRA_SPARK_OPTS=opts)
