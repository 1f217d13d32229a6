"""Scala kernels (Apache Toree, PyPI apache-toree) through gp's Scala launcher on the local backend: real
Toree on a real Spark (GP_TEST_SPARK_HOME, default the pip-installed pyspark of scripts/setup-pyspark.sh)
and the JDK. Fails instead of skipping when GP_REQUIRED_LANGUAGES names scala."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from gp_core.launcher import PLACEHOLDER_ARGS, SCALA_LAUNCHER_PATH
from gp_core.testing import (
    execute,
    interrupt_running,
    kernel_manager,
    require_language,
    start_kernel,
    write_kernelspec,
)

pytestmark = pytest.mark.scala

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(os.environ.get("GP_TEST_SPARK_HOME") or ROOT / ".ci-state/pyspark-3.4.4/pyspark")


@pytest.fixture(scope="module", autouse=True)
def toree_available() -> None:
    import importlib.util

    if shutil.which("java") is None:
        require_language("scala", "no JDK (java) on PATH")
    if not (SPARK_HOME / "bin/spark-submit").is_file():
        require_language("scala", f"no Spark at {SPARK_HOME} (bash scripts/setup-pyspark.sh)")
    if importlib.util.find_spec("toree") is None and not os.environ.get("GP_TOREE_JAR"):
        require_language("scala", "Apache Toree is not installed (pip install apache-toree)")


def toree_spec(tmp_path: Path, *extra: str) -> Path:
    return write_kernelspec(
        tmp_path,
        "scala",
        backend="local",
        argv=[sys.executable, str(SCALA_LAUNCHER_PATH), *PLACEHOLDER_ARGS, *extra],
        env={"SPARK_HOME": str(SPARK_HOME), "SPARK_OPTS": "--master local[1] --conf spark.ui.enabled=false"},
        config={"launch_timeout": 120},
        language="scala",
    )


async def test_toree_kernel_executes_is_interrupted_restarted_and_shut_down(tmp_path):
    km = kernel_manager(toree_spec(tmp_path, "--spark-context-initialization-mode", "lazy"), "scala")
    await start_kernel(km)
    try:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        pid = int(info["handle"]["pid"])
        assert b"org.apache.toree.Main" in Path(f"/proc/{pid}/cmdline").read_bytes()  # the JVM is the kernel
        output, reply = await execute(km, "println(6 * 7)", timeout=120)
        assert reply["status"] == "ok" and output.strip() == "42", (output, reply)
        output, _ = await execute(km, 'println(sc.appName == sys.env("KERNEL_ID"))', timeout=120)
        assert output.strip() == "true"  # the Spark application is named after the kernel
        marker = f"gp-{uuid.uuid4().hex}"
        reply, took = await interrupt_running(
            km, f'println("{marker}"); Thread.sleep(60000); println("not interrupted")', marker, timeout=60
        )
        assert reply["status"] in ("error", "abort") and took < 20, (reply, took)
        output, _ = await execute(km, "println(5 * 2)", timeout=60)
        # the kernel lives on (Toree's first cell after an interrupt may also show a stray "null" result)
        assert output.split()[0] == "10", output
        await km.restart_kernel()
        output, _ = await execute(km, "println(1 + 1)", timeout=120)
        assert output.strip() == "2"
        new_pid = int((await km.provisioner.get_provisioner_info())["handle"]["pid"])  # type: ignore[union-attr]
        await km.shutdown_kernel()
        for candidate in (pid, new_pid):
            for _ in range(100):
                if not Path(f"/proc/{candidate}").exists():
                    break
                await asyncio.sleep(0.1)
            assert not Path(f"/proc/{candidate}").exists(), f"the JVM {candidate} survived"
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


def test_installers_write_the_scala_launcher(tmp_path):
    import json
    import subprocess

    from gp_core.bootstrap import install_launchers

    install_launchers(tmp_path / "image", ["scala"], launchers_only=True)
    names = sorted(p.name for p in (tmp_path / "image/kernel-launchers/scala").iterdir())
    assert names == ["launch_ipykernel.py", "launch_irkernel.py", "launch_toree.py"]
    code = "from gp_core.specapp import LocalSpecApp; LocalSpecApp.launch_instance()"
    result = subprocess.run(
        [sys.executable, "-c", code, "install", f"--prefix={tmp_path}", "--language=Scala"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/local_scala"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["language"] == "scala" and spec["argv"][1] == "{resource_dir}/scripts/launch_toree.py"
    assert "supported_encryption" not in spec["metadata"]  # Toree has no CurveZMQ
    assert (spec_dir / "scripts/launch_irkernel.py").is_file()
