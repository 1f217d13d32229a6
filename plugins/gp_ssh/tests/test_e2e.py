"""End to end: real kernels started through AsyncKernelManager on the test sshd's three "hosts".

Each kernel proves it runs under sshd (its ``SSH_CONNECTION`` names the host and port it was placed
on). The hosts are this machine, so the tests look at the "remote" processes and files directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gp_ssh._connections import POOL
from gp_ssh._placement import PLACER

from gp_core import BackendError, LaunchError
from gp_core.testing import (
    adopt_kernel,
    check_interrupt_without_launcher,
    execute,
    interrupt_sleep,
    launcher_argv,
)

from .conftest import HOSTS, SshKernels, group_alive, handle_of, marked_processes

pytestmark = pytest.mark.ssh

WHERE = "import os; print(os.environ['SSH_CONNECTION'].split()[2:])"


async def where(km: Any) -> tuple[str, int]:
    """(server address, server port) of the SSH session the kernel runs in."""
    output, reply = await execute(km, WHERE)
    assert reply["status"] == "ok", output
    host, port = json.loads(output.replace("'", '"'))
    return host, int(port)


async def test_lifecycle_execute_interrupt_restart_shutdown(kernels: SshKernels, monkeypatch: Any) -> None:
    monkeypatch.setenv("GP_REMOTE_PWD", "never-sent-to-a-kernel")
    km = kernels.manager(kernels.spec())
    kernel_id = await kernels.start(km)
    handle = await handle_of(km)
    assert handle["host"] in HOSTS
    assert km.provisioner.connection_info["ip"] == handle["host"]
    assert await where(km) == (handle["host"], kernels.sshd["port"])
    output, _ = await execute(km, "import os; print(os.environ['KERNEL_ID'], 'GP_REMOTE_PWD' in os.environ)")
    assert output.split() == [kernel_id, "False"]

    reply = await interrupt_sleep(km)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"

    await km.restart_kernel()
    restarted = await handle_of(km)
    assert restarted["pid"] != handle["pid"]
    assert not group_alive(handle["pgid"])  # the first incarnation is gone
    assert await where(km) == (restarted["host"], kernels.sshd["port"])

    await km.shutdown_kernel()
    assert not group_alive(restarted["pgid"])
    assert not Path(restarted["log_path"]).exists()  # a kernel that ran fine leaves no log behind
    assert PLACER.host_of(kernel_id) is None


CONNECTION_DIR = "import os; from ipykernel.connect import get_connection_file; print(os.path.dirname(get_connection_file()))"


@pytest.mark.parametrize("now", [True, False])
async def test_the_launchers_connection_directory_is_removed(kernels: SshKernels, now: bool) -> None:
    # It holds the kernel's HMAC key; a kernel killed by a signal never ran the launcher's atexit clean-up.
    km = kernels.manager(kernels.spec())
    await kernels.start(km)
    output, _ = await execute(km, CONNECTION_DIR)
    connection_dir = Path(output.strip())
    assert (connection_dir / "kernel.json").exists()
    await km.shutdown_kernel(now=now)
    assert not connection_dir.exists()


async def test_hostile_kernel_values_are_data(kernels: SshKernels, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    values = {
        "KERNEL_SUBST": f"$(touch {canary}/subst)",
        "KERNEL_BACKTICK": f"`touch {canary}/backtick`",
        "KERNEL_SEMICOLON": f"x; touch {canary}/semicolon",
        "KERNEL_QUOTES": 'it\'s "quoted" \\\' \\"',
        "KERNEL_NEWLINE": f"one\ntouch {canary}/newline\n",
        "KERNEL_PIPE": f"a | touch {canary}/pipe & > {canary}/redirect",
        "KERNEL_USERNAME": f"eve'; touch {canary}/username; echo '",
        "KERNEL_CUSTOM_ANYTHING": "$HOME ${PATH} $$ *",
    }
    km = kernels.manager(kernels.spec())
    await kernels.start(km, **values)
    output, reply = await execute(
        km, f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {sorted(values)!r}}}))"
    )
    assert reply["status"] == "ok", output
    assert json.loads(output) == values  # every KERNEL_* value arrives, byte for byte
    assert list(canary.iterdir()) == []
    await km.shutdown_kernel()


async def test_round_robin_spreads_concurrent_launches(kernels: SshKernels) -> None:
    name = kernels.spec(load_balancing_algorithm="round-robin")
    managers = [kernels.manager(name) for _ in HOSTS]
    await asyncio.gather(*(kernels.start(km) for km in managers))
    placed = [await where(km) for km in managers]
    assert sorted(host for host, _ in placed) == HOSTS
    await asyncio.gather(*(km.shutdown_kernel() for km in managers))


async def test_least_connection_fills_the_emptiest_host(kernels: SshKernels) -> None:
    name = kernels.spec(load_balancing_algorithm="least-connection")
    assert not any(PLACER.load().get(host) for host in HOSTS), "another test left kernels counted"
    managers = [kernels.manager(name) for _ in HOSTS]
    await asyncio.gather(*(kernels.start(km) for km in managers))
    hosts = [(await where(km))[0] for km in managers]
    assert sorted(hosts) == HOSTS
    freed = hosts[1]
    await managers[1].shutdown_kernel()
    assert PLACER.load().get(freed, 0) == 0  # released on terminate
    newcomer = kernels.manager(name)
    await kernels.start(newcomer)
    assert (await where(newcomer))[0] == freed
    assert {host: PLACER.load().get(host, 0) for host in HOSTS} == dict.fromkeys(HOSTS, 1)
    await asyncio.gather(*(km.shutdown_kernel() for km in [managers[0], managers[2], newcomer]))


async def test_kernel_remote_host_override(kernels: SshKernels) -> None:
    km = kernels.manager(kernels.spec())
    await kernels.start(km, KERNEL_REMOTE_HOST="127.0.0.3")
    assert (await where(km))[0] == "127.0.0.3"
    await km.shutdown_kernel()

    refused = kernels.manager(kernels.spec("two-hosts", remote_hosts=HOSTS[:2]))
    with pytest.raises(BackendError, match=r"KERNEL_REMOTE_HOST='127.0.0.3' is not one of"):
        await kernels.start(refused, KERNEL_REMOTE_HOST="127.0.0.3")


async def test_a_frozen_kernel_is_still_shut_down(kernels: SshKernels) -> None:
    # SIGSTOP: neither the kernel nor its launcher's communication port answers any more; shutdown must
    # still remove it (the anchor's kernels lingered ~29 s, as only the launcher could signal them).
    km = kernels.manager(kernels.spec())
    await kernels.start(km)
    handle = await handle_of(km)
    os.killpg(handle["pgid"], signal.SIGSTOP)
    await km.shutdown_kernel()
    assert not group_alive(handle["pgid"])


async def test_interrupt_reaches_a_kernel_whose_launcher_no_longer_answers(kernels: SshKernels) -> None:
    # The anchor could only signal through the launcher; gp falls back to `kill -s INT` over SSH.
    km = kernels.manager(kernels.spec())
    await kernels.start(km)
    handle = await handle_of(km)
    await check_interrupt_without_launcher(km)
    await km.shutdown_kernel()
    assert not group_alive(handle["pgid"])


async def test_a_kernel_killed_behind_our_back_is_reported_dead(kernels: SshKernels) -> None:
    km = kernels.manager(kernels.spec())
    await kernels.start(km)
    handle = await handle_of(km)
    os.killpg(handle["pgid"], signal.SIGKILL)
    while group_alive(handle["pgid"]):
        await asyncio.sleep(0.05)
    assert not await km.is_alive()
    await km.shutdown_kernel(now=True)


async def test_another_server_process_can_adopt_and_stop_the_kernel(kernels: SshKernels) -> None:
    name = kernels.spec()
    km = kernels.manager(name)
    await kernels.start(km)
    info = await km.provisioner.get_provisioner_info()
    adopted = await adopt_kernel(kernels.directory / "specs", name, info)
    kernels.managers.append(adopted)
    assert await adopted.is_alive()
    await adopted.shutdown_kernel(now=True)
    assert not group_alive(info["handle"]["pgid"])
    await km.cleanup_resources()  # the original manager lets go (its kernel is gone)


async def test_launcher_upload(kernels: SshKernels) -> None:
    km = kernels.manager(kernels.spec(upload_launcher="always"))
    kernel_id = await kernels.start(km)
    handle = await handle_of(km)
    copy = kernels.log_dir / f"gp-launcher-{kernel_id}.py"
    assert handle["upload_path"] == str(copy)
    assert copy.is_file()
    output, _ = await execute(km, "import sys; print(sys.argv[0])")
    assert output.strip() == str(copy)  # the kernel runs the uploaded copy
    await km.shutdown_kernel()
    assert not copy.exists()


async def test_connection_reuse_and_cycles_leave_nothing(kernels: SshKernels) -> None:
    name = kernels.spec(remote_hosts=["127.0.0.2"])
    km = kernels.manager(name)
    await kernels.start(km)  # the first launch may log in; the next ten must not
    await km.shutdown_kernel()
    handshakes = POOL.handshakes
    pgids = []
    for _ in range(10):
        km = kernels.manager(name)  # a manager's ZMQ context ends with its kernel
        await kernels.start(km)
        pgids.append((await handle_of(km))["pgid"])
        await km.shutdown_kernel()
    assert POOL.handshakes == handshakes
    assert not [pgid for pgid in pgids if group_alive(pgid)]
    assert marked_processes(kernels.mark) == []
    assert list(kernels.log_dir.iterdir()) == []  # no logs, no launcher copies


# ------------------------------------------------------------------ failures: clear, fast, nothing left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sshd_not_listening(kernels: SshKernels) -> None:
    port = free_port()
    km = kernels.manager(kernels.spec(remote_hosts=["127.0.0.2"], ssh_port=port))
    with pytest.raises(BackendError, match=rf"Cannot connect to root@127\.0\.0\.2:{port}"):
        await kernels.start(km)
    assert PLACER.load().get("127.0.0.2", 0) == 0


@pytest.fixture
def stranger_key(tmp_path: Path) -> Path:
    """A key the test sshd does not know."""
    key = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


async def test_login_refused(kernels: SshKernels, stranger_key: Path) -> None:
    stranger = stranger_key
    km = kernels.manager(kernels.spec(remote_hosts=["127.0.0.3"], ssh_key_file=str(stranger)))
    with pytest.raises(BackendError, match=r"SSH login to root@127\.0\.0\.3:\d+ was refused .*stranger_key"):
        await kernels.start(km)


async def test_unknown_host_key_is_rejected_by_default(kernels: SshKernels, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    km = kernels.manager(kernels.spec(remote_hosts=["127.0.0.1"], known_hosts_file=str(empty)))
    with pytest.raises(BackendError, match=r"host key of 127\.0\.0\.1:\d+ is unknown"):
        await kernels.start(km)


async def test_missing_python(kernels: SshKernels) -> None:
    argv = launcher_argv("/nonexistent/bin/python3")
    km = kernels.manager(kernels.spec(remote_hosts=["127.0.0.2"], argv=argv))
    with pytest.raises(BackendError, match=r"127\.0\.0\.2.*/nonexistent/bin/python3 was not found"):
        await kernels.start(km)
    assert not kernels.log_dir.exists() or list(kernels.log_dir.iterdir()) == []


async def test_a_kernel_dying_at_start_up_reports_its_log(kernels: SshKernels) -> None:
    code = "import sys; print('cannot import the kernel: boom', file=sys.stderr); sys.exit(3)"
    argv = [kernels.sshd["python"], "-c", code, "--kernel-id", "{kernel_id}"]
    km = kernels.manager(kernels.spec(remote_hosts=["127.0.0.3"], argv=argv))
    with pytest.raises(
        LaunchError, match=r"(?s)exited during start-up on host 127\.0\.0\.3.*boom"
    ) as failure:
        await kernels.start(km)
    # The log of a failed launch is kept for whoever investigates, and the error says where.
    logs = list(kernels.log_dir.glob("gp-kernel-*.log"))
    assert len(logs) == 1 and str(logs[0]) in str(failure.value)
    assert "boom" in logs[0].read_text()
