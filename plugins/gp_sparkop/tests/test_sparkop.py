"""gp-sparkop end to end: the real Spark Operator (kubeflow/spark-operator v2, scripts/start-spark-operator.sh)
turns each kernel's SparkApplication into a driver pod on the test cluster; the kernel runs Spark jobs on
real executors, is interrupted, restarted and shut down, and nothing is left behind.

One kernel is shared by the lifecycle tests (a start takes tens of seconds here). Required in CI when
GP_REQUIRED_BACKENDS names ``spark-operator``.
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
from gp_core.launcher import PLACEHOLDER_ARGS
from gp_core.testing import execute, kernel_env, kernel_manager, require_backend, write_kernelspec

pytestmark = [pytest.mark.sparkop, pytest.mark.asyncio(loop_scope="module")]

BACKEND = "spark-operator"
IMAGE = os.environ.get("GP_TEST_SPARK_IMAGE", "gp/kernel-py:test-spark")
LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
ARGV = [
    "python3",
    LAUNCHER,
    *PLACEHOLDER_ARGS,
    "--spark-context-initialization-mode",
    "lazy",
    "--cluster-type",
    "spark",
]
SPARK_JOB = "print(spark.range(1000).count())"
LONG_JOB = "sc.parallelize(range(4), 2).map(lambda x: __import__('time').sleep(120) or x).count()"
CRD = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")


class Setup:
    """A namespace of the test run, with a service account the drivers create their executors as."""

    def __init__(self, kubeconfig: str, directory: Path) -> None:
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self.directory = directory
        api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = f"gp-sparkop-test-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": self.namespace, "labels": {"gp-test": "sparkop"}}})
        self.core.create_namespaced_service_account(self.namespace, {"metadata": {"name": "spark"}})
        client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            self.namespace,
            {
                "metadata": {"name": "spark-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": self.namespace}],
            },
        )

    def spec(self, name: str, **config: Any) -> str:
        options = {
            "image": IMAGE,
            "host_network": True,
            "image_pull_policy": "Never",
            "kubeconfig": self.kubeconfig,
            "namespace": self.namespace,
            "service_account_name": "spark",
            "spark_advertise_address": "127.0.0.1",
            "driver_memory": "512m",
            "executor_memory": "512m",
            "launch_timeout": 240,
            **config,
        }
        write_kernelspec(self.directory, name, backend=BACKEND, argv=ARGV, config=options)
        return name

    async def start(self, km: Any, **variables: str) -> str:
        kernel_id = str(uuid.uuid4())
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(**variables))
        return kernel_id

    def apps(self) -> list[dict[str, Any]]:
        return list(self.custom.list_namespaced_custom_object(*CRD[:2], self.namespace, CRD[2])["items"])

    def pods(self, selector: str = "") -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def leftovers(self) -> list[str]:
        found = [f"sparkapplication {a['metadata']['name']}" for a in self.apps()]
        found += [f"pod {p.metadata.name} ({p.status.phase})" for p in self.pods()]
        found += [
            f"service {s.metadata.name}" for s in self.core.list_namespaced_service(self.namespace).items
        ]
        found += [
            f"configmap {c.metadata.name}"
            for c in self.core.list_namespaced_config_map(self.namespace).items
            if c.metadata.name != "kube-root-ca.crt"
        ]
        return found

    def wait_clean(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left


def _prerequisites() -> str | None:
    kubeconfig = os.environ.get("GP_TEST_K8S_KUBECONFIG", "")
    if not kubeconfig or not os.path.isfile(kubeconfig):
        return (
            f"GP_TEST_K8S_KUBECONFIG={kubeconfig!r} is not a kubeconfig (scripts/test.sh starts the cluster)"
        )
    root = Path(__file__).resolve().parents[3]
    if subprocess.run(["bash", str(root / "scripts/start-spark-operator.sh"), "--status"]).returncode:
        return "the Spark Operator is not running (scripts/start-spark-operator.sh starts it)"
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        return f"Spark kernel image {IMAGE} is missing (bash scripts/build-spark-image.sh builds it)"
    return None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    problem = _prerequisites()
    if problem:
        require_backend(BACKEND, problem)
    made = Setup(os.environ["GP_TEST_K8S_KUBECONFIG"], tmp_path_factory.mktemp("sparkop-kernels"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GP_RESPONSE_IP", "127.0.0.1")
        patch.setenv("GP_RESPONSE_PORT", "0")
        yield made
    made.core.delete_namespace(made.namespace)


@pytest.fixture(autouse=True)
def _nothing_left(setup: Setup, request: pytest.FixtureRequest) -> Any:
    yield
    if "shared_kernel" in request.fixturenames:
        return  # checked by the test that shuts the shared kernel down
    left = setup.wait_clean()
    assert not left, f"left behind in {setup.namespace}: {left}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_kernel(setup: Setup) -> Any:
    km = kernel_manager(setup.directory, setup.spec("sparkop"))
    km.gp_kernel_id = await setup.start(km)
    yield km
    if km.has_kernel:
        await km.shutdown_kernel(now=True)


async def test_a_sparkapplication_kernel_runs_a_spark_job(shared_kernel, setup):
    km = shared_kernel
    [app] = setup.apps()
    assert app["spec"]["type"] == "Python" and app["spec"]["mainApplicationFile"] == f"local://{LAUNCHER}"
    assert app["status"]["applicationState"]["state"] == "RUNNING"
    [driver] = setup.pods(f"kernel_id={km.gp_kernel_id},component=kernel")
    assert driver.metadata.labels["spark-role"] == "driver" and driver.spec.host_network
    assert driver.metadata.labels.get("sparkoperator.k8s.io/launched-by-spark-operator") == "true"
    output, reply = await execute(km, SPARK_JOB, timeout=180)
    assert reply["status"] == "ok", reply
    assert output.strip().splitlines()[-1] == "1000"
    assert setup.pods(f"kernel_id={km.gp_kernel_id},component=worker")  # real executors ran it
    info = await km.provisioner.get_provisioner_info()
    assert driver.metadata.uid in json.dumps(info)  # the handle grew with the operator's driver pod


async def test_an_interrupt_cancels_the_running_spark_job(shared_kernel):
    km = shared_kernel
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute(LONG_JOB)
        await asyncio.sleep(12)
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


async def test_a_restart_makes_a_new_application_and_shutdown_leaves_nothing(shared_kernel, setup):
    km = shared_kernel
    [before] = setup.apps()
    await km.restart_kernel(now=True)
    output, _ = await execute(km, SPARK_JOB, timeout=180)
    assert output.strip().splitlines()[-1] == "1000"
    [after] = setup.apps()
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    await km.shutdown_kernel()
    left = setup.wait_clean()
    assert not left, f"left behind in {setup.namespace}: {left}"


async def test_a_missing_image_fails_fast_with_its_reason(setup):
    km = kernel_manager(setup.directory, setup.spec("bad-image", image="gp/no-such:1"))
    started = time.monotonic()
    try:
        with pytest.raises(LaunchError, match="ErrImageNeverPull"):
            await setup.start(km)
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    assert time.monotonic() - started < 90


async def test_a_failing_submission_fails_fast_with_the_operators_message(setup):
    # spark-submit (run by the operator) asks the apiserver for a driver pod it refuses
    spec = setup.spec("bad-option", spark_conf="spark.kubernetes.driver.request.cores=lots")
    km = kernel_manager(setup.directory, spec)
    started = time.monotonic()
    try:
        with pytest.raises(LaunchError, match="(SUBMISSION_)?FAILED: .*spark-submit") as failure:
            await setup.start(km)
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    assert "lots" in str(failure.value)
    assert time.monotonic() - started < 90


async def test_hostile_request_values_are_inert(setup):
    km = kernel_manager(setup.directory, setup.spec("hostile"))
    value = "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\n{{ 7 * 7 }}"
    kernel_id = await setup.start(km, KERNEL_EXTRA=value, KERNEL_USERNAME="Evil.User\n{{ x }}")
    output, _ = await execute(km, "import os; print(repr(os.environ['KERNEL_EXTRA']))")
    assert output.strip() == repr(value)
    [app] = setup.apps()
    assert app["metadata"]["labels"]["kernel_id"] == kernel_id
    assert (
        setup.core.list_namespaced_secret(setup.namespace, field_selector="metadata.name=stolen").items == []
    )
    await km.shutdown_kernel()


async def test_a_bad_config_map_name_is_refused_before_anything_is_created(setup):
    km = kernel_manager(setup.directory, setup.spec("hostile-cm"))
    with pytest.raises(BackendError, match="KERNEL_SPARKAPP_CONFIG_MAP"):
        await setup.start(km, KERNEL_SPARKAPP_CONFIG_MAP="x\n  y: {z}")
    assert setup.apps() == []


async def test_a_missing_crd_is_a_clear_error(setup):
    km = kernel_manager(setup.directory, setup.spec("no-crd", crd_group="nosuch.example.com"))
    with pytest.raises(BackendError, match="Spark Operator installed"):
        await setup.start(km)
