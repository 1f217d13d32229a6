"""gp-docker benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

1. Start latency, start request -> first execute_reply: gp's ``docker`` (and ``docker-swarm``) backend vs a
   bare ``docker run --network host`` of the same kernel image running plain ipykernel from a connection
   file; runs interleaved so machine noise hits all of them. Median of N. The ``docker`` backend runs
   twice: cold, and with ``pool_size=1`` (a parked container takes the launch). The pooled row is last in
   each round, and every round first waits for its pool to refill, so no measurement shares the machine
   with a refill. Every client sends its
   ``execute_request`` as soon as ``start_kernel()`` returns (``--wait-for-ready``: after
   ``wait_for_ready()``, which adds a fixed ~0.2 s to every row; see ``_shared.first_reply``).
2. Shutdown: how long ``shutdown_kernel()`` takes, and whether the container/service is really gone when
   it returns (gp's terminate waits for that).
3. Status cost: docker API list calls per poll round of K running kernels (target: 1, not K).
4. Event-loop stall: the largest lateness of a 5 ms sleep loop while one gp docker kernel launches and
   shuts down (every docker SDK call runs in a worker thread).

With ``--anchor-python`` (a venv made with ``python -m venv V && V/bin/pip install gateway_provisioners==0.5.0
docker``), gateway_provisioners 0.5.0's DockerProvisioner runs in row 1 too, interleaved with the others:
a long-lived runner process in that venv starts one kernel per request, on the same dockerd and base image
(``gp/kernel-py-base`` + the anchor's own launchers and ``bootstrap-kernel.sh``, built here as
``gp/kernel-py-anchor:bench``), with host networking. Two anchor bugs are worked around so it can run at
all, neither on its timed path: its ``launch_docker.py`` reads ``DOCKER_NETWORK`` (not the
``GP_DOCKER_NETWORK`` it documents), and with host networking it finds an empty kernel IP, replaced by
127.0.0.1. Its entrypoint runs under a ``bash -c`` so the kernel's parent is not PID 1 (ipykernel 7 exits
at once when it is).

Needs dockerd (a swarm manager for the swarm rows) and the kernel image:
``python bench/bench_docker.py [--runs N] [--image gp/kernel-py:test] [--no-swarm] [--anchor-python V/bin/python]``.
"""

from __future__ import annotations

import argparse
import asyncio
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

import docker
from _shared import (  # bench/_shared.py, beside this script
    RUNNER_HELPERS_SOURCE,
    AnchorProcess,
    first_reply,
    free_port,
    shut_down,
    start_to_first_reply,
)
from gp_docker import close_pools
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from gp_core.testing import execute, kernel_env, kernel_manager, launcher_argv, write_kernelspec

LAUNCHER_ARGV = launcher_argv("python3", "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py")
#: The kernelspec of the pooled row: backend docker with pool_size 1.
POOLED = "docker-pool"
#: How long a just-parked launcher takes to finish its imports, with room to spare.
PARK_WARMUP = 1.0


async def pool_refilled() -> None:
    """Wait until the pooled row's pool is full again and its launcher done importing, so no row's
    measurement shares the machine with a refill."""
    from gp_docker._pool import pools_settled

    while not pools_settled():
        await asyncio.sleep(0.05)
    await asyncio.sleep(PARK_WARMUP)


def _leftovers(api: docker.APIClient, kernel_id: str) -> int:
    label = {"label": f"kernel_id={kernel_id}"}
    containers = {c["Id"] for c in api.containers(all=True, filters=label)}
    containers |= {c["Id"] for c in api.containers(all=True, filters={"name": kernel_id})}  # pooled: no label
    return len(containers) + len(api.services(filters=label))


async def gp_start(
    kernels: Path, backend: str, api: docker.APIClient, wait_for_ready: bool
) -> tuple[float, float, int]:
    """(start -> first reply, shutdown duration, resources left right after shutdown)."""
    km = kernel_manager(kernels, backend)
    kernel_id = str(uuid.uuid4())
    try:
        latency = await start_to_first_reply(km, wait_for_ready, kernel_id=kernel_id, env=kernel_env())
    finally:
        stopping = time.perf_counter()
        if km.has_kernel:
            await km.shutdown_kernel()
        shutdown = time.perf_counter() - stopping
    return latency, shutdown, _leftovers(api, kernel_id)


