"""R kernels (IRkernel) through gp's R launcher on the local backend: real R, real protocol."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gp_core.launcher import PLACEHOLDER_ARGS, R_LAUNCHER_PATH
from gp_core.testing import (
    check_r_kernel_lifecycle,
    execute,
    interrupt_r_sleep,
    kernel_manager,
    r_kernel_missing,
    r_launcher_argv,
    require_language,
    start_kernel,
    write_kernelspec,
)

pytestmark = pytest.mark.r


@pytest.fixture(scope="module", autouse=True)
def r_available() -> None:
    missing = r_kernel_missing()
    if missing:
        require_language("r", missing)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


async def _wait_gone(pid: int, seconds: float = 10) -> bool:
    for _ in range(int(seconds * 10)):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.1)
    return False


def r_spec(tmp_path: Path, **config: Any) -> Path:
    return write_kernelspec(
        tmp_path,
        "r",
        backend="local",
        argv=r_launcher_argv(),
        config=config,
        language="R",
        display_name="gp R test",
    )


async def test_r_kernel_executes_is_interrupted_restarted_and_shut_down(tmp_path):
    km = kernel_manager(r_spec(tmp_path), "r")
    await start_kernel(km)
    try:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        pid = int(info["handle"]["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        # The kernel's own process is R (exec'd by the launcher): signals to "the kernel" reach R itself.
        assert any(part.endswith(b"launch_IRkernel.R") for part in cmdline), cmdline
        await check_r_kernel_lifecycle(km)
        assert await _wait_gone(pid), f"the R kernel {pid} survived its restart and shutdown"
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


async def test_r_kernel_binds_its_ports_inside_the_port_range(tmp_path):
    km = kernel_manager(r_spec(tmp_path, port_range="47100..48100"), "r")
    await start_kernel(km)
    try:
        info = km.get_connection_info()
        ports = [info[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        comm_port = (await km.provisioner.get_provisioner_info())["comm_address"][1]  # type: ignore[union-attr]
        assert all(47100 <= int(port) <= 48100 for port in [*ports, comm_port]), (ports, comm_port)
        output, _ = await execute(km, "cat(1 + 1)")
        assert output == "2"
    finally:
        await km.shutdown_kernel(now=True)


async def test_eager_spark_mode_without_sparkr_fails_the_launch_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARK_HOME", raising=False)
    write_kernelspec(
        tmp_path,
        "r",
        backend="local",
        argv=[
            sys.executable,
            str(R_LAUNCHER_PATH),
            *PLACEHOLDER_ARGS,
            "--spark-context-initialization-mode",
            "eager",
        ],
        config={"launch_timeout": 30},
    )
    km = kernel_manager(tmp_path, "r")
    with pytest.raises(Exception, match="needs the SparkR package"):
        await start_kernel(km)


async def test_lazy_spark_mode_without_sparkr_starts_the_kernel_without_spark(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARK_HOME", raising=False)
    write_kernelspec(
        tmp_path,
        "r",
        backend="local",
        argv=[
            sys.executable,
            str(R_LAUNCHER_PATH),
            *PLACEHOLDER_ARGS,
            "--spark-context-initialization-mode",
            "lazy",
        ],
    )
    km = kernel_manager(tmp_path, "r")
    await start_kernel(km)
    try:
        output, _ = await execute(km, 'cat(exists("spark"))')
        assert output == "FALSE"
    finally:
        await km.shutdown_kernel(now=True)


async def test_the_comm_port_signals_r_not_the_reporter(tmp_path):
    """SIGINT sent to the whole process group (as jupyter_client does for local kernels) must not kill
    the launcher's reporter, which keeps serving the comm port."""
    km = kernel_manager(r_spec(tmp_path), "r")
    await start_kernel(km)
    try:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        os.killpg(int(info["handle"]["pgid"]), signal.SIGINT)
        await asyncio.sleep(0.5)
        reply, took = await interrupt_r_sleep(km)  # through the comm port: the reporter still answers
        assert reply["status"] == "abort" and took < 20, (reply, took)
        output, _ = await execute(km, "cat(3 * 3)")
        assert output == "9"
    finally:
        await km.shutdown_kernel(now=True)


