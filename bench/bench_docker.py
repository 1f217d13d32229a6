"""gp-docker benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

1. Start latency, start request -> first execute_reply: gp's ``docker`` (and ``docker-swarm``) backend vs a
   bare ``docker run --network host`` of the same kernel image running plain ipykernel from a connection
   file; runs interleaved so machine noise hits all of them. Median of N.
2. Shutdown: how long ``shutdown_kernel()`` takes, and whether the container/service is really gone when
   it returns (gp's terminate waits for that).
3. Status cost: docker API list calls per poll round of K running kernels (target: 1, not K).
4. Event-loop stall: the largest lateness of a 5 ms sleep loop while one gp docker kernel launches and
   shuts down (every docker SDK call runs in a worker thread).

Needs dockerd (a swarm manager for the swarm rows) and the kernel image:
``python bench/bench_docker.py [--runs N] [--image gp/kernel-py:test] [--no-swarm]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
os.environ.setdefault("GP_RESPONSE_PORT", "0")

import docker
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from gp_core.testing import execute, kernel_env, kernel_manager, write_kernelspec

LAUNCHER_ARGV = [
    "python3",
    "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py",
    "--kernel-id",
    "{kernel_id}",
    "--port-range",
    "{port_range}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
]


def _leftovers(api: docker.APIClient, kernel_id: str) -> int:
    label = {"label": f"kernel_id={kernel_id}"}
    return len(api.containers(all=True, filters=label)) + len(api.services(filters=label))


async def gp_start(kernels: Path, backend: str, api: docker.APIClient) -> tuple[float, float, int]:
    """(start -> first reply, shutdown duration, resources left right after shutdown)."""
    km = kernel_manager(kernels, backend)
    kernel_id = str(uuid.uuid4())
    started = time.perf_counter()
    await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
    try:
        _, reply = await execute(km, "1")
        assert reply["status"] == "ok"
        latency = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        await km.shutdown_kernel()
        shutdown = time.perf_counter() - stopping
    return latency, shutdown, _leftovers(api, kernel_id)


async def bare_start(image: str, workdir: Path) -> tuple[float, float]:
    """The same image and ipykernel started by hand: docker run + a connection file, no gp at all."""
    name = f"gp-bench-bare-{uuid.uuid4().hex[:12]}"
    connection_file = workdir / f"{name}.json"
    write_connection_file(str(connection_file), ip="127.0.0.1")
    connection_file.chmod(0o644)
    started = time.perf_counter()
    run = [
        "docker", "run", "-d", "--rm", "--network", "host", "--name", name,
        "-v", f"{workdir}:/conn:ro", image,
        "python3", "-m", "ipykernel_launcher", "-f", f"/conn/{connection_file.name}",
    ]  # fmt: skip
    await asyncio.to_thread(subprocess.run, run, check=True, capture_output=True)
    client = AsyncKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        reply = await client.execute_interactive("1", timeout=60, output_hook=lambda _msg: None)
        assert reply["content"]["status"] == "ok"
        latency = time.perf_counter() - started
        stopping = time.perf_counter()
        client.shutdown()
        await asyncio.to_thread(subprocess.run, ["docker", "wait", name], capture_output=True)
        shutdown = time.perf_counter() - stopping
    finally:
        client.stop_channels()
        await asyncio.to_thread(subprocess.run, ["docker", "rm", "-f", name], capture_output=True)
        connection_file.unlink(missing_ok=True)
    return latency, shutdown


async def bench_start(runs: int, image: str, backends: list[str], api: docker.APIClient) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kernels, workdir = Path(tmp) / "kernels", Path(tmp) / "conn"
        workdir.mkdir()
        for backend in backends:
            write_kernelspec(
                kernels,
                backend,
                backend=backend,
                argv=LAUNCHER_ARGV,
                config={"image": image, "network": "host"},
            )
        for backend in backends:  # warm-up: imports, key pair, listener, page cache
            await gp_start(kernels, backend, api)
        await bare_start(image, workdir)
        results: dict[str, list[tuple[float, ...]]] = {name: [] for name in ["bare", *backends]}
        for _ in range(runs):
            results["bare"].append(await bare_start(image, workdir))
            for backend in backends:
                results[backend].append(await gp_start(kernels, backend, api))

    bare_start_median = statistics.median(r[0] for r in results["bare"])
    print(f"start -> first execute_reply and shutdown, median of {runs} (interleaved)")
    print(f"  {'case':<38} {'start':>8} {'ratio':>7} {'shutdown':>9}  left after shutdown")
    labels = {
        "bare": "bare docker run --network host",
        "docker": "gp docker",
        "docker-swarm": "gp docker-swarm",
    }
    for name, rows in results.items():
        start = statistics.median(r[0] for r in rows)
        shutdown = statistics.median(r[1] for r in rows)
        left = "n/a (--rm)" if name == "bare" else str(sum(int(r[2]) for r in rows))
        print(
            f"  {labels[name]:<38} {start:7.3f}s {start / bare_start_median:6.2f}x {shutdown:8.3f}s  {left}"
        )


async def bench_status_cost(image: str, kernels_count: int) -> None:
    from gp_docker import _client

    with tempfile.TemporaryDirectory() as tmp:
        kernels = Path(tmp)
        write_kernelspec(
            kernels, "k", backend="docker", argv=LAUNCHER_ARGV, config={"image": image, "network": "host"}
        )
        managers = [kernel_manager(kernels, "k") for _ in range(kernels_count)]
        await asyncio.gather(*(km.start_kernel(env=kernel_env()) for km in managers))
        try:
            rounds, before = 5, _client.CONTAINERS.fetches
            for _ in range(rounds):
                await asyncio.gather(*(km.is_alive() for km in managers))
                await asyncio.sleep(0.5)  # one poll interval
            calls = (_client.CONTAINERS.fetches - before) / rounds
        finally:
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))
    print(
        f"status of {kernels_count} kernels: {calls:.1f} docker list call(s) per poll round (anchor: {2 * kernels_count})"
    )


async def bench_loop_stall(image: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kernels = Path(tmp)
        write_kernelspec(
            kernels, "k", backend="docker", argv=LAUNCHER_ARGV, config={"image": image, "network": "host"}
        )
        worst = 0.0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal worst
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                worst = max(worst, time.perf_counter() - before - 0.005)

        watcher = asyncio.create_task(watch())
        km = kernel_manager(kernels, "k")
        await km.start_kernel(env=kernel_env())
        await execute(km, "1")
        await km.shutdown_kernel()
        done.set()
        await watcher
    print(
        f"event-loop stall during one gp docker launch + shutdown: max {worst * 1000:.1f} ms (anchor: 16 ms launch, 74 ms shutdown)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=os.environ.get("GP_TEST_KERNEL_IMAGE", "gp/kernel-py:test"))
    parser.add_argument("--no-swarm", action="store_true", help="skip the docker-swarm rows")
    parser.add_argument("--kernels", type=int, default=5, help="kernels for the status-cost measurement")
    args = parser.parse_args()

    api = docker.from_env().api
    backends = ["docker"]
    swarm = api.info().get("Swarm") or {}
    if not args.no_swarm and swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        backends.append("docker-swarm")
    await bench_start(args.runs, args.image, backends, api)
    await bench_status_cost(args.image, args.kernels)
    await bench_loop_stall(args.image)


if __name__ == "__main__":
    asyncio.run(main())
