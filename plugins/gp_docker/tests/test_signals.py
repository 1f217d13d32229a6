"""Signals reach a kernel whose launcher no longer answers on its communication port.

Core signals through the launcher's communication port; when that port does not answer while the
kernel still runs, the ``send_signal`` hook delivers the signal through the Docker API instead (the
container's init passes it on to the kernel).
"""

from __future__ import annotations

import socket

import pytest

from gp_core.testing import execute, interrupt_sleep, silence_comm_port

pytestmark = [pytest.mark.docker]


async def test_interrupt_reaches_a_kernel_whose_launcher_no_longer_answers(kernels, leftovers):
    kernels.spec()
    km = kernels.manager()
    await kernels.start(km)
    host, port = await silence_comm_port(km)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=5):
        pass
    reply = await interrupt_sleep(km)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    output, _ = await execute(km, "print(6 * 7)")  # interrupted, not killed
    assert output.strip() == "42"
    await km.shutdown_kernel()
