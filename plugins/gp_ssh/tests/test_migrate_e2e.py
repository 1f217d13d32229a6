"""A kernelspec written by gateway_provisioners 0.5.0's own ``jupyter ssh-spec install``, converted by
``gp migrate``, starts a real kernel on gp's ssh backend, configured the anchor's way (GP_* variables)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from gp_core._anchor_venv import anchor_jupyter
from gp_core.testing import execute, interrupt_sleep

from .conftest import MARK_VARIABLE, SshKernels, marked_processes

pytestmark = [pytest.mark.ssh]


async def test_a_converted_anchor_spec_runs_a_kernel(
    kernels: SshKernels, tmp_path: Any, monkeypatch: Any
) -> None:
    prefix = tmp_path / "anchor"
    done = await asyncio.to_thread(anchor_jupyter,
        "ssh-spec", "install", "--remote-hosts=127.0.0.2", "--remote-hosts=127.0.0.3", "--authorized-users=gp-tester",
        "--launch-timeout=60", "--kernel-name=converted", f"--prefix={prefix}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec_file = prefix / "share/jupyter/kernels/converted/kernel.json"
    spec = json.loads(spec_file.read_text())
    # What an anchor user had edited for their hosts: the remote python, and an env entry of their own.
    spec["argv"][0] = kernels.sshd["python"]
    spec["env"] = {MARK_VARIABLE: kernels.mark}
    spec_file.write_text(json.dumps(spec))
    out = kernels.directory / "specs"
    migrated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gp_core.cli", "migrate", str(spec_file.parent), "--output", str(out), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    (result,) = json.loads(migrated.stdout)["kernelspecs"]
    assert result["backend"] == "ssh" and result["validated"]
    assert result["server_config"] == []  # this server's GP_REMOTE_HOSTS (conftest) allows both hosts
    config = json.loads((out / "converted/kernel.json").read_text())["metadata"]["kernel_provisioner"][
        "config"
    ]
    assert config["remote_hosts"] == ["127.0.0.2", "127.0.0.3"]
    # The login settings come from the server's environment, as the anchor's did (GP_SSH_PORT, GP_REMOTE_USER).
    ssh_dir = kernels.sshd["dir"]
    for name, value in {
        "GP_SSH_PORT": str(kernels.sshd["port"]),
        "GP_REMOTE_USER": "root",
        "GP_SSH_KEY_FILE": str(ssh_dir / "client_key"),
        "GP_SSH_KNOWN_HOSTS": str(ssh_dir / "known_hosts"),
        "GP_KERNEL_LOG_DIR": str(kernels.log_dir),
    }.items():
        monkeypatch.setenv(name, value)
    kernels.log_dir.mkdir(parents=True, exist_ok=True)
    km = kernels.manager("converted")
    await kernels.start(km)
    try:
        output, reply = await execute(
            km, "import os; print(os.environ['" + MARK_VARIABLE + "'] == '" + kernels.mark + "')"
        )
        assert reply["status"] == "ok" and output == "True\n"
        assert (await interrupt_sleep(km))["ename"] == "KeyboardInterrupt"
    finally:
        await km.shutdown_kernel()
    assert not marked_processes(kernels.mark)
