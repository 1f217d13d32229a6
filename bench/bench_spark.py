"""Spark kernel start time on the test cluster, both paths: gp-k8s's Spark flavour (spark-submit --deploy-mode
cluster from the server) and gp-sparkop (a SparkApplication the Spark Operator submits), with the breakdown:

- submitted: start_kernel called -> the driver pod exists (its creationTimestamp): spark-submit's JVM and
  its API calls (k8s --spark), or the operator noticing the application and running spark-submit (sparkop);
- scheduled: -> the pod's PodScheduled condition;
- JVM up: -> the driver container started (the image's entrypoint runs spark-submit in client mode in the pod);
- kernel reported: -> start_kernel returned (the launcher, started by the driver's PythonRunner, reported);
- first reply: -> the first execute_reply.

Kubernetes timestamps have 1 s resolution: the pod phases are rounded accordingly.

    .venv/bin/python bench/bench_spark.py --runs 3 [--no-operator]

gateway_provisioners 0.5.0's Spark flavour is not run side by side: see the note printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import first_reply

from gp_core.launcher import PLACEHOLDER_ARGS
from gp_core.testing import kernel_env, kernel_manager, write_kernelspec

LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
SPARK_ARGS = ["--spark-context-initialization-mode", "lazy", "--cluster-type", "spark"]


def _clients(kubeconfig: str) -> tuple[Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    return client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)


def make_namespace(core: Any, rbac: Any) -> str:
    name = f"gp-spark-bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gp-test": "spark-bench"}}})
    core.create_namespaced_service_account(name, {"metadata": {"name": "spark"}})
    rbac.create_namespaced_role_binding(
        name,
        {
            "metadata": {"name": "spark-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": name}],
        },
    )
    return name


def write_specs(kernels: Path, kubeconfig: str, namespace: str, image: str, spark_home: str) -> None:
    import yaml

    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    common = {
        "image": image, "host_network": True, "image_pull_policy": "Never", "kubeconfig": kubeconfig,
        "namespace": namespace, "service_account_name": "spark", "spark_advertise_address": "127.0.0.1",
        "launch_timeout": 300,
    }  # fmt: skip
    argv = [
        f"{spark_home}/bin/spark-submit", "--master", f"k8s://{server}", "--deploy-mode", "cluster",
        f"local://{LAUNCHER}", *PLACEHOLDER_ARGS, *SPARK_ARGS,
    ]  # fmt: skip
    env = {
        "SPARK_HOME": spark_home,
        "SPARK_OPTS": "--conf spark.executor.instances=1 --conf spark.driver.memory=512m",
    }
    write_kernelspec(
        kernels, "k8s-spark", backend="k8s", argv=argv, config={"spark": True, **common}, env=env
    )
    write_kernelspec(
        kernels, "sparkop", backend="spark-operator", argv=["python3", LAUNCHER, *PLACEHOLDER_ARGS, *SPARK_ARGS],
        config={**common, "driver_memory": "512m", "executor_memory": "512m"},
    )  # fmt: skip


def _seconds(stamp: Any, origin: float) -> float | None:
    if stamp is None:
        return None
    if isinstance(stamp, str):
        stamp = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return stamp.timestamp() - origin


async def one_start(kernels: Path, name: str, core: Any, namespace: str) -> dict[str, float | None]:
    km = kernel_manager(kernels, name)
    kernel_id = str(uuid.uuid4())
    wall = time.time()
    started = time.perf_counter()
    try:
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
        reported = time.perf_counter() - started
        client = km.client()
        client.start_channels()
        try:
            await first_reply(client, False)
        finally:
            client.stop_channels()
        replied = time.perf_counter() - started
        [pod] = core.list_namespaced_pod(
            namespace, label_selector=f"kernel_id={kernel_id},component=kernel"
        ).items
        scheduled = next(
            (c.last_transition_time for c in pod.status.conditions or [] if c.type == "PodScheduled"), None
        )
        running = pod.status.container_statuses[0].state.running
        return {
            "submitted": _seconds(pod.metadata.creation_timestamp, wall),
            "scheduled": _seconds(scheduled, wall),
            "jvm_up": _seconds(running.started_at if running else None, wall),
            "kernel_reported": reported,
            "first_reply": replied,
        }
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


def summary(rows: list[dict[str, float | None]]) -> str:
    keys = ["submitted", "scheduled", "jvm_up", "kernel_reported", "first_reply"]
    parts = []
    for key in keys:
        values = [row[key] for row in rows if row[key] is not None]
        parts.append(f"{key} {statistics.median(values):5.1f}" if values else f"{key}   n/a")  # type: ignore[type-var]
    return "  ".join(parts)


async def main(args: argparse.Namespace) -> None:
    core, rbac = _clients(args.kubeconfig)
    namespace = make_namespace(core, rbac)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kernels = Path(tmp)
            write_specs(kernels, args.kubeconfig, namespace, args.image, args.spark_home)
            paths = ["k8s-spark"] + ([] if args.no_operator else ["sparkop"])
            results: dict[str, list[dict[str, float | None]]] = {path: [] for path in paths}
            for run in range(args.runs):  # interleaved: the machine's noise hits both paths alike
                for path in paths:
                    row = await one_start(kernels, path, core, namespace)
                    results[path].append(row)
                    print(
                        f"run {run + 1} {path:9s} "
                        + "  ".join(f"{k} {v:5.1f}" for k, v in row.items() if v is not None)
                    )
            print(f"\nmedians of {args.runs} runs, seconds since start_kernel (pod stamps: 1 s resolution)")
            for path, rows in results.items():
                print(f"{path:9s} {summary(rows)}")
            if len(paths) == 2:
                ratio = statistics.median(
                    r["kernel_reported"] for r in results["sparkop"]
                ) / statistics.median(  # type: ignore[type-var]
                    r["kernel_reported"] for r in results["k8s-spark"]
                )
                print(f"sparkop / k8s-spark start ratio: {ratio:.2f}")
    finally:
        core.delete_namespace(namespace)
    print(
        "\nanchor (gateway_provisioners 0.5.0 k8s_python_spark): not run. Its kernelspec's run.sh submits with "
        "--master k8s://https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT} into an image whose "
        "entrypoint is Spark's own plus the anchor's bootstrap-kernel.sh (elyra/kernel-spark-py, not buildable "
        "here without a registry), with no way to give the driver hostNetwork, a loopback advertise address or "
        "free ports; its driver would report the node's address, which the test rules forbid."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("GP_TEST_K8S_KUBECONFIG", ""))
    parser.add_argument("--image", default=os.environ.get("GP_TEST_SPARK_IMAGE", "gp/kernel-py:test-spark"))
    parser.add_argument("--spark-home", default=os.environ.get("GP_TEST_SPARK_HOME", ""))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-operator", action="store_true", help="only the k8s --spark path")
    args = parser.parse_args()
    args.kubeconfig = os.path.abspath(args.kubeconfig)
    os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
    os.environ.setdefault("GP_RESPONSE_PORT", "0")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
