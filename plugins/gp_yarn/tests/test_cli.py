"""``jupyter yarn-spec install``: a complete kernelspec (no ``${...}`` left), through the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = shutil.which("jupyter-yarn-spec", path=os.path.dirname(sys.executable)) or "jupyter-yarn-spec"


def install(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "install", f"--prefix={prefix}", *args], capture_output=True, text=True, timeout=120
    )


def test_install_writes_a_complete_spec(tmp_path: Path) -> None:
    result = install(
        tmp_path,
        "--yarn-endpoint=http://127.0.0.1:8088",
        "--alt-yarn-endpoint=http://127.0.0.1:8089",
        "--yarn-endpoint-security-enabled",
        "--impersonation-enabled",
        "--python-root=/opt/py",
        "--spark-home=/opt/spark",
        "--spark-init-mode=eager",
        "--extra-spark-opts=--driver-memory 1g --conf spark.ui.enabled=false",
        "--launch-timeout=90",
        "--authorized-users=alice",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/yarn_spark_python"
    raw = (spec_dir / "kernel.json").read_text()
    assert "${" not in raw
    spec = json.loads(raw)
    assert spec["argv"][0] == "{resource_dir}/bin/run.sh"
    assert spec["argv"][1:3] == ["--kernel-id", "{kernel_id}"]
    assert spec["argv"][-4:] == ["--spark-context-initialization-mode", "eager", "--cluster-type", "spark"]
    assert spec["env"]["SPARK_HOME"] == "/opt/spark"
    assert spec["env"]["PYSPARK_PYTHON"] == "/opt/py/bin/python"
    assert spec["env"]["SPARK_OPTS"].endswith("--driver-memory 1g --conf spark.ui.enabled=false")
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config == {
        "backend": "yarn",
        "launch_timeout": 90.0,
        "authorized_users": ["alice"],
        "yarn_endpoint": "http://127.0.0.1:8088",
        "alt_yarn_endpoint": "http://127.0.0.1:8089",
        "yarn_endpoint_security_enabled": True,
        "impersonation_enabled": True,
    }
    run_sh = spec_dir / "bin/run.sh"
    assert os.access(run_sh, os.X_OK)
    assert (spec_dir / "scripts/launch_ipykernel.py").is_file()
    assert subprocess.run(["bash", "-n", str(run_sh)]).returncode == 0


def test_run_sh_passes_options_as_data(tmp_path: Path) -> None:
    """run.sh hands gp's options (before --) and the launcher's arguments to spark-submit, quoted."""
    assert install(tmp_path, "--spark-home=/nonexistent").returncode == 0
    run_sh = tmp_path / "share/jupyter/kernels/yarn_spark_python/bin/run.sh"
    fake_home = tmp_path / "spark"
    (fake_home / "bin").mkdir(parents=True)
    fake = fake_home / "bin/spark-submit"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "SPARK_HOME": str(fake_home), "SPARK_OPTS": "--conf spark.a=* --driver-memory 1g"}
    hostile = "$(touch " + str(tmp_path / "pwned") + ")"
    result = subprocess.run(
        [str(run_sh), "--name", "k 1", "--conf", f"spark.x={hostile}", "--", "--kernel-id", "k;1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "--master",
        "yarn",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.a=*",
        "--driver-memory",
        "1g",
        "--name",
        "k 1",
        "--conf",
        f"spark.x={hostile}",
        str(run_sh.parent.parent / "scripts/launch_ipykernel.py"),
        "--kernel-id",
        "k;1",
    ]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dask"], "not supported"),
        (["--yarn-endpoint=rm:8088"], "http(s)://host:port"),
        (["--extra-spark-opts=--conf spark.x=$(id)"], "not a shell command"),
        (["--python-root=relative"], "absolute path"),
    ],
)
def test_install_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = install(tmp_path, *args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "share/jupyter/kernels/yarn_spark_python").exists()
