"""Fixtures for gp-ssh's end-to-end tests against the test sshd (``scripts/start-sshd.sh``).

The sshd listens on 127.0.0.1, .2 and .3 (three "hosts" that are this machine), so a test can look at
the "remote" kernels in the local ``/proc``. Every kernel a test starts carries a marker variable in its
environment; at teardown any process still carrying it is killed and fails the test, so a failing test
never leaves a kernel behind. Without the sshd the tests skip, or fail when ``GP_REQUIRED_BACKENDS``
names ``ssh``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gp_ssh._connections import POOL

from gp_core.testing import kernel_env, kernel_manager, launcher_argv, require_backend, write_kernelspec

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
MARK_VARIABLE = "GP_SSH_TEST_MARK"


@pytest.fixture(autouse=True)
def _loopback_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kernels report to 127.0.0.1; port 0 so concurrent test runs never fight over a port.
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    # The server allows the test sshd's addresses: remote_hosts is a policy kernel.json can only narrow.
    monkeypatch.setenv("GP_REMOTE_HOSTS", ",".join(HOSTS))


def _sshd_problem(ssh_dir: str, port: int) -> str | None:
    if not ssh_dir:
        return "GP_TEST_SSH_DIR is not set (bash scripts/start-sshd.sh starts the test sshd)"
    for name in ("client_key", "known_hosts"):
        if not Path(ssh_dir, name).is_file():
            return f"{ssh_dir}/{name} is missing (bash scripts/start-sshd.sh creates it)"
    for host in HOSTS:
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            return f"no sshd on {host}:{port} ({exc})"
    return None


@pytest.fixture(scope="session")
def sshd() -> dict[str, Any]:
    """The test sshd's coordinates, or a skip (a failure when ssh is a required backend)."""
    ssh_dir = os.environ.get("GP_TEST_SSH_DIR", "")
    port = int(os.environ.get("GP_TEST_SSH_PORT", "22222"))
    problem = _sshd_problem(ssh_dir, port)
    if problem:
        require_backend("ssh", problem)
    return {
        "dir": Path(ssh_dir),
        "port": port,
        "python": os.environ.get("GP_TEST_PYTHON") or sys.executable,
    }


def processes_with(entry: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds ``entry`` (``NAME=value``)."""
    needle = entry.encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in proc.joinpath("environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def marked_processes(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds ``MARK_VARIABLE=mark``."""
    return processes_with(f"{MARK_VARIABLE}={mark}")


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class SshKernels:
    """Writes ssh kernelspecs for one test and starts kernels from them, remembering their managers."""

    def __init__(self, directory: Path, sshd: dict[str, Any], mark: str) -> None:
        self.directory = directory
        self.sshd = sshd
        self.mark = mark
        self.log_dir = directory / "remote-logs"
        self.managers: list[Any] = []

    def config(self, **overrides: Any) -> dict[str, Any]:
        ssh_dir = self.sshd["dir"]
        return {
            "remote_hosts": HOSTS,
            "ssh_port": self.sshd["port"],
            "remote_user": "root",
            "ssh_key_file": str(ssh_dir / "client_key"),
            "known_hosts_file": str(ssh_dir / "known_hosts"),
            "kernel_log_dir": str(self.log_dir),
            "launch_timeout": 60,
            **overrides,
        }

    def spec(
        self, name: str = "ssh", *, argv: list[str] | None = None, language: str = "python", **overrides: Any
    ) -> str:
        write_kernelspec(
            self.directory / "specs",
            name,
            backend="ssh",
            argv=argv or launcher_argv(self.sshd["python"]),
            config=self.config(**overrides),
            env={MARK_VARIABLE: self.mark},
            language=language,
        )
        return name

    def manager(self, name: str = "ssh") -> Any:
        km = kernel_manager(self.directory / "specs", name)
        self.managers.append(km)
        return km

    async def start(self, km: Any, **variables: str) -> str:
        kernel_id = str(uuid.uuid4())
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(**variables))
        return kernel_id

    async def shutdown_all(self) -> None:
        for km in self.managers:
            if km.has_kernel:
                try:
                    await km.shutdown_kernel(now=True)
                except Exception:  # teardown goes on: leftovers are checked after
                    pass


async def handle_of(km: Any) -> dict[str, Any]:
    """The ssh backend's handle of ``km``'s kernel (host, pid, log path...)."""
    return (await km.provisioner.get_provisioner_info())["handle"]


@pytest.fixture
def ssh_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every SSH command fail loudly if it is run on a thread that runs an event loop."""

    def checked(run: Any) -> Any:
        def checked_run(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return run(*args, **kwargs)
            raise AssertionError("an SSH command ran on the event loop")

        return checked_run

    monkeypatch.setattr(POOL, "run", checked(POOL.run))
    monkeypatch.setattr(POOL, "run_quick", checked(POOL.run_quick))


@pytest.fixture
async def kernels(tmp_path: Path, sshd: dict[str, Any], ssh_off_the_loop: None) -> AsyncIterator[SshKernels]:
    """An :class:`SshKernels`; at teardown, fails the test if a kernel process of it is still running
    (after killing it, so one failure does not leak into the next test). Meanwhile every SSH command
    is checked to run off the event loop."""
    started = SshKernels(tmp_path, sshd, uuid.uuid4().hex)
    yield started
    await started.shutdown_all()
    left = marked_processes(started.mark)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"kernel processes left behind on the ssh hosts: {left}"
