"""The kernelspec ``jupyter ssh-spec install`` writes really runs, as a user would set it up.

The installer's flags give what belongs to the kernelspec (host, remote python, authorised users, port
range, launch timeout); the server's traitlets config (``c.SshOptions``) gives the SSH login, and the
server's environment (``GP_KERNEL_LOG_DIR``) the remote log directory. The kernel starts from the
installed spec directory itself through jupyter_client's AsyncKernelManager on the test sshd.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from gp_core.launcher import LAUNCHER_PATH
from gp_core.testing import TEST_USERNAME, execute, kernel_env, kernel_manager

from .conftest import group_alive, handle_of, processes_with

pytestmark = pytest.mark.ssh

HOST = "127.0.0.2"
PORT_RANGE = (40000, 41999)


def install(prefix: Path, python: str) -> Path:
    """Run the real ``jupyter ssh-spec install`` (the console script, found by ``jupyter``)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "ssh-spec",
            "install",
            f"--prefix={prefix}",
            "--kernel-name=installed",
            f"--remote-hosts={HOST}",
            f"--python={python}",
            f"--authorized-users={TEST_USERNAME}",
            f"--port-range={PORT_RANGE[0]}..{PORT_RANGE[1]}",
            "--launch-timeout=60",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    specs = prefix / "share" / "jupyter" / "kernels"
    assert f"Installed kernelspec installed in {specs / 'installed'}" in result.stdout
    return specs


async def test_installed_kernelspec_runs_on_the_ssh_host(
    tmp_path: Path, sshd: dict[str, Any], ssh_off_the_loop: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = install(tmp_path / "prefix", sshd["python"])
    spec_dir = specs / "installed"
    config = json.loads((spec_dir / "kernel.json").read_text())["metadata"]["kernel_provisioner"]["config"]
    assert config["backend"] == "ssh" and config["remote_hosts"] == [HOST]

    log_dir = tmp_path / "remote-logs"
    monkeypatch.setenv("GP_KERNEL_LOG_DIR", str(log_dir))  # the server's environment
    server_config = Config()  # the server's config, e.g. jupyter_server_config.py
    server_config.SshOptions.ssh_port = sshd["port"]
    server_config.SshOptions.remote_user = "root"
    server_config.SshOptions.ssh_key_file = str(sshd["dir"] / "client_key")
    server_config.SshOptions.known_hosts_file = str(sshd["dir"] / "known_hosts")

    # The installed authorized_users holds: anyone else is refused before anything is created.
    refused = kernel_manager(specs, "installed", config=server_config)
    with pytest.raises(PermissionError, match="authorized_users"):
        await refused.start_kernel(env=kernel_env(KERNEL_USERNAME="mallory"))

    kernel_id = str(uuid.uuid4())
    km = kernel_manager(specs, "installed", config=server_config)
    await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
    try:
        handle = await handle_of(km)
        assert handle["host"] == HOST
        ports = [km.provisioner.connection_info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "hb")]
        assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] for port in ports), ports

        code = (
            "import json, os, sys; print(json.dumps([os.environ['SSH_CONNECTION'].split()[2:], "
            "sys.executable, sys.argv[0], os.environ['KERNEL_ID'], 6 * 7]))"
        )
        output, reply = await execute(km, code)
        assert reply["status"] == "ok", output
        where, python, launcher, seen_id, answer = json.loads(output)
        assert where == [HOST, str(sshd["port"])]  # it runs in an SSH session on the chosen host
        assert python == sshd["python"]  # --python
        assert Path(launcher) == spec_dir / "scripts" / LAUNCHER_PATH.name  # the spec's own launcher
        assert seen_id == kernel_id
        assert answer == 42
        assert Path(handle["log_path"]).parent == log_dir  # GP_KERNEL_LOG_DIR from the server env

        await km.shutdown_kernel()
        assert not group_alive(handle["pgid"])
        assert processes_with(f"KERNEL_ID={kernel_id}") == []
        assert not Path(handle["log_path"]).exists()
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
        left = processes_with(f"KERNEL_ID={kernel_id}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
