"""SSH tunnelling (GP_ENABLE_TUNNELING) of docker kernels through the docker host's SSH server.

The container (host networking) binds the kernel's ports on the docker host's loopback only
(GP_KERNEL_IP=127.0.0.1); the server tunnels to them through the test sshd on 127.0.0.3, the "docker
host's" address, where nothing of the kernel listens. Needs the test sshd (scripts/start-sshd.sh).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from gp_core.testing import execute, interrupt_sleep, require_backend

from .conftest import Kernels

pytestmark = [pytest.mark.docker, pytest.mark.ssh]

SSH_HOST = "127.0.0.3"
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


@pytest.fixture
def docker_host_sshd() -> dict[str, Any]:
    ssh_dir = os.environ.get("GP_TEST_SSH_DIR", "")
    port = int(os.environ.get("GP_TEST_SSH_PORT", "22222"))
    try:
        socket.create_connection((SSH_HOST, port), timeout=5).close()
    except OSError as exc:
        require_backend("ssh", f"no test sshd on {SSH_HOST}:{port} ({exc})")
    if not ssh_dir or not Path(ssh_dir, "client_key").is_file():
        require_backend("ssh", "GP_TEST_SSH_DIR is not set (bash scripts/start-sshd.sh)")
    return {
        "tunnel_ssh_host": SSH_HOST,
        "tunnel_ssh_port": port,
        "tunnel_ssh_user": "root",
        "tunnel_ssh_key_file": str(Path(ssh_dir, "client_key")),
        "tunnel_known_hosts_file": str(Path(ssh_dir, "known_hosts")),
    }


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_docker_kernel_through_the_docker_hosts_ssh(
    kernels: Kernels, docker_host_sshd: dict[str, Any]
) -> None:
    kernels.spec(
        config={"tunneling": True, "tunnel_max_keep_alive": 5, **docker_host_sshd},
        env={"GP_KERNEL_IP": "127.0.0.1"},
    )
    km = kernels.manager()
    await kernels.start(km)
    info = await km.provisioner.get_provisioner_info()
    own = info["tunneled_from"]["connection_info"]
    local = km.get_connection_info()
    assert local["ip"] == "127.0.0.1"
    for name in PORT_NAMES:
        assert local[name] != own[name]
        assert _refused(SSH_HOST, int(own[name])), f"the kernel's {name} answers on {SSH_HOST}"
    output, _ = await execute(km, "import os; print(os.path.exists('/.dockerenv'))")
    assert output == "True\n"
    reply = await interrupt_sleep(km)
    assert reply["ename"] == "KeyboardInterrupt"
    tunnel = km.provisioner._tunnel
    assert tunnel is not None and tunnel.channels[("127.0.0.1", int(own["shell_port"]))] > 0
    await km.restart_kernel()
    output, _ = await execute(km, "print(1)")
    assert output == "1\n"
    await km.shutdown_kernel()


async def test_tunneling_without_a_tunnel_host_is_refused(kernels: Kernels) -> None:
    kernels.spec(config={"tunneling": True, "tunnel_ssh_host": ""})
    km = kernels.manager()
    with pytest.raises(Exception, match="set tunnel_ssh_host"):
        await kernels.start(km)
