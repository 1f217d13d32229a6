"""gp-k8s benchmarks on the test cluster, side by side in one run (ratios, not absolute times, are the result).

1. Start latency, start request -> first execute_reply, median of N, interleaved: gp's ``k8s`` backend, a bare
   hostNetwork pod running plain ipykernel from a ConfigMap-mounted connection file, and (``--anchor-python``)
   gateway_provisioners 0.5.0's KubernetesProvisioner, all on the same cluster, image base and namespace.
2. 5 concurrent launches: each one's start latency (gp; the anchor too when given).
3. A missing image: how long until the launch fails, and with what reason.
4. API requests per poll interval (every kernel polled once per 0.5 s interval) with 1, 10 and 50 running
   kernels, counted at the kubernetes client's REST layer of this process.
5. Event-loop stall: the largest lateness of a 5 ms sleep loop during 5 concurrent gp launches.
6. Row 1 also has gp with ``pool_size=1`` (a parked pod takes the launch), last in each round, after its
   pool refilled.

The anchor runs in its own venv (``python -m venv V && V/bin/pip install 'gateway_provisioners[k8s]==0.5.0'``)
as a long-lived runner, one request per line, so its runs interleave with gp's. What it needs to run here at
all, none of it on its timed path: out-of-cluster config (``GP_USE_INCLUSTER_CONFIG=false`` + ``KUBECONFIG``;
it cannot load outside a cluster otherwise), its kernelspec's pod template given ``hostNetwork: true`` and
``imagePullPolicy: Never`` (there is no registry), its image = gp's base image + its own launchers and
``bootstrap-kernel.sh``, ``/opt/venv/bin`` (the image's python) on the runner's PATH because the anchor
copies the server's whole environment, PATH included, into the pod, and the kernel address it derives from the pod IP (the node's non-loopback address
here) replaced by 127.0.0.1, so no traffic leaves loopback.

``python bench/bench_k8s.py --kubeconfig .ci-state/k8s/kubeconfig [--runs N] [--image gp/kernel-py:test]
[--anchor-python V/bin/python] [--max-kernels 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
os.environ.setdefault("GP_RESPONSE_PORT", "0")

from _shared import (
    RUNNER_HELPERS_SOURCE,
    AnchorProcess,
    first_reply,
    free_port,
    shut_down,
    start_to_first_reply,
)
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from gp_core.testing import kernel_env, kernel_manager, launcher_argv, write_kernelspec

LAUNCHER_ARGV = launcher_argv("python3", "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py")
ANCHOR_IMAGE = "gp/kernel-py-anchor:k8s-bench"
NAMESPACE = "default"


# ------------------------------------------------------------------------------------------------- gp


def gp_spec(kernels: Path, name: str, kubeconfig: str, image: str, **extra: object) -> None:
    config = {
        "image": image,
        "host_network": True,
        "image_pull_policy": "Never",
        "kubeconfig": kubeconfig,
        **extra,
    }
    write_kernelspec(kernels, name, backend="k8s", argv=LAUNCHER_ARGV, config=config)


async def pool_refilled() -> None:
    """Wait until the pooled row's pool is full again and its launcher done importing."""
    from gp_k8s._pool import pools_settled

    while not pools_settled():
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


async def gp_start(kernels: Path, name: str = "gp") -> float:
    km = kernel_manager(kernels, name)
    try:
        return await start_to_first_reply(km, False, kernel_id=str(uuid.uuid4()), env=kernel_env())
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


# ------------------------------------------------------------------------------------------------- bare pod


def _core(kubeconfig: str):
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))


async def bare_start(core, image: str, workdir: Path) -> float:
    """ipykernel in a hostNetwork pod from a ConfigMap-mounted connection file: no gp at all."""
    name = f"gp-bench-bare-{uuid.uuid4().hex[:12]}"
    path = workdir / f"{name}.json"
    write_connection_file(str(path), ip="127.0.0.1")
    labels = {"app": "gp-bench", "component": "bare"}
    config_map = {"metadata": {"name": name, "labels": labels}, "data": {"kernel.json": path.read_text()}}
    pod = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "hostNetwork": True,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 100},
            "containers": [
                {
                    "name": "kernel",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "ipykernel_launcher", "-f", "/conn/kernel.json"],
                    "volumeMounts": [{"name": "conn", "mountPath": "/conn"}],
                }
            ],
            "volumes": [{"name": "conn", "configMap": {"name": name}}],
        },
    }
    started = time.perf_counter()
    await asyncio.to_thread(core.create_namespaced_config_map, NAMESPACE, config_map)
    await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, pod)
    client = AsyncKernelClient(connection_file=str(path))
    client.load_connection_file()
    client.start_channels()
    try:
        reply = await first_reply(client, False)
        assert reply["status"] == "ok"
        latency = time.perf_counter() - started
        await shut_down(client)
    finally:
        client.stop_channels()
        await asyncio.to_thread(core.delete_namespaced_pod, name, NAMESPACE, grace_period_seconds=0)
        await asyncio.to_thread(core.delete_namespaced_config_map, name, NAMESPACE)
        path.unlink(missing_ok=True)
    return latency


