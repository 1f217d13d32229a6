"""gp-yarn benchmarks against the test YARN (``bash scripts/start-yarn.sh``); ratios and counts, no asserts.

1. Start latency of a Spark kernel on YARN (``spark-submit --master yarn --deploy-mode cluster``), start
   request -> first execute_reply, with its breakdown from the RM's point of view (a watcher reads the
   RM REST API every 0.1 s, on its own connection, not counted below):
   submit     start request -> the application exists in the RM (its ``startedTime``): spark-submit's JVM
   accepted   -> first seen ACCEPTED (the scheduler took it)
   AM up      -> first seen with an ``amHostHttpAddress`` (the AM's container is allocated and launching)
   reported   -> ``start_kernel()`` returned (gp's launcher in the AM reported its connection info)
   reply      -> first execute_reply
   registered -> the application RUNNING (the AM registered: with lazy init, the SparkSession came up in
                 the background, usually after the kernel reported)
   Median of N runs (``--runs``), kernels with ``--spark-context-initialization-mode lazy``.
2. RM requests per poll interval with 1 and with 10 running kernels: every kernel is polled once per
   ``status_interval`` (1 s, as jupyter_server's restarter would, all at once), for ``--intervals``
   intervals; gp's RM client counts its HTTP requests. gp shares one listing per interval between all the
   kernels; the anchor (gateway_provisioners 0.5.0) makes one ``GET /apps/<id>`` per kernel per poll.

3. With ``--anchor-python V/bin/python`` (``python -m venv V && V/bin/pip install
   gateway_provisioners==0.5.0 yarn-api-client ipykernel``): gateway_provisioners 0.5.0's YarnProvisioner
   on the same minicluster, its runs interleaved with gp's in row 1 (start request -> first reply), and its
   RM requests per poll interval for one kernel (its yarn-api-client requests counted in its runner). Its
   kernelspec comes from its own ``jupyter yarn-spec install`` (without ``--yarn-endpoint`` and with
   ``GP_YARN_ENDPOINT`` unset while it runs: either leaves ``${...}`` placeholders behind; the endpoint is
   given as ``GP_YARN_ENDPOINT`` to the provisioner), with the same Spark
   options (plus ``--py-files`` for the ``server_listener.py`` its launcher imports, which cluster mode
   does not ship otherwise); its ``run.sh`` ``eval``s SPARK_OPTS, so the jars glob is quoted for it.

``python bench/bench_yarn.py [--runs N] [--intervals N] [--kernels 10] [--anchor-python P]``; needs
``GP_TEST_YARN_ENDPOINT``, ``GP_TEST_YARN_CONF_DIR``, ``GP_TEST_SPARK_HOME``, ``GP_TEST_PYTHON`` (as
``scripts/start-yarn.sh --env`` prints them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
os.environ.setdefault("GP_RESPONSE_PORT", "0")

from _shared import (  # bench/_shared.py, beside this script
    RUNNER_HELPERS_SOURCE,
    AnchorProcess,
    first_reply,
    free_port,
)
from gp_yarn import _apps
from gp_yarn._options import YarnOptions
from gp_yarn.specapp import YarnInstallSpecApp

from gp_core.testing import kernel_env, kernel_manager

SMALL = "--driver-memory 256m --conf spark.driver.memoryOverhead=128m --conf spark.yarn.am.waitTime=900s"


def install(directory: Path, name: str, init_mode: str, extra: str) -> Path:
    env = os.environ
    spark_home, python = env["GP_TEST_SPARK_HOME"], env.get("GP_TEST_PYTHON") or sys.executable
    opts = " ".join(
        [
            "--executor-memory 512m --num-executors 1",
            f"--conf spark.yarn.jars=local:{spark_home}/jars/*",
            "--conf spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
            "--conf spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1 --conf spark.ui.enabled=false",
            "--conf spark.yarn.maxAppAttempts=1",
            extra,
        ]
    )
    app = YarnInstallSpecApp()
    app.initialize(
        [
            f"--prefix={directory}",
            f"--kernel-name={name}",
            f"--spark-home={spark_home}",
            f"--spark-init-mode={init_mode}",
            f"--extra-spark-opts={opts}",
            f"--yarn-endpoint={env['GP_TEST_YARN_ENDPOINT']}",
            "--launch-timeout=600",
            "--replace",
        ]
    )
    spec_dir = app.install()
    spec = json.loads((spec_dir / "kernel.json").read_text())
    spec["env"].update(
        {
            "PYSPARK_PYTHON": python,
            "HADOOP_CONF_DIR": env["GP_TEST_YARN_CONF_DIR"],
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
    )
    if env.get("GP_TEST_JAVA_HOME"):
        spec["env"]["JAVA_HOME"] = env["GP_TEST_JAVA_HOME"]
    spec["metadata"]["kernel_provisioner"]["config"]["kernel_log_dir"] = str(directory)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return spec_dir.parent


class Watcher:
    """Reads the RM's application list every 0.1 s in a thread; first time each milestone was seen."""

    def __init__(self, endpoint: str, kernel_id: str, t0_wall: float, t0: float) -> None:
        self.endpoint, self.kernel_id, self.t0_wall, self.t0 = endpoint, kernel_id, t0_wall, t0
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        since = int(self.t0_wall * 1000) - 5000
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/ws/v1/cluster/apps?startedTimeBegin={since}", timeout=5
                ) as r:
                    apps = (json.load(r).get("apps") or {}).get("app") or []
            except OSError:
                apps = []
            now = time.perf_counter() - self.t0
            for app in apps:
                if app.get("name") != self.kernel_id:
                    continue
                self.seen.setdefault("submit", app["startedTime"] / 1000 - self.t0_wall)
                if app["state"] in ("ACCEPTED", "RUNNING"):
                    self.seen.setdefault("accepted", now)
                if app.get("amHostHttpAddress"):
                    self.seen.setdefault("AM up", now)
                if app["state"] == "RUNNING":
                    self.seen.setdefault("registered", now)
            self._stop.wait(0.1)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.seen


