"""gp-ssh benchmarks against the test sshd, measured side by side in one run (ratios are the result).

1. Start latency, start request -> first execute_reply: gp's ``ssh`` backend vs a bare paramiko exec of
   ``python -m ipykernel_launcher -f <connection file>`` on the same host; both over an already open SSH
   connection, runs interleaved so machine noise hits both. Median of N.
   Clients send their ``execute_request`` at once (``--wait-for-ready``: after ``wait_for_ready()``, which
   adds a fixed ~0.2 s to every row; see ``_shared.first_reply``).
2. Shutdown: how long ``shutdown_kernel()`` takes and whether the kernel's process group is really gone
   when it returns (the anchor's lingered ~29 s after its shutdown returned).
3. Poll cost: one ``poll()`` of a running kernel vs the floor, a bare exec of ``true`` on the same connection.
4. Event-loop stall: the largest lateness of a 5 ms sleep loop while a gp ssh kernel launches and shuts
   down (the anchor did its SSH work on the loop: 249 ms).
5. SSH handshakes made over all the launches (connection reuse: one per host).

6. With ``--anchor-python``: gateway_provisioners 0.5.0's DistributedProvisioner in row 1 too, from a
   separate venv (``python -m venv V && V/bin/pip install gateway_provisioners==0.5.0 ipykernel``; the
   bench_docker venv, which adds ``docker``, does as well), same host, same sshd, interleaved with gp's
   runs: a long-lived runner process in that venv (:data:`ANCHOR_RUNNER`) installs the anchor's kernelspec
   with its own ``jupyter ssh-spec install`` once, then starts one kernel per request. Figures: start ->
   first reply (the ratio gp / anchor has a target of <= 0.60x), its ``shutdown_kernel()`` duration and
   how long its kernel outlives it. It logs in anew for every launch (its design) and with ``~/.ssh`` keys
   only, so it runs with HOME pointing at a temporary copy of the test key and known_hosts.

The sshd's hosts are this machine, so the bare kernel reads the connection file the benchmark wrote.
Needs the test sshd (``bash scripts/start-sshd.sh``):
``python bench/bench_ssh.py [--runs N] [--host H] [--anchor-python V/bin/python]``;
``GP_TEST_SSH_DIR``, ``GP_TEST_SSH_PORT``, ``GP_TEST_PYTHON`` as for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
os.environ.setdefault("GP_RESPONSE_PORT", "0")

import paramiko
from _shared import (  # bench/_shared.py, beside this script
    RUNNER_HELPERS_SOURCE,
    AnchorProcess,
    first_reply,
    free_port,
    shut_down,
    start_to_first_reply,
)
from gp_ssh._connections import POOL, SshTarget
from gp_ssh._remote import poll as ssh_poll
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from gp_core.testing import execute, kernel_env, kernel_manager, launcher_argv, write_kernelspec

ROOT = Path(__file__).resolve().parent.parent


class Setup:
    def __init__(self, host: str, wait_for_ready: bool) -> None:
        self.host = host
        self.wait_for_ready = wait_for_ready  # see _shared.first_reply
        self.ssh_dir = Path(os.environ.get("GP_TEST_SSH_DIR", ROOT / ".ci-state" / "ssh"))
        self.port = int(os.environ.get("GP_TEST_SSH_PORT", "22222"))
        self.python = os.environ.get("GP_TEST_PYTHON") or sys.executable
        self.work = Path(tempfile.mkdtemp(prefix="gp-bench-ssh-"))
        self.config = {
            "remote_hosts": [host],
            "ssh_port": self.port,
            "remote_user": "root",
            "ssh_key_file": str(self.ssh_dir / "client_key"),
            "known_hosts_file": str(self.ssh_dir / "known_hosts"),
            "kernel_log_dir": str(self.work / "logs"),
        }
        write_kernelspec(
            self.work / "specs", "gp", backend="ssh", argv=launcher_argv(self.python), config=self.config
        )
        self.bare = paramiko.SSHClient()
        self.bare.load_system_host_keys(str(self.ssh_dir / "known_hosts"))
        self.bare.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.bare.connect(
            host,
            port=self.port,
            username="root",
            key_filename=str(self.ssh_dir / "client_key"),
            look_for_keys=False,
            allow_agent=False,
        )

    def target(self) -> SshTarget:
        return SshTarget(
            self.host, self.port, "root", str(self.ssh_dir / "client_key"), str(self.ssh_dir / "known_hosts")
        )


def group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


async def gp_start(setup: Setup) -> tuple[float, float, bool]:
    """(start -> first reply, shutdown duration, group gone when shutdown returned)."""
    km = kernel_manager(setup.work / "specs", "gp")
    elapsed = await start_to_first_reply(km, setup.wait_for_ready, env=kernel_env())
    pgid = (await km.provisioner.get_provisioner_info())["handle"]["pgid"]
    started = time.perf_counter()
    await km.shutdown_kernel()
    return elapsed, time.perf_counter() - started, not group_alive(pgid)


async def bare_start(setup: Setup) -> float:
    connection_file = str(setup.work / f"bare-{uuid.uuid4().hex}.json")
    write_connection_file(connection_file, ip=setup.host, key=uuid.uuid4().hex.encode())
    command = f"exec {shlex.quote(setup.python)} -m ipykernel_launcher -f {shlex.quote(connection_file)} >/dev/null 2>&1"
    started = time.perf_counter()

    def run() -> paramiko.Channel:
        channel = setup.bare.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(command)
        return channel

    channel = await asyncio.to_thread(run)
    client = AsyncKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        reply = await first_reply(client, setup.wait_for_ready)
        assert reply["status"] == "ok"
        elapsed = time.perf_counter() - started
        await shut_down(client)
    finally:
        client.stop_channels()
    await asyncio.to_thread(channel.recv_exit_status)
    channel.close()
    return elapsed


async def max_stall(work: Callable[[], Awaitable[Any]]) -> float:
    """Largest lateness of a 5 ms sleep loop while ``work`` runs."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while not done:
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)

    task = asyncio.create_task(ticker())
    try:
        await work()
    finally:
        done = True
        await task
    return worst


