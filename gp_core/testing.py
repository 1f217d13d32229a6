"""Helpers for testing gp backends end to end with real kernels (used by gp's own tests and by plugin authors).

Typical use::

    spec_dir = write_kernelspec(tmp_path, "k", backend="docker", argv=[...], config={"image": "..."})
    km = kernel_manager(spec_dir, "k")
    await start_kernel(km)
    output, reply = await execute(km, "print(1 + 1)")
    await km.shutdown_kernel()
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from .hookspecs import hookimpl
from .launcher import LAUNCHER_PATH, PLACEHOLDER_ARGS
from .options import parse_list

PROVISIONER_NAME = "gp-remote-provisioner"
#: The user tests start kernels as (the default unauthorized_users refuses root, who runs CI).
TEST_USERNAME = "gp-tester"


def launcher_argv(python: str = sys.executable, launcher: str | Path = LAUNCHER_PATH) -> list[str]:
    """The kernel.json argv that runs gp's launcher with every placeholder core fills."""
    return [python, str(launcher), *PLACEHOLDER_ARGS]


def kernelspec_json(
    backend: str,
    *,
    argv: list[str] | None = None,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    display_name: str | None = None,
    language: str = "python",
) -> dict[str, Any]:
    """A kernel.json dict selecting ``backend`` through gp-remote-provisioner."""
    return {
        "argv": argv or launcher_argv(),
        "display_name": display_name or f"gp {backend} test",
        "language": language,
        "interrupt_mode": "signal",
        "env": env or {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": {"backend": backend, **(config or {})},
            }
        },
    }


def write_kernelspec(directory: str | Path, name: str, *, backend: str, **kwargs: Any) -> Path:
    """Write ``directory/name/kernel.json`` (see :func:`kernelspec_json`) and return ``directory``."""
    spec_dir = Path(directory) / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(kernelspec_json(backend, **kwargs), indent=1))
    return Path(directory)


def r_launcher_argv(python: str = sys.executable, launcher: str | Path | None = None) -> list[str]:
    """The kernel.json argv that runs gp's R launcher (IRkernel) with every placeholder core fills."""
    from .launcher import R_LAUNCHER_PATH

    return [python, str(launcher or R_LAUNCHER_PATH), *PLACEHOLDER_ARGS]


def kernel_manager(kernelspec_dir: str | Path, name: str, **kwargs: Any) -> AsyncKernelManager:
    """An AsyncKernelManager that finds kernelspecs only in ``kernelspec_dir``."""
    ksm = KernelSpecManager(kernel_dirs=[str(kernelspec_dir)])
    return AsyncKernelManager(kernel_name=name, kernel_spec_manager=ksm, **kwargs)


def kernel_env(**variables: str) -> dict[str, str]:
    """A start request's env: the server env plus ``KERNEL_*`` values (as jupyter_server builds it)."""
    return {**os.environ, "KERNEL_USERNAME": TEST_USERNAME, **variables}


async def start_kernel(km: AsyncKernelManager, **variables: str) -> None:
    """Start the kernel as :data:`TEST_USERNAME`, with ``variables`` as the request's ``KERNEL_*`` env."""
    await km.start_kernel(env=kernel_env(**variables))


async def execute(km: AsyncKernelManager, code: str, timeout: float = 60) -> tuple[str, dict[str, Any]]:
    """Run ``code`` on the kernel; return (stdout text, execute_reply content)."""
    client = km.client()
    client.start_channels()
    output: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout":
            output.append(msg["content"]["text"])
        elif msg["msg_type"] == "execute_result":
            output.append(msg["content"]["data"].get("text/plain", "") + "\n")
        elif msg["msg_type"] == "error":
            output.append(f"{msg['content']['ename']}: {msg['content']['evalue']}\n")

    try:
        await client.wait_for_ready(timeout=timeout)
        reply = await client.execute_interactive(code, timeout=timeout, output_hook=collect)
    finally:
        client.stop_channels()
    return "".join(output), reply["content"]


async def interrupt_sleep(km: AsyncKernelManager, seconds: int = 60, timeout: float = 30) -> dict[str, Any]:
    """Start ``time.sleep(seconds)`` on the kernel, interrupt it, and return the execute_reply content.

    The interrupt is sent once the cell itself has printed a marker, so it cannot land before the cell
    runs however slow the machine (execute_input is published before the cell starts).
    """
    marker = f"gp-interrupt-sleep-{uuid.uuid4().hex}"
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        msg_id = client.execute(f"import time; print({marker!r}, flush=True); time.sleep({seconds})")
        printed = ""
        while marker not in printed:  # interrupt only once the cell runs
            msg = await client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                printed += msg["content"].get("text", "")
        await km.interrupt_kernel()
        while True:
            reply = await client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]
    finally:
        client.stop_channels()


async def interrupt_running(
    km: AsyncKernelManager, code: str, marker: str, timeout: float = 30
) -> tuple[dict[str, Any], float]:
    """Run ``code`` (any kernel language), which prints ``marker`` and then runs for long; interrupt it once
    the marker arrived; return the execute_reply content and the seconds from the interrupt to the reply."""
    import time

    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        msg_id = client.execute(code)
        printed = ""
        while marker not in printed:  # interrupt only once the cell runs
            msg = await client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                printed += msg["content"].get("text", "")
        started = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"], time.monotonic() - started
    finally:
        client.stop_channels()


async def interrupt_r_sleep(km: AsyncKernelManager, timeout: float = 30) -> tuple[dict[str, Any], float]:
    """:func:`interrupt_running` with R's ``Sys.sleep(60)``."""
    marker = f"gp-interrupt-sleep-{uuid.uuid4().hex}"
    return await interrupt_running(km, f'cat("{marker}\\n"); Sys.sleep(60)', marker, timeout)