def install_local_spec(*args: str) -> subprocess.CompletedProcess[str]:
    """``jupyter local-spec install ARGS`` in a fresh process (the apps are traitlets singletons)."""
    code = "from gp_core.specapp import LocalSpecApp; LocalSpecApp.launch_instance()"
    return subprocess.run(
        [sys.executable, "-c", code, "install", *args], capture_output=True, text=True, check=False
    )


async def test_local_spec_install_language_r_writes_a_working_kernelspec(tmp_path):
    result = install_local_spec(f"--prefix={tmp_path}", "--language=R")
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/local_r"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["language"] == "R"
    assert spec["argv"][1] == "{resource_dir}/scripts/launch_irkernel.py"
    assert "--kernel-class-name" not in spec["argv"]
    assert sorted(p.name for p in (spec_dir / "scripts").iterdir()) == [
        "launch_IRkernel.R",
        "launch_ipykernel.py",
        "launch_irkernel.py",
    ]
    km = kernel_manager(tmp_path / "share/jupyter/kernels", "local_r")
    await start_kernel(km)
    try:
        output, _ = await execute(
            km, 'cat(Sys.getenv("KERNEL_LANGUAGE"), Sys.getenv("KERNEL_ID") == "' + "" + '")'
        )
        assert output == "R FALSE", output
    finally:
        await km.shutdown_kernel(now=True)


def test_image_bootstrap_installs_the_r_launcher(tmp_path):
    from gp_core.bootstrap import install_launchers

    written = install_launchers(tmp_path, ["python", "R"])
    r_dir = tmp_path / "kernel-launchers/r"
    assert sorted(p.name for p in r_dir.iterdir()) == [
        "launch_IRkernel.R",
        "launch_ipykernel.py",
        "launch_irkernel.py",
    ]
    assert (r_dir / "launch_irkernel.py").read_bytes() == R_LAUNCHER_PATH.read_bytes()
    assert tmp_path / "bootstrap-kernel.sh" in written


async def test_the_image_entrypoint_starts_an_r_kernel(tmp_path, monkeypatch):
    """bootstrap-kernel.sh with KERNEL_LANGUAGE from the spec's language (R), run by the local backend as
    a container runtime would run it: a real R kernel, from the environment alone."""
    from gp_core.bootstrap import install_launchers

    install_launchers(tmp_path / "bin", ["r"])
    # The entrypoint runs the image's python3: here, this environment's (it has pycryptodomex).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    spec = write_kernelspec(
        tmp_path / "specs", "r", backend="local", argv=[str(tmp_path / "bin/bootstrap-kernel.sh")]
    )
    kernel_json = spec / "r/kernel.json"
    kernel_json.write_text(kernel_json.read_text().replace('"language": "python"', '"language": "R"'))
    km = kernel_manager(spec, "r")
    await start_kernel(km)
    try:
        output, _ = await execute(
            km, 'cat(nchar(Sys.getenv("KERNEL_ID")) == 36, Sys.getenv("GP_LAUNCH_TOKEN") == "")'
        )
        assert output == "TRUE TRUE", output  # the token is gone from the kernel's environment
        reply, took = await interrupt_r_sleep(km)
        assert reply["status"] == "abort" and took < 20, (reply, took)
    finally:
        await km.shutdown_kernel(now=True)


SERVER_THAT_DIES = """
import asyncio, sys
from gp_core.testing import kernel_manager, start_kernel

async def main():
    km = kernel_manager(sys.argv[1], "r")
    await start_kernel(km)
    print((await km.provisioner.get_provisioner_info())["handle"]["pid"], flush=True)
    await asyncio.sleep(3600)  # killed by the test meanwhile

asyncio.run(main())
"""


async def test_a_local_r_kernel_dies_with_its_killed_server(tmp_path):
    spec = r_spec(tmp_path)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_THAT_DIES, str(spec), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        kernel_pid = int(await asyncio.wait_for(server.stdout.readline(), 60))
        assert _alive(kernel_pid)
    finally:
        server.kill()
        await server.wait()
    assert await _wait_gone(kernel_pid, 15), "the local R kernel outlived its server"
