"""Signals reach a kernel whose launcher no longer answers on its communication port.

Core signals through the launcher's communication port; when that port does not answer while the
kernel still runs, the ``send_signal`` hook delivers the signal through the Docker API instead (the
container's init passes it on to the kernel).
"""

from __future__ import annotations

import pytest

from gp_core.testing import check_interrupt_without_launcher

pytestmark = [pytest.mark.docker]


async def test_interrupt_reaches_a_kernel_whose_launcher_no_longer_answers(kernels, leftovers):
    kernels.spec()
    km = kernels.manager()
    await kernels.start(km)
    await check_interrupt_without_launcher(km)
    await km.shutdown_kernel()