async def check_r_kernel_lifecycle(km: AsyncKernelManager) -> None:
    """An R kernel (gp's R launcher) executes R, is interrupted in ``Sys.sleep`` and lives on, is restarted
    into a fresh session, and shuts down. Backend tests check afterwards that nothing is left running."""
    output, reply = await execute(km, 'cat(6 * 7, "\\n"); print(R.version$language)')
    if reply["status"] != "ok" or output.split() != ["42", "[1]", '"R"']:
        raise AssertionError(f"R code did not run: {output!r} {reply}")
    reply, took = await interrupt_r_sleep(km)
    if reply["status"] != "abort" or took > 20:  # IRkernel answers an interrupted cell with "abort"
        raise AssertionError(f"Sys.sleep(60) was not interrupted ({took:.1f} s): {reply}")
    output, _ = await execute(km, "x <- 5; cat(x * 2)")
    if output != "10":
        raise AssertionError(f"the R kernel did not live on after the interrupt: {output!r}")
    await km.restart_kernel()
    output, _ = await execute(km, 'cat(exists("x"))')
    if output != "FALSE":
        raise AssertionError(f"the restarted R kernel is not a fresh session: {output!r}")
    await km.shutdown_kernel()


_CLOSE_LISTENING_PORT = """
import gc, socket
closed = 0
for sock in [o for o in gc.get_objects() if isinstance(o, socket.socket)]:
    try:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
        if inet and sock.fileno() >= 0 and sock.getsockname()[1] == {port}:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            closed += 1
    except OSError:
        pass
print(closed)
"""


async def silence_comm_port(km: AsyncKernelManager) -> tuple[str, int]:
    """Close the kernel launcher's communication port from inside the kernel, which keeps running.

    What a launcher whose comm thread died, or whose port a firewall blocks, looks like to the server.
    Returns the (host, port) that no longer answers.
    """
    assert km.provisioner is not None, "the kernel has not been started"
    host, port = (await km.provisioner.get_provisioner_info())["comm_address"]
    output, reply = await execute(km, _CLOSE_LISTENING_PORT.format(port=int(port)))
    if reply["status"] != "ok" or output.strip() != "1":
        raise AssertionError(f"could not close the comm port {port} in the kernel: {output!r} {reply}")
    return host, int(port)


async def check_interrupt_without_launcher(km: AsyncKernelManager) -> None:
    """A kernel whose launcher no longer answers on its communication port is still interrupted (by the
    backend's ``send_signal`` hook), and lives on."""
    import socket

    host, port = await silence_comm_port(km)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError(f"the comm port {host}:{port} still answers")
    reply = await interrupt_sleep(km)
    if reply["status"] != "error" or reply.get("ename") != "KeyboardInterrupt":
        raise AssertionError(f"time.sleep was not interrupted: {reply}")
    output, _ = await execute(km, "print(6 * 7)")
    if output.strip() != "42":
        raise AssertionError(f"the kernel did not live on after the interrupt: {output!r}")


async def adopt_kernel(
    kernelspec_dir: str | Path, name: str, provisioner_info: dict[str, Any]
) -> AsyncKernelManager:
    """A second kernel manager (as another server process would build) for a running kernel."""
    km = kernel_manager(kernelspec_dir, name)
    km.kernel_id = provisioner_info["kernel_id"]
    km.provisioner = KernelProvisionerFactory.instance().create_provisioner_instance(
        km.kernel_id, km.kernel_spec, parent=km
    )
    await km.provisioner.load_provisioner_info(provisioner_info)
    km.load_connection_info(km.provisioner.connection_info)
    return km


class NullBackend:
    """A backend object whose required hooks do nothing: subclass it and override (with ``@hookimpl``)
    what a test needs, then register it with :func:`gp_core.plugins.register_backend`."""

    @hookimpl
    def launch(self) -> dict[str, Any]:
        return {}

    @hookimpl
    def poll(self) -> int | None:
        return None

    @hookimpl
    def terminate(self) -> None:
        return None


def require_backend(backend: str, reason: str) -> NoReturn:
    """Skip a test whose backend is unavailable, or fail it when ``GP_REQUIRED_BACKENDS`` names the backend."""
    import pytest

    if backend in parse_list(os.environ.get("GP_REQUIRED_BACKENDS", "")):
        pytest.fail(f"required gp backend {backend!r} is unavailable: {reason}")
    pytest.skip(f"gp backend {backend!r} unavailable: {reason}")


def require_language(language: str, reason: str) -> NoReturn:
    """Skip a test whose kernel language is not installed here, or fail it when ``GP_REQUIRED_LANGUAGES``
    names the language (e.g. ``GP_REQUIRED_LANGUAGES=r,scala`` in CI)."""
    import pytest

    if language in parse_list(os.environ.get("GP_REQUIRED_LANGUAGES", "").lower()):
        pytest.fail(f"required kernel language {language!r} is unavailable: {reason}")
    pytest.skip(f"kernel language {language!r} unavailable: {reason}")


def r_kernel_missing() -> str | None:
    """Why an R kernel cannot run here (no Rscript, or no IRkernel package), or ``None``."""
    import shutil
    import subprocess

    rscript = shutil.which(os.environ.get("GP_RSCRIPT") or "Rscript")
    if rscript is None:
        return "Rscript is not installed (bash scripts/setup-system.sh --languages r)"
    probe = subprocess.run(
        [rscript, "-e", "quit(status = if (requireNamespace('IRkernel', quietly = TRUE)) 0 else 3)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"the R package IRkernel is not installed ({probe.stderr.strip()[-300:]})"
    return None
