"""End to end: R kernels (gp's R launcher, IRkernel) on the test sshd's "hosts"."""

from __future__ import annotations

from typing import Any

import pytest

from gp_core.testing import (
    check_r_kernel_lifecycle,
    execute,
    interrupt_r_sleep,
    r_kernel_missing,
    r_launcher_argv,
    require_language,
)

from .conftest import HOSTS, SshKernels, group_alive, handle_of

pytestmark = [pytest.mark.ssh, pytest.mark.r]


@pytest.fixture(autouse=True)
def r_available() -> None:
    missing = r_kernel_missing()
    if missing:
        require_language("r", missing)


def r_spec(kernels: SshKernels, **overrides: Any) -> str:
    return kernels.spec("ssh_r", argv=r_launcher_argv(kernels.sshd["python"]), language="R", **overrides)


async def test_r_kernel_lifecycle_over_ssh(kernels: SshKernels) -> None:
    km = kernels.manager(r_spec(kernels))
    kernel_id = await kernels.start(km)
    handle = await handle_of(km)
    assert handle["host"] in HOSTS
    output, _ = await execute(
        km, 'cat(strsplit(Sys.getenv("SSH_CONNECTION"), " ")[[1]][3], Sys.getenv("KERNEL_ID"))'
    )
    assert output.split() == [handle["host"], kernel_id]  # R itself runs in the ssh session on that host
    await check_r_kernel_lifecycle(km)
    assert not group_alive(handle["pgid"])


async def test_r_interrupt_without_the_launcher_goes_over_ssh(kernels: SshKernels) -> None:
    """With the reporter (comm port) gone, the ssh backend's send_signal still interrupts R."""
    km = kernels.manager(r_spec(kernels))
    await kernels.start(km)
    try:
        handle = await handle_of(km)
        info = await km.provisioner.get_provisioner_info()
        reporter = _reporter_of(int(handle["pid"]))
        import os
        import signal

        os.kill(reporter, signal.SIGKILL)  # the launcher's comm port no longer answers
        reply, took = await interrupt_r_sleep(km)
        assert reply["status"] == "abort" and took < 20, (reply, took, info["comm_address"])
        output, _ = await execute(km, "cat(2 + 2)")
        assert output == "4"
    finally:
        await km.shutdown_kernel(now=True)


def _reporter_of(r_pid: int) -> int:
    """The R launcher's forked reporter: R's child running launch_irkernel.py."""
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == str(r_pid) and b"launch_irkernel.py" in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no reporter process under the R kernel {r_pid}")
