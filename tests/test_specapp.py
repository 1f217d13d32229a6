"""``jupyter local-spec install``: the common installer options and the kernelspec it writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gp_core.specapp import LocalSpecApp
from gp_core.testing import execute, kernel_manager, start_kernel


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from gp_core.specapp import LocalSpecApp; LocalSpecApp.launch_instance()",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def test_install_writes_a_spec_selecting_the_backend(tmp_path):
    result = _install(
        "install",
        f"--prefix={tmp_path}",
        "--kernel-name=gp_local",
        "--display-name=Local via gp",
        "--authorized-users=alice",
        "--authorized-users=bob",
        "--port-range=40000..42000",
        "--launch-timeout=45",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/gp_local"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Local via gp"
    assert spec["interrupt_mode"] == "signal"
    assert spec["argv"][1] == "{resource_dir}/scripts/launch_ipykernel.py"
    assert {"{kernel_id}", "{response_address}", "{public_key}", "{port_range}"} <= set(spec["argv"])
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "gp-remote-provisioner",
        "config": {
            "backend": "local",
            "launch_timeout": 45.0,
            "authorized_users": ["alice", "bob"],
            "port_range": "40000..42000",
        },
    }
    assert (spec_dir / "scripts/launch_ipykernel.py").is_file()


def test_existing_spec_needs_replace(tmp_path):
    assert _install("install", f"--prefix={tmp_path}").returncode == 0
    again = _install("install", f"--prefix={tmp_path}")
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--replace" in again.stderr
    assert _install("install", f"--prefix={tmp_path}", "--replace").returncode == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--port-range=1..2", "port_range"),
        ("--language=Scala", "not supported"),
        ("--ipykernel-subclass-name=json.JSONDecoder", "not a subclass of IPythonKernel"),
        ("--ipykernel-subclass-name=not a class", "dotted"),
        ("--kernel-name=../escape", "invalid"),
    ],
)
def test_bad_options_are_refused(tmp_path, option, message):
    result = _install("install", f"--prefix={tmp_path}", option)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "share").exists()


def test_no_subcommand_lists_install():
    result = _install()
    assert result.returncode == 1
    assert "install" in result.stdout + result.stderr


async def test_installed_spec_runs_under_jupyter_client(tmp_path):
    app = LocalSpecApp()
    app.initialize(["install", f"--prefix={tmp_path}", "--kernel-name=gp_local"])
    app.subapp.install()
    km = kernel_manager(tmp_path / "share/jupyter/kernels", "gp_local")
    await start_kernel(km)
    try:
        output, _reply = await execute(km, "print(40 + 2)")
        assert output == "42\n"
    finally:
        await km.shutdown_kernel()