async def one_start(specs: Path, name: str, endpoint: str) -> dict[str, float]:
    km = kernel_manager(specs, name)
    kernel_id = str(uuid.uuid4())
    t0_wall, t0 = time.time(), time.perf_counter()
    watcher = Watcher(endpoint, kernel_id, t0_wall, t0)
    try:
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
        reported = time.perf_counter() - t0
        client = km.client()
        client.start_channels()
        try:
            await first_reply(client, wait_for_ready=False)
        finally:
            client.stop_channels()
        reply = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while "registered" not in watcher.seen and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        seen = watcher.stop()
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    return {**seen, "reported": reported, "reply": reply}


async def requests_per_interval(
    specs: Path, name: str, count: int, intervals: int, options: YarnOptions
) -> float:
    managers = [kernel_manager(specs, name) for _ in range(count)]
    await asyncio.gather(*(km.start_kernel(kernel_id=str(uuid.uuid4()), env=kernel_env()) for km in managers))
    try:
        client = _apps.rm_for(options).client
        await asyncio.sleep(1.5)
        before = client.requests
        for _ in range(intervals):
            alive = await asyncio.gather(*(km.is_alive() for km in managers))
            assert all(alive), alive
            await asyncio.sleep(options.status_interval)
        return (client.requests - before) / intervals
    finally:
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))


# Runs in the anchor's venv: python -c ANCHOR_RUNNER PREFIX SPARK_HOME PYTHON_ROOT SPARK_OPTS INTERVALS.
# Installs the anchor's kernelspec under PREFIX, then per stdin line starts one kernel and prints one JSON
# line: [start -> first reply, its RM requests per poll interval while running].
ANCHOR_RUNNER = (
    RUNNER_HELPERS_SOURCE
    + r"""
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
import yarn_api_client.base

results = os.fdopen(os.dup(1), "w")  # the figures' own channel: anything else printed goes to stderr
os.dup2(2, 1)
prefix, spark_home, python_root, spark_opts, intervals = sys.argv[1:6]
# Its launcher imports server_listener.py from beside it; in cluster mode only the launcher is shipped.
spark_opts += f" --py-files {prefix}/share/jupyter/kernels/anchor/scripts/server_listener.py"
requests = [0]
original = yarn_api_client.base.BaseYarnAPI.request
def counted(self, *args, **kwargs):
    requests[0] += 1
    return original(self, *args, **kwargs)
yarn_api_client.base.BaseYarnAPI.request = counted
subprocess.run([str(Path(sys.executable).parent / "jupyter-yarn-spec"), "install", f"--prefix={prefix}",
                "--kernel-name=anchor", f"--spark-home={spark_home}", f"--python-root={python_root}",
                f"--extra-spark-opts={spark_opts}"], check=True, capture_output=True,
               env={k: v for k, v in os.environ.items() if k != "GP_YARN_ENDPOINT"})  # its finalize bug
specs = Path(prefix) / "share/jupyter/kernels"
spec_file = specs / "anchor" / "kernel.json"
spec = json.loads(spec_file.read_text())
spec["metadata"]["kernel_provisioner"]["config"]["launch_timeout"] = 600
spec["env"]["HADOOP_CONF_DIR"] = os.environ["HADOOP_CONF_DIR"]
spec["env"]["SPARK_LOCAL_IP"] = "127.0.0.1"
spec_file.write_text(json.dumps(spec))
ksm = KernelSpecManager(kernel_dirs=[str(specs)])

async def one():
    km = AsyncKernelManager(kernel_name="anchor", kernel_spec_manager=ksm)
    env = {**os.environ, "KERNEL_USERNAME": "gp-tester"}
    seconds = await start_to_first_reply(km, False, env=env)
    await asyncio.sleep(1.5)
    before = requests[0]
    for _ in range(int(intervals)):
        assert await km.is_alive()
        await asyncio.sleep(1.0)
    per = (requests[0] - before) / int(intervals)
    await km.shutdown_kernel(now=True)
    return [seconds, per]

async def main():
    # One event loop for every run: the anchor's ResponseManager is bound to the loop it started on.
    while await asyncio.to_thread(sys.stdin.readline):
        print(json.dumps(await one()), file=results, flush=True)

asyncio.run(main())
"""
)


