"""``jupyter docker-spec install`` (golden kernel.json) and ``jupyter image-bootstrap install``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gp_core.bootstrap import install_launchers
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
]
IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"


def run_app(app: str, *args: str) -> subprocess.CompletedProcess[str]:
    module, _, cls = app.rpartition(".")
    code = f"from {module} import {cls}; {cls}.launch_instance()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def docker_spec(*args: str) -> subprocess.CompletedProcess[str]:
    return run_app("gp_docker.specapp.DockerSpecApp", *args)


def test_console_scripts_and_backends_are_registered():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["jupyter-docker-spec"] == "gp_docker.specapp:DockerSpecApp.launch_instance"
    assert scripts["jupyter-image-bootstrap"] == "gp_core.bootstrap:ImageBootstrapApp.launch_instance"
    backends = {ep.name: ep.value for ep in entry_points(group="gp_core.backends")}
    assert backends["docker"] == "gp_docker.container"
    assert backends["docker-swarm"] == "gp_docker.swarm"


def test_docker_spec_install_golden(tmp_path, no_docker_env):
    result = docker_spec(
        "install",
        f"--prefix={tmp_path}",
        "--image-name=site/kernel-py:1.2",
        "--display-name=Python in Docker",
        "--authorized-users=alice",
        "--port-range=40000..42000",
        "--launch-timeout=45",
        "--network=kernels",
        "--pool-size=2",
        "--ipykernel-subclass-name=ipykernel.ipkernel.IPythonKernel",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/docker_python"
    assert sorted(p.name for p in spec_dir.iterdir()) == ["kernel.json"]  # the launcher lives in the image
    assert json.loads((spec_dir / "kernel.json").read_text()) == {
        "argv": ["python3", IMAGE_LAUNCHER, *LAUNCHER_ARGS, "ipykernel.ipkernel.IPythonKernel"],
        "display_name": "Python in Docker",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": True,
            "supported_encryption": ["curve"],
            "kernel_provisioner": {
                "provisioner_name": "gp-remote-provisioner",
                "config": {
                    "backend": "docker",
                    "launch_timeout": 45.0,
                    "authorized_users": ["alice"],
                    "port_range": "40000..42000",
                    "image": "site/kernel-py:1.2",
                    "network": "kernels",
                    "pool_size": 2,
                },
            },
        },
    }


def test_docker_spec_install_swarm_golden(tmp_path, no_docker_env):
    result = docker_spec("install", f"--prefix={tmp_path}", "--swarm", "--image-name=site/kernel-py:1.2")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/docker_swarm_python/kernel.json").read_text())
    assert spec["display_name"] == "Docker Swarm Python (gp)"
    assert spec["argv"] == ["python3", IMAGE_LAUNCHER, *LAUNCHER_ARGS, "ipykernel.ipkernel.IPythonKernel"]
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "backend": "docker-swarm",
        "launch_timeout": 30.0,
        "image": "site/kernel-py:1.2",
    }


def test_docker_spec_image_defaults_to_env_and_warns_without_one(tmp_path, no_docker_env, monkeypatch):
    result = docker_spec("install", f"--prefix={tmp_path}", "--kernel-name=noimage")
    assert result.returncode == 0, result.stderr
    assert "GP_IMAGE_NAME" in result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/noimage/kernel.json").read_text())
    assert "image" not in spec["metadata"]["kernel_provisioner"]["config"]

    monkeypatch.setenv("GP_IMAGE_NAME", "env/kernel:3")
    result = docker_spec("install", f"--prefix={tmp_path}", "--kernel-name=envimage")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/envimage/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["image"] == "env/kernel:3"


def test_docker_spec_refuses_bad_input(tmp_path):
    assert docker_spec("install", f"--prefix={tmp_path}", "--language=julia").returncode != 0
    result = docker_spec("install", f"--prefix={tmp_path}", "--network= ")  # checked like a launch would
    assert result.returncode != 0 and "network" in result.stderr
    result = docker_spec("install", f"--prefix={tmp_path}", "--pool-size=99")
    assert result.returncode != 0 and "pool_size must be within 0..32" in result.stderr
    result = docker_spec("install", f"--prefix={tmp_path}", "--pool-size=1", "--swarm")
    assert result.returncode != 0 and "pool_size is not available on docker-swarm" in result.stderr
    assert not (tmp_path / "share").exists()


# ------------------------------------------------------------------ image-bootstrap


def image_bootstrap(*args: str) -> subprocess.CompletedProcess[str]:
    return run_app("gp_core.bootstrap.ImageBootstrapApp", *args)


def test_image_bootstrap_install(tmp_path):
    result = image_bootstrap("install", f"--dest={tmp_path}/bin")
    assert result.returncode == 0, result.stderr
    launcher = tmp_path / "bin/kernel-launchers/python/launch_ipykernel.py"
    script = tmp_path / "bin/bootstrap-kernel.sh"
    assert launcher.read_bytes() == Path(LAUNCHER_PATH).read_bytes()
    assert script.stat().st_mode & stat.S_IXUSR and script.read_text().startswith("#!/bin/sh")
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0  # valid POSIX sh


def test_image_bootstrap_launchers_only_and_languages(tmp_path):
    result = image_bootstrap("install", f"--dest={tmp_path}", "--launchers-only", "--languages=python")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernel-launchers/python/launch_ipykernel.py").is_file()
    assert not (tmp_path / "bootstrap-kernel.sh").exists()


def test_image_bootstrap_refuses_unknown_languages_before_writing(tmp_path):
    result = image_bootstrap("install", f"--dest={tmp_path}/out", "--languages=python", "--languages=julia")
    assert result.returncode == 1
    assert "no kernel launcher for language 'julia'" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture
def bootstrap_dir(tmp_path: Path) -> Path:
    """bootstrap-kernel.sh with a fake ``python3`` that records its argv, one argument per line."""
    install_launchers(tmp_path / "bin", ["python"])
    fake = tmp_path / "fakebin/python3"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    fake.chmod(0o755)
    return tmp_path


def run_bootstrap(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{directory}/fakebin:{os.environ['PATH']}"
    return subprocess.run(
        [str(directory / "bin/bootstrap-kernel.sh")],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
    )


def test_bootstrap_script_runs_the_launcher_from_env(bootstrap_dir):
    hostile = "$(touch /tmp/gp-pwned) `id` ; x"
    result = run_bootstrap(
        bootstrap_dir,
        KERNEL_ID="k-1",
        RESPONSE_ADDRESS="127.0.0.1:8877",
        PUBLIC_KEY="cHVi",
        PORT_RANGE="40000..41000",
        KERNEL_CLASS_NAME=hostile,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{bootstrap_dir}/bin/kernel-launchers/python/launch_ipykernel.py",
        "--kernel-id",
        "k-1",
        "--port-range",
        "40000..41000",
        "--response-address",
        "127.0.0.1:8877",
        "--public-key",
        "cHVi",
        "--spark-context-initialization-mode",
        "none",
        "--kernel-class-name",
        hostile,  # one argument, never evaluated
    ]
    assert not Path("/tmp/gp-pwned").exists()


def test_bootstrap_script_refuses_missing_env_and_other_languages(bootstrap_dir):
    result = run_bootstrap(bootstrap_dir, RESPONSE_ADDRESS="127.0.0.1:1", PUBLIC_KEY="x")
    assert result.returncode == 2 and "KERNEL_ID is not set" in result.stderr
    result = run_bootstrap(
        bootstrap_dir, KERNEL_ID="k", RESPONSE_ADDRESS="127.0.0.1:1", PUBLIC_KEY="x", KERNEL_LANGUAGE="Julia"
    )
    assert result.returncode == 2 and "language 'julia'" in result.stderr