async def bare_start(image: str, workdir: Path, wait_for_ready: bool) -> tuple[float, float]:
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
        reply = await first_reply(client, wait_for_ready)
        assert reply["status"] == "ok"
        latency = time.perf_counter() - started
        stopping = time.perf_counter()
        await shut_down(client)
        await asyncio.to_thread(subprocess.run, ["docker", "wait", name], capture_output=True)
        shutdown = time.perf_counter() - stopping
    finally:
        client.stop_channels()
        await asyncio.to_thread(subprocess.run, ["docker", "rm", "-f", name], capture_output=True)
        connection_file.unlink(missing_ok=True)
    return latency, shutdown


ANCHOR_IMAGE = "gp/kernel-py-anchor:bench"

# Runs in the anchor's venv: one kernel per line read from stdin, one JSON line of figures printed per kernel.
ANCHOR_RUNNER = (
    RUNNER_HELPERS_SOURCE
    + r"""
import asyncio, json, os, sys, time
import docker
from gateway_provisioners import docker_swarm
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager

kernels = sys.argv[1]
status = docker_swarm.DockerProvisioner.get_container_status

def get_container_status(self, iteration):
    result = status(self, iteration)
    if self.assigned_ip == "":  # host networking: the anchor finds no IP (its bug); the kernel is local
        self.assigned_ip = "127.0.0.1"
    return result

docker_swarm.DockerProvisioner.get_container_status = get_container_status
api = docker.from_env().api

async def once():
    km = AsyncKernelManager(kernel_name="anchor", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
    latency = await start_to_first_reply(
        km, os.environ.get("GP_BENCH_WAIT_FOR_READY") == "1", env={**os.environ, "KERNEL_USERNAME": "gp-bench"}
    )
    stopping = time.perf_counter()
    await km.shutdown_kernel()
    shutdown = time.perf_counter() - stopping
    left = len(api.containers(all=True, filters={"label": f"kernel_id={km.kernel_id}"}))
    return [latency, shutdown, left]

async def main():
    while await asyncio.to_thread(sys.stdin.readline):
        print(json.dumps(await once()), flush=True)

asyncio.run(main())
"""
)