def anchor_process(anchor_python: str, directory: Path) -> AnchorProcess:
    env = os.environ
    spark_home = env["GP_TEST_SPARK_HOME"]
    opts = " ".join(
        [
            "--driver-memory 512m --executor-memory 512m --num-executors 1",
            f"--conf 'spark.yarn.jars=local:{spark_home}/jars/*'",
            "--conf spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
            "--conf spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1 --conf spark.ui.enabled=false",
            "--conf spark.yarn.maxAppAttempts=1",
        ]
    )
    python_root = str(Path(anchor_python).parent.parent)
    runner_env = {
        **env,
        "GP_YARN_ENDPOINT": env["GP_TEST_YARN_ENDPOINT"],
        "HADOOP_CONF_DIR": env["GP_TEST_YARN_CONF_DIR"],
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": str(free_port()),
    }
    args = [str(directory / "anchor"), spark_home, python_root, opts, "5"]
    return AnchorProcess(anchor_python, ANCHOR_RUNNER, args, runner_env, directory / "anchor.log")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--intervals", type=int, default=10)
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--anchor-python", help="python of a venv with gateway_provisioners 0.5.0")
    args = parser.parse_args()
    endpoint = os.environ["GP_TEST_YARN_ENDPOINT"]
    with tempfile.TemporaryDirectory(prefix="gp-bench-yarn-") as tmp:
        directory = Path(tmp)
        specs = install(directory, "bench_spark", "lazy", "--driver-memory 512m")
        install(directory, "bench_plain", "none", SMALL)
        options = YarnOptions(yarn_endpoint=endpoint, kernel_log_dir=str(directory))

        anchor = anchor_process(args.anchor_python, directory) if args.anchor_python else None
        rows: list[dict[str, float]] = []
        anchor_rows: list[tuple[float, ...]] = []
        try:
            for _ in range(args.runs):  # interleaved: the machine's noise hits both alike
                rows.append(await one_start(specs, "bench_spark", endpoint))
                if anchor is not None:
                    anchor_rows.append(await anchor.start())
        finally:
            if anchor is not None:
                anchor.close()
        print(f"1. Spark kernel start on YARN, {args.runs} runs (seconds from the start request; median)")
        for step in ("submit", "accepted", "AM up", "reported", "reply", "registered"):
            values = [row[step] for row in rows if step in row]
            if values:
                print(
                    f"   {step:<11} {statistics.median(values):7.2f}   (runs: {', '.join(f'{v:.2f}' for v in values)})"
                )
        if anchor_rows:
            gp_reply = statistics.median(row["reply"] for row in rows)
            anchor_reply = statistics.median(row[0] for row in anchor_rows)
            print(
                f"   anchor reply {anchor_reply:7.2f}   (runs: {', '.join(f'{r[0]:.2f}' for r in anchor_rows)})"
                f"   gp / anchor = {gp_reply / anchor_reply:.2f}x"
            )

        print(
            f"\n2. RM requests per poll interval ({options.status_interval:g} s), every kernel polled once per interval"
        )
        for count in (1, args.kernels):
            per = await requests_per_interval(specs, "bench_plain", count, args.intervals, options)
            print(f"   {count:>2} kernel(s): gp {per:.2f} requests/interval")
        if anchor_rows:
            per_anchor = statistics.median(row[1] for row in anchor_rows)
            print(
                f"    1 kernel : anchor {per_anchor:.2f} requests/interval (measured; one GET /apps/<id> per kernel per poll)"
            )


if __name__ == "__main__":
    asyncio.run(main())