def start_anchor(setup: Setup, anchor_python: str) -> AnchorProcess:
    """gateway_provisioners 0.5.0's DistributedProvisioner in its own venv, one kernel per request.

    Each request's figures: (start -> first reply, shutdown duration, seconds its kernel outlived
    ``shutdown_kernel()``).
    """
    home = setup.work / "anchor-home"  # it logs in with ~/.ssh keys only
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(setup.ssh_dir / "client_key", home / ".ssh" / "id_ed25519")
    shutil.copy(setup.ssh_dir / "known_hosts", home / ".ssh" / "known_hosts")
    env = {
        **os.environ,
        "HOME": str(home),
        "GP_SSH_PORT": str(setup.port),
        "GP_REMOTE_USER": "root",
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": str(free_port()),
        "GP_KERNEL_LOG_DIR": str(setup.work),
    }
    args = [setup.host, str(setup.work / "anchor-prefix")]
    return AnchorProcess(anchor_python, ANCHOR_RUNNER, args, env, setup.work / "anchor.log")


# Runs in the anchor's venv: python -c ANCHOR_RUNNER HOST PREFIX. Installs the anchor's kernelspec under
# PREFIX, then starts one kernel per line read from stdin and prints one JSON line of figures per kernel:
# [start -> first reply, shutdown_kernel() duration, seconds its kernel outlived shutdown_kernel()].
ANCHOR_RUNNER = (
    RUNNER_HELPERS_SOURCE
    + r"""
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

results = os.fdopen(os.dup(1), "w")  # the figures' own channel: anything else printed goes to stderr
os.dup2(2, 1)
host, prefix = sys.argv[1], Path(sys.argv[2])
from gateway_provisioners.remote_provisioner import RemoteProvisionerBase
if RemoteProvisionerBase.ip_is_local(host):
    sys.exit(f"the anchor starts kernels on {host} as local processes, not over SSH: pick another --host")
# The anchor's installer assembles its launcher (server_listener.py is a stub until then).
subprocess.run([str(Path(sys.executable).parent / "jupyter-ssh-spec"), "install", f"--prefix={prefix}",
                f"--remote-hosts={host}", "--kernel-name=anchor"], check=True, capture_output=True)
specs = prefix / "share/jupyter/kernels"
spec_file = specs / "anchor" / "kernel.json"
spec = json.loads(spec_file.read_text())
spec["argv"][0] = sys.executable  # over SSH the PATH is minimal
spec["metadata"]["kernel_provisioner"]["config"]["launch_timeout"] = 60
spec_file.write_text(json.dumps(spec))

def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

async def once():
    km = AsyncKernelManager(kernel_name="anchor", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    latency = await start_to_first_reply(
        km, os.environ.get("GP_BENCH_WAIT_FOR_READY") == "1", env={**os.environ, "KERNEL_USERNAME": "gp-bench"}
    )
    pid = int(km.provisioner.pid)
    stopping = time.perf_counter()
    await km.shutdown_kernel()
    returned = time.perf_counter()
    while alive(pid) and time.perf_counter() - returned < 60:  # its kernel outlives shutdown_kernel()
        await asyncio.sleep(0.05)
    return [latency, returned - stopping, time.perf_counter() - returned]

async def main():
    while await asyncio.to_thread(sys.stdin.readline):
        print(json.dumps(await once()), file=results, flush=True)

asyncio.run(main())
"""
)