# ------------------------------------------------------------------------------------------------- anchor

ANCHOR_RUNNER = (
    RUNNER_HELPERS_SOURCE
    + r"""
import asyncio, json, os, sys, time
from gateway_provisioners import k8s
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager

kernels = sys.argv[1]
status = k8s.KubernetesProvisioner.get_container_status

def get_container_status(self, iteration):
    result = status(self, iteration)
    if self.assigned_ip:  # hostNetwork: the pod IP is the node's address; the kernel is local: keep to loopback
        self.assigned_ip = "127.0.0.1"
    return result

k8s.KubernetesProvisioner.get_container_status = get_container_status

def manager(name):
    return AsyncKernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))

async def once():
    km = manager("anchor")
    try:
        return await start_to_first_reply(km, False, env={**os.environ, "KERNEL_USERNAME": "gp-bench"})
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)

async def missing():
    km = manager("anchor_missing")
    started = time.perf_counter()
    try:
        await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "gp-bench"})
    except Exception as exc:
        return [time.perf_counter() - started, type(exc).__name__ + ": " + str(exc)[:200]]
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    return [time.perf_counter() - started, "started?!"]

async def main():
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if not line:
            return
        if line == "run":
            print(json.dumps([await once()]), flush=True)
        elif line.startswith("concurrent"):
            n = int(line.split()[1])
            print(json.dumps(await asyncio.gather(*(once() for _ in range(n)))), flush=True)
        elif line == "missing":
            print(json.dumps(await missing()), flush=True)

asyncio.run(main())
"""
)


class Anchor(AnchorProcess):
    def ask(self, line: str) -> list:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(
                f"the anchor runner died; the end of {self.log}:\n{self.log.read_text()[-3000:]}"
            )
        return json.loads(answer)