def start_anchor(anchor_python: str, base_image: str, workdir: Path) -> AnchorProcess:
    """gateway_provisioners 0.5.0's DockerProvisioner in its own venv, one kernel per request.

    Each request's figures: (start -> first reply, shutdown duration, containers left after shutdown).
    """
    package = subprocess.run(
        [anchor_python, "-c", "import gateway_provisioners, os; print(os.path.dirname(gateway_provisioners.__file__))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    _build_anchor_image(Path(package), base_image, workdir / "anchor-image")
    jupyter = str(Path(anchor_python).with_name("jupyter"))
    subprocess.run(
        [jupyter, "docker-spec", "install", f"--image-name={ANCHOR_IMAGE}", "--kernel-name=anchor",
         f"--prefix={workdir / 'anchor-prefix'}"],
        check=True, capture_output=True,
    )  # fmt: skip
    kernels = workdir / "anchor-prefix" / "share" / "jupyter" / "kernels"
    env = {
        **os.environ,
        "PATH": f"{Path(anchor_python).parent}:{os.environ.get('PATH', '')}",  # its argv runs "python"
        "GP_DOCKER_NETWORK": "host",
        "DOCKER_NETWORK": "host",  # what its launch_docker.py really reads
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": str(free_port()),
    }
    return AnchorProcess(anchor_python, ANCHOR_RUNNER, [str(kernels)], env, workdir / "anchor.log")


def _build_anchor_image(package: Path, base_image: str, context: Path) -> None:
    """The same base image as gp's, with the anchor's launchers and entrypoint instead of gp's."""
    launchers = package / "kernel-launchers"
    python_launcher = context / "kernel-launchers" / "python"
    shutil.copytree(launchers / "python", python_launcher, ignore=shutil.ignore_patterns("__pycache__"))
    # the anchor's "assembly" step (what its image-bootstrap does): the real listener replaces a placeholder
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


async def bench_start(
    runs: int,
    image: str,
    backends: list[str],
    api: docker.APIClient,
    anchor_python: str | None,
    wait_for_ready: bool,
) -> None:
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
        write_kernelspec(
            kernels,
            POOLED,
            backend="docker",
            argv=LAUNCHER_ARGV,
            config={"image": image, "network": "host", "pool_size": 1},
        )
        anchor = None
        if anchor_python:
            base = os.environ.get("GP_KERNEL_BASE_IMAGE", "gp/kernel-py-base:bookworm")  # gp's image's base
            anchor = start_anchor(anchor_python, base, Path(tmp))
        try:
            for backend in [*backends, POOLED]:  # warm-up: imports, key pair, listener, page cache
                await gp_start(kernels, backend, api, wait_for_ready)
            await bare_start(image, workdir, wait_for_ready)
            if anchor:
                await anchor.start()
            names = ["bare", *backends, *(["anchor"] if anchor else []), POOLED]
            results: dict[str, list[tuple[float, ...]]] = {name: [] for name in names}
            for _ in range(runs):
                await pool_refilled()
                results["bare"].append(await bare_start(image, workdir, wait_for_ready))
                for backend in backends:
                    results[backend].append(await gp_start(kernels, backend, api, wait_for_ready))
                if anchor:
                    results["anchor"].append(await anchor.start())
                # Last in the round: its pool refills while the next round waits, during no measurement.
                results[POOLED].append(await gp_start(kernels, POOLED, api, wait_for_ready))
        finally:
            if anchor:
                anchor.close()
            close_pools()

    bare_start_median = statistics.median(r[0] for r in results["bare"])
    how = "after wait_for_ready()" if wait_for_ready else "execute_request sent at once"
    print(f"start -> first execute_reply ({how}) and shutdown, median of {runs} (interleaved)")
    print(f"  {'case':<38} {'start':>8} {'ratio':>7} {'shutdown':>9}  left after shutdown")
    labels = {
        "bare": "bare docker run --network host",
        "docker": "gp docker",
        "docker-swarm": "gp docker-swarm",
        "anchor": "gateway_provisioners 0.5.0 docker",
        POOLED: "gp docker, pool_size=1",
    }
    for name, rows in results.items():
        start = statistics.median(r[0] for r in rows)
        shutdown = statistics.median(r[1] for r in rows)
        left = "n/a (--rm)" if name == "bare" else str(sum(int(r[2]) for r in rows))
        print(
            f"  {labels[name]:<38} {start:7.3f}s {start / bare_start_median:6.2f}x {shutdown:8.3f}s  {left}"
        )
    if "anchor" in results:
        theirs = statistics.median(r[0] for r in results["anchor"])
        for name in ("docker", POOLED):
            ours = statistics.median(r[0] for r in results[name])
            print(
                f"  ratio {labels[name]} / gateway_provisioners 0.5.0 docker: {ours / theirs:.2f}x  (target <= 0.60x)"
            )
    print(
        f"  ratio gp docker / bare docker run: {statistics.median(r[0] for r in results['docker']) / bare_start_median:.2f}x  (target <= 1.30x)"
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
    parser.add_argument("--anchor-python", help="python of a venv with gateway_provisioners 0.5.0 + docker")
    parser.add_argument(
        "--wait-for-ready",
        action="store_true",
        help="let every client call wait_for_ready() before its first execute_request (adds ~0.2 s to each)",
    )
    args = parser.parse_args()
    if args.wait_for_ready:
        os.environ["GP_BENCH_WAIT_FOR_READY"] = "1"  # the anchor's runner inherits it

    api = docker.from_env().api
    backends = ["docker"]
    swarm = api.info().get("Swarm") or {}
    if not args.no_swarm and swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        backends.append("docker-swarm")
    await bench_start(args.runs, args.image, backends, api, args.anchor_python, args.wait_for_ready)
    await bench_status_cost(args.image, args.kernels)
    await bench_loop_stall(args.image)


if __name__ == "__main__":
    asyncio.run(main())
