"""Kernelspecs written by gateway_provisioners 0.5.0's own ``jupyter docker-spec install`` (and
``--swarm``), converted by ``gp migrate``, start real kernels on gp's docker backends."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from gp_core._anchor_venv import anchor_jupyter
from gp_core.testing import execute, interrupt_sleep

from .conftest import IMAGE

pytestmark = [pytest.mark.docker]


async def test_a_converted_anchor_spec_runs_a_kernel(kernels, backend, tmp_path, monkeypatch, leftovers):
    anchor_prefix = tmp_path / "anchor"
    args = [
        "docker-spec",
        "install",
        f"--image-name={IMAGE}",
        "--kernel-name=converted",
        f"--prefix={anchor_prefix}",
    ]
    if backend == "docker-swarm":
        args.append("--swarm")
    done = await asyncio.to_thread(anchor_jupyter, *args)
    assert done.returncode == 0, done.stderr
    migrated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gp_core.cli", "migrate", str(anchor_prefix / "share/jupyter/kernels/converted"),
         "--output", str(kernels.directory), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    (result,) = json.loads(migrated.stdout)["kernelspecs"]
    assert result["backend"] == backend and result["validated"]
    # The network comes from the server's environment, the anchor's way (its specs never named one).
    monkeypatch.setenv("GP_DOCKER_NETWORK", "host")
    km = kernels.manager("converted")
    kernel_id = await kernels.start(km)
    try:
        output, reply = await execute(km, "print(6 * 7)")
        assert reply["status"] == "ok" and output == "42\n"
        interrupted = await interrupt_sleep(km)
        assert interrupted["ename"] == "KeyboardInterrupt"
    finally:
        await km.shutdown_kernel()
    assert not leftovers({kernel_id})
    shutil.rmtree(anchor_prefix)
