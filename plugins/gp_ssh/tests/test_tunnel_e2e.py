"""SSH tunnelling (GP_ENABLE_TUNNELING) on the ssh backend, end to end.

The kernel binds only its host's loopback (GP_KERNEL_IP=127.0.0.1) on host 127.0.0.3: at the host's
address, which is what the server would use without a tunnel, nothing listens. The server reaches the
kernel through paramiko forwards over the ssh connection to 127.0.0.3. (All three test "hosts" are this
machine, so its 127.0.0.1 is also the server's: the test proves the path by the tunnel's channel counts
and by the host address refusing the kernel's ports.)
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from gp_core.testing import adopt_kernel, execute, interrupt_sleep

from .conftest import SshKernels, group_alive, handle_of

pytestmark = pytest.mark.ssh

HOST = "127.0.0.3"
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def tunneled_spec(kernels: SshKernels, **overrides: Any) -> str:
    name = kernels.spec("tunneled", remote_hosts=[HOST], tunneling=True, tunnel_max_keep_alive=5, **overrides)
    spec_file = kernels.directory / "specs" / name / "kernel.json"
    spec_file.write_text(
        spec_file.read_text().replace('"env": {', '"env": {"GP_KERNEL_IP": "127.0.0.1", ', 1)
    )
    return name


async def test_a_tunneled_kernel_is_reached_only_through_the_tunnel(kernels: SshKernels) -> None:
    km = kernels.manager(tunneled_spec(kernels))
    await kernels.start(km)
    handle = await handle_of(km)
    assert handle["host"] == HOST
    info = await km.provisioner.get_provisioner_info()
    own = info["tunneled_from"]["connection_info"]
    local = km.get_connection_info()
    assert local["ip"] == "127.0.0.1" and own["ip"] == HOST
    for name in PORT_NAMES:
        assert local[name] != own[name]
        assert _refused(HOST, int(own[name])), f"the kernel's {name} answers on {HOST}: not loopback-only"
    tunnel = km.provisioner._tunnel
    assert tunnel is not None

    output, reply = await execute(km, "print(6 * 7)")
    assert output == "42\n", reply
    reply = await interrupt_sleep(km)  # the comm port, through the tunnel
    assert reply["ename"] == "KeyboardInterrupt"
    used = {remote[1] for remote, count in tunnel.channels.items() if count}
    assert {int(own[name]) for name in ("shell_port", "iopub_port")} <= used
    assert int(info["tunneled_from"]["comm_address"][1]) in used

    await km.restart_kernel()
    assert tunnel._closed and km.provisioner._tunnel is not tunnel  # a new tunnel for the new kernel
    output, _ = await execute(km, "print('again')")
    assert output == "again\n"
    restarted = await handle_of(km)
    await km.shutdown_kernel()
    assert not group_alive(restarted["pgid"])
    for port in tunnel.local_ports.values():
        assert _refused("127.0.0.1", port)  # the tunnel's local ends are closed


async def test_another_server_process_opens_its_own_tunnel(kernels: SshKernels) -> None:
    name = tunneled_spec(kernels)
    km = kernels.manager(name)
    await kernels.start(km)
    info = await km.provisioner.get_provisioner_info()
    other = await adopt_kernel(kernels.directory / "specs", name, info)
    try:
        assert other.get_connection_info()["shell_port"] != km.get_connection_info()["shell_port"]
        output, _ = await execute(other, "print('adopted')")
        assert output == "adopted\n"
    finally:
        await other.shutdown_kernel(now=True)
        await km.cleanup_resources()


async def test_tunneling_on_a_backend_without_it_is_a_clear_error(tmp_path: Any) -> None:
    from gp_core.testing import kernel_manager, start_kernel, write_kernelspec

    write_kernelspec(tmp_path, "k", backend="local", config={"tunneling": True})
    km = kernel_manager(tmp_path, "k")
    with pytest.raises(Exception, match="gp backend 'local' does not support tunneling"):
        await start_kernel(km)
    assert not km.has_kernel or not await km.is_alive()
