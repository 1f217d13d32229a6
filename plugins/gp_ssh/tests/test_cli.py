"""``jupyter ssh-spec install``: the kernel.json it writes (golden) and what it refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gp_core.launcher import LAUNCHER_PATH

LAUNCHER_ARGS = [
    "--kernel-id",
    "{kernel_id}",
    "--port-range",
    "{port_range}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
    "--kernel-class-name",
    "ipykernel.ipkernel.IPythonKernel",
]


def ssh_spec(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from gp_ssh.specapp import SshSpecApp; SshSpecApp.launch_instance()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_install_golden(tmp_path: Path) -> None:
    result = ssh_spec(
        "install",
        f"--prefix={tmp_path}",
        "--remote-hosts=node1",
        "--remote-hosts=node2,node3",
        "--python=/opt/venv/bin/python3",
        "--authorized-users=alice",
        "--launch-timeout=60",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/ssh_python"
    launcher = f"{{resource_dir}}/scripts/{LAUNCHER_PATH.name}"
    assert json.loads((spec_dir / "kernel.json").read_text()) == {
        "argv": ["/opt/venv/bin/python3", launcher, *LAUNCHER_ARGS],
        "display_name": "Python on SSH hosts (gp)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": True,
            "supported_encryption": ["curve"],
            "kernel_provisioner": {
                "provisioner_name": "gp-remote-provisioner",
                "config": {
                    "backend": "ssh",
                    "launch_timeout": 60.0,
                    "authorized_users": ["alice"],
                    "remote_hosts": ["node1", "node2", "node3"],
                },
            },
        },
    }
    # The launcher the argv names is staged in the spec (and uploaded to hosts that lack it).
    assert (spec_dir / "scripts" / LAUNCHER_PATH.name).read_bytes() == LAUNCHER_PATH.read_bytes()


def test_install_spark_golden(tmp_path: Path) -> None:
    result = ssh_spec(
        "install",
        f"--prefix={tmp_path}",
        "--spark",
        "--spark-master=spark://master:7077",
        "--spark-home=/opt/spark-3",
        "--extra-spark-opts=--conf spark.ui.enabled=false",
        "--python=python3",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/ssh_python_spark/kernel.json").read_text())
    assert spec["display_name"] == "Spark - Python on SSH hosts (gp)"
    assert spec["argv"][2:] == [
        *LAUNCHER_ARGS,
        "--spark-context-initialization-mode",
        "lazy",
        "--cluster-type",
        "spark",
    ]
    assert spec["env"] == {
        "SPARK_HOME": "/opt/spark-3",
        "PYSPARK_PYTHON": "python3",
        "PYTHONPATH": "/opt/spark-3/python",
        "PYSPARK_SUBMIT_ARGS": (
            "--master spark://master:7077 --deploy-mode client --conf spark.ui.enabled=false pyspark-shell"
        ),
    }
    assert spec["metadata"]["kernel_provisioner"]["config"] == {"backend": "ssh", "launch_timeout": 30.0}


def test_install_without_hosts_leaves_them_to_the_server(tmp_path: Path) -> None:
    result = ssh_spec("install", f"--prefix={tmp_path}", "--kernel-name=plain")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/plain/kernel.json").read_text())
    assert "remote_hosts" not in spec["metadata"]["kernel_provisioner"]["config"]


def test_refuses_bad_input(tmp_path: Path) -> None:
    for args in (
        ["--remote-hosts=user@host"],
        ["--remote-hosts=-oProxyCommand=x"],
        ["--spark-init-mode=soon"],
    ):
        result = ssh_spec("install", f"--prefix={tmp_path}", *args)
        assert result.returncode != 0, args
    assert not (tmp_path / "share").exists()


def test_without_subcommand_lists_install() -> None:
    result = ssh_spec()
    assert result.returncode != 0
    assert "install" in result.stdout + result.stderr