def start_anchor(anchor_python: str, kubeconfig: str, base_image: str, workdir: Path) -> Anchor:
    package = subprocess.run(
        [anchor_python, "-c", "import gateway_provisioners, os; print(os.path.dirname(gateway_provisioners.__file__))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    _build_anchor_image(Path(package), base_image, workdir / "anchor-image")
    jupyter = str(Path(anchor_python).with_name("jupyter"))
    prefix = workdir / "anchor-prefix"
    for name, image in (("anchor", ANCHOR_IMAGE), ("anchor_missing", "gp/no-such-image:bench")):
        subprocess.run(
            [jupyter, "k8s-spec", "install", f"--image-name={image}", f"--kernel-name={name}", f"--prefix={prefix}"],
            check=True, capture_output=True,
        )  # fmt: skip
        template = prefix / "share/jupyter/kernels" / name / "scripts/kernel-pod.yaml.j2"
        text = template.read_text()
        text = text.replace(
            "spec:\n  restartPolicy: Never\n", "spec:\n  restartPolicy: Never\n  hostNetwork: true\n"
        )
        text = text.replace(
            '  - image: "{{ kernel_image }}"\n',
            '  - image: "{{ kernel_image }}"\n    imagePullPolicy: Never\n',
        )
        assert "hostNetwork: true" in text and "imagePullPolicy: Never" in text, (
            "the anchor's template changed"
        )
        template.write_text(text)
    env = {
        **os.environ,
        # Its argv runs "python"; it copies the server's whole environment into the pod (its bug), PATH
        # included, so the image's venv must be on it too for the pod to find python.
        "PATH": f"{Path(anchor_python).absolute().parent}:/opt/venv/bin:{os.environ.get('PATH', '')}",
        "KUBECONFIG": kubeconfig,
        "GP_USE_INCLUSTER_CONFIG": "false",
        "GP_NAMESPACE": NAMESPACE,
        "GP_SHARED_NAMESPACE": "True",
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": str(free_port()),
    }
    return Anchor(
        anchor_python, ANCHOR_RUNNER, [str(prefix / "share/jupyter/kernels")], env, workdir / "anchor.log"
    )


def _build_anchor_image(package: Path, base_image: str, context: Path) -> None:
    """gp's base image with the anchor's launchers and entrypoint instead of gp's."""
    launchers = package / "kernel-launchers"
    python_launcher = context / "kernel-launchers" / "python"
    shutil.copytree(launchers / "python", python_launcher, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(launchers / "shared" / "scripts" / "server_listener.py", python_launcher / "scripts")
    shutil.copy(launchers / "bootstrap" / "bootstrap-kernel.sh", context / "bootstrap-kernel.sh")
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "COPY kernel-launchers/ /usr/local/bin/kernel-launchers/\n"
        "COPY bootstrap-kernel.sh /usr/local/bin/bootstrap-kernel.sh\n"
        "RUN chmod -R a+rX /usr/local/bin && chmod a+x /usr/local/bin/bootstrap-kernel.sh\n"
        "ENV KERNEL_LAUNCHERS_DIR=/usr/local/bin/kernel-launchers\n"
        # Not PID 1's child: ipykernel >= 7 exits at once when its parent is PID 1 (the anchor predates that)
        'CMD ["/bin/bash", "-c", "/usr/local/bin/bootstrap-kernel.sh; exit $?"]\n'
    )
    build = ["docker", "build", "-q", "-t", ANCHOR_IMAGE, str(context)]
    subprocess.run(build, check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})


# ------------------------------------------------------------------------------------------------- rows


async def bench_start(
    runs: int, kernels: Path, core, image: str, workdir: Path, anchor: Anchor | None
) -> dict:
    await gp_start(kernels)  # warm-up: imports, key pair, listener, the shared watch
    await gp_start(kernels, "gp-pool")
    await bare_start(core, image, workdir)
    if anchor:
        await asyncio.to_thread(anchor.ask, "run")
    results: dict[str, list[float]] = {
        "bare": [],
        "gp": [],
        **({"anchor": []} if anchor else {}),
        "gp-pool": [],
    }
    for _ in range(runs):
        await pool_refilled()
        results["bare"].append(await bare_start(core, image, workdir))
        results["gp"].append(await gp_start(kernels))
        if anchor:
            results["anchor"].append((await asyncio.to_thread(anchor.ask, "run"))[0])
        # Last in the round: its pool refills while the next round waits, during no measurement.
        results["gp-pool"].append(await gp_start(kernels, "gp-pool"))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"start -> first execute_reply, median of {runs} (interleaved)")
    labels = {
        "bare": "bare hostNetwork pod (ConfigMap conn file)",
        "gp": "gp k8s",
        "anchor": "gateway_provisioners 0.5.0 k8s",
        "gp-pool": "gp k8s, pool_size=1",
    }
    for name, median in medians.items():
        spread = f"{min(results[name]):.2f}-{max(results[name]):.2f}"
        print(f"  {labels[name]:<44} {median:6.3f}s  ({spread})  {median / medians['bare']:5.2f}x bare")
    print(f"  ratio gp / bare pod: {medians['gp'] / medians['bare']:.2f}x (target <= 1.30x)")
    if anchor:
        print(f"  ratio gp / anchor: {medians['gp'] / medians['anchor']:.2f}x (target <= 0.50x)")
        print(f"  ratio gp pooled / anchor: {medians['gp-pool'] / medians['anchor']:.2f}x (target <= 0.25x)")
    return medians