async def bench(runs: int, host: str, anchor_python: str | None, wait_for_ready: bool) -> None:
    setup = Setup(host, wait_for_ready)
    anchor = start_anchor(setup, anchor_python) if anchor_python else None
    try:
        await gp_start(setup)  # warm-up: imports, key pair, listener, SSH login, page cache
        await bare_start(setup)
        if anchor:
            await anchor.start()  # its warm-up (and an early failure, before gp's runs)
        gp, bare, shutdowns, gone = [], [], [], []
        theirs: list[tuple[float, float, float]] = []
        for _ in range(runs):  # interleaved: gp, bare, anchor, gp, bare, anchor...
            elapsed, shutdown, really_gone = await gp_start(setup)
            gp.append(elapsed)
            shutdowns.append(shutdown)
            gone.append(really_gone)
            bare.append(await bare_start(setup))
            if anchor:
                theirs.append(await anchor.start())
    finally:
        if anchor:
            anchor.close()
    gp_median, bare_median = statistics.median(gp), statistics.median(bare)
    how = "after wait_for_ready()" if wait_for_ready else "execute_request sent at once"
    print(
        f"start -> first execute_reply ({how}) on {host}, median of {runs} (interleaved, warm SSH connections)"
    )
    print(f"  bare paramiko exec of ipykernel_launcher : {bare_median:.3f} s")
    print(f"  gp ssh backend                           : {gp_median:.3f} s")
    if theirs:
        anchor_median = statistics.median(r[0] for r in theirs)
        print(
            f"  gateway_provisioners 0.5.0 ssh           : {anchor_median:.3f} s (new SSH login per launch)"
        )
    print(f"  ratio gp / bare                          : {gp_median / bare_median:.2f}x")
    if theirs:
        print(
            f"  ratio gp ssh / gateway_provisioners 0.5.0 ssh: {gp_median / anchor_median:.2f}x (target <= 0.60x)"
        )
    print("shutdown_kernel()")
    print(f"  median duration                          : {statistics.median(shutdowns):.3f} s")
    print(f"  process group gone when it returned      : {sum(gone)}/{len(gone)}")
    if theirs:
        print("gateway_provisioners 0.5.0 DistributedProvisioner shutdown_kernel(), median")
        print(f"  duration                                 : {statistics.median(r[1] for r in theirs):.3f} s")
        print(
            f"  kernel still alive after shutdown returned: {statistics.median(r[2] for r in theirs):.2f} s"
        )

    km = kernel_manager(setup.work / "specs", "gp")
    await km.start_kernel(env=kernel_env())
    await execute(km, "1")  # the kernel is up: its start-up no longer competes with the polls for the CPU
    handle = (await km.provisioner.get_provisioner_info())["handle"]
    options = km.provisioner.options
    log = logging.getLogger("bench")
    polls, floors = [], []
    for _ in range(20):
        started = time.perf_counter()
        assert await ssh_poll(handle, options, False, log) is None
        polls.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.to_thread(POOL.run, setup.target(), "true\n", 30)
        floors.append(time.perf_counter() - started)
    await km.shutdown_kernel()
    print("poll of a running kernel, median of 20")
    print(f"  bare exec of 'true' on the same connection : {statistics.median(floors) * 1000:.1f} ms")
    print(f"  gp ssh poll()                              : {statistics.median(polls) * 1000:.1f} ms")

    stall = await max_stall(lambda: gp_start(setup))
    print(f"largest event-loop stall during one launch + shutdown: {stall * 1000:.1f} ms (anchor: 249 ms)")
    print(f"SSH handshakes made by gp over all of the above: {POOL.handshakes}")
    setup.bare.close()
    shutil.rmtree(setup.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--anchor-python", help="python of a venv with gateway_provisioners 0.5.0")
    parser.add_argument(
        "--wait-for-ready",
        action="store_true",
        help="let every client call wait_for_ready() before its first execute_request (adds ~0.2 s to each)",
    )
    args = parser.parse_args()
    if args.wait_for_ready:
        os.environ["GP_BENCH_WAIT_FOR_READY"] = "1"  # the anchor's runner inherits it
    asyncio.run(bench(args.runs, args.host, args.anchor_python, args.wait_for_ready))


if __name__ == "__main__":
    main()