class LoopWatch:
    """The largest lateness of a 5 ms sleep loop while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._done = asyncio.Event()

    async def run(self) -> None:
        while not self._done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - before - 0.005)

    def stop(self) -> None:
        self._done.set()


async def _stall_during(work) -> tuple[object, float]:
    watch = LoopWatch()
    watcher = asyncio.create_task(watch.run())
    try:
        result = await work
    finally:
        watch.stop()
        await watcher
    return result, watch.worst


async def bench_concurrent(
    kernels: Path, core, image: str, workdir: Path, anchor: Anchor | None, count: int = 5
) -> None:
    _, idle = await _stall_during(asyncio.sleep(3))
    latencies, stall = await _stall_during(asyncio.gather(*(gp_start(kernels) for _ in range(count))))
    bare, bare_stall = await _stall_during(
        asyncio.gather(*(bare_start(core, image, workdir) for _ in range(count)))
    )
    print(f"{count} concurrent launches, each start -> first reply:")
    print(
        f"  bare pods:  max {max(bare):.2f}s, median {statistics.median(bare):.2f}s (loop stall {bare_stall * 1000:.1f} ms)"
    )
    print(f"  ratio gp / bare pods (max): {max(latencies) / max(bare):.2f}x")
    print(f"  idle event loop on this machine right now: max stall {idle * 1000:.1f} ms (machine noise)")
    print(
        f"  gp k8s:     max {max(latencies):.2f}s, median {statistics.median(latencies):.2f}s (target each <= 3.0 s; anchor 7.2 s)"
    )
    print(f"  event-loop stall during them: max {stall * 1000:.1f} ms (target <= 5 ms; anchor 89 ms)")
    if anchor:
        theirs = await asyncio.to_thread(anchor.ask, f"concurrent {count}")
        print(f"  anchor:     max {max(theirs):.2f}s, median {statistics.median(theirs):.2f}s")


async def bench_missing_image(kernels: Path, anchor: Anchor | None) -> None:
    km = kernel_manager(kernels, "gp-missing")
    started = time.perf_counter()
    try:
        await km.start_kernel(env=kernel_env())
        reason = "started?!"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    took = time.perf_counter() - started
    print("missing image (imagePullPolicy Never):")
    print(f"  gp k8s fails after {took:.2f}s (target <= 3 s): {reason}")
    if anchor:
        theirs, why = await asyncio.to_thread(anchor.ask, "missing")
        print(f"  anchor fails after {theirs:.2f}s: {why}")


async def bench_requests_per_poll(kernels: Path, counts: list[int]) -> None:
    from kubernetes.client import rest

    calls = 0
    original = rest.RESTClientObject.request

    def counting(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        return original(self, *args, **kwargs)

    rest.RESTClientObject.request = counting
    managers: list = []
    print("API requests per poll interval (every kernel polled once per 0.5 s), this process:")
    try:
        for count in counts:
            while len(managers) < count:
                batch = [kernel_manager(kernels, "gp") for _ in range(min(10, count - len(managers)))]
                await asyncio.gather(*(km.start_kernel(env=kernel_env()) for km in batch))
                managers += batch
            await asyncio.sleep(1.0)
            intervals, before = 10, calls
            for _ in range(intervals):
                assert all(await asyncio.gather(*(km.is_alive() for km in managers)))
                await asyncio.sleep(0.5)
            print(
                f"  {count:3d} running kernels: {(calls - before) / intervals:.2f} requests per interval (anchor: {count})"
            )
    finally:
        rest.RESTClientObject.request = original
        for start in range(0, len(managers), 10):
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers[start : start + 10]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("GP_TEST_K8S_KUBECONFIG", ""))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=os.environ.get("GP_TEST_KERNEL_IMAGE", "gp/kernel-py:test"))
    parser.add_argument("--anchor-python", help="python of a venv with gateway_provisioners[k8s]==0.5.0")
    parser.add_argument("--max-kernels", type=int, default=50)
    args = parser.parse_args()
    args.kubeconfig = os.path.abspath(args.kubeconfig)
    return args


async def main(args: argparse.Namespace) -> None:
    kubeconfig = args.kubeconfig
    core = _core(kubeconfig)
    with tempfile.TemporaryDirectory() as tmp:
        kernels, workdir = Path(tmp) / "kernels", Path(tmp) / "conn"
        workdir.mkdir()
        gp_spec(kernels, "gp", kubeconfig, args.image)
        gp_spec(kernels, "gp-missing", kubeconfig, "gp/no-such-image:bench")
        gp_spec(kernels, "gp-pool", kubeconfig, args.image, pool_size=1)
        anchor = None
        if args.anchor_python:
            base = os.environ.get("GP_KERNEL_BASE_IMAGE", "gp/kernel-py-base:bookworm")
            anchor = start_anchor(args.anchor_python, kubeconfig, base, Path(tmp))
        try:
            await bench_start(args.runs, kernels, core, args.image, workdir, anchor)
            await bench_concurrent(kernels, core, args.image, workdir, anchor)
            await bench_missing_image(kernels, anchor)
        finally:
            if anchor:
                anchor.close()
            from gp_k8s._pool import close_pools

            await asyncio.to_thread(close_pools)
        await bench_requests_per_poll(kernels, [n for n in (1, 10, 50) if n <= args.max_kernels])


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
