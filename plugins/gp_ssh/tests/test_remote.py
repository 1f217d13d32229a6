"""The lifecycle logic around the SSH calls, with the connection pool replaced by a recorder: placement
release on every failure path (through core's Rollback, run as core runs it), a cancelled launch cleaning
up, poll during start-up, and the log policy."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from gp_ssh import _remote
from gp_ssh._connections import POOL, CommandResult, SshConnectionError
from gp_ssh._options import SshOptions
from gp_ssh._placement import PLACER

from gp_core import BackendError, LaunchError, Rollback

log = logging.getLogger("test")
KERNEL_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"


class FakeRemote:
    """Stands in for the pool: records scripts, answers with queued results (or raises them)."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.answers: list[CommandResult | Exception] = []
        self.gate: threading.Event | None = None

    def run(self, target: Any, script: str, timeout: float, **_: Any) -> CommandResult:
        self.scripts.append(script)
        if self.gate is not None:
            self.gate.wait(30)
        answer = self.answers.pop(0) if self.answers else CommandResult(0, "", "")
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> FakeRemote:
    fake = FakeRemote()
    monkeypatch.setattr(POOL, "run", fake.run)
    monkeypatch.setattr(POOL, "run_quick", fake.run)
    return fake


@pytest.fixture
def options() -> SshOptions:
    return SshOptions(remote_hosts=["h1", "h2"], load_balancing_algorithm="least-connection", remote_user="u")


@pytest.fixture(autouse=True)
def _release() -> Any:
    yield
    PLACER.release(KERNEL_ID)


def resources(options: SshOptions, rollback: Rollback | None = None) -> dict[str, Any]:
    host = _remote.place(KERNEL_ID, options, {}, Rollback() if rollback is None else rollback)
    return _remote.render(KERNEL_ID, ["python3", "-c", "pass"], {"KERNEL_X": "1"}, options, host)


async def launch(options: SshOptions) -> dict[str, Any]:
    """Place and launch as core does: a launch failing before its handle exists runs the rollback."""
    rollback = Rollback(log)
    try:
        return await _remote.launch(KERNEL_ID, resources(options, rollback), options, rollback, log)
    except BaseException:
        await asyncio.shield(rollback.run())
        raise


def ok(**values: str) -> CommandResult:
    return CommandResult(0, "".join(f"gp-ssh-{k}={v}\n" for k, v in values.items()), "")


async def test_launch_and_stop(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [ok(pid="4242")]
    handle = await launch(options)
    assert handle["pid"] == handle["pgid"] == 4242
    assert handle["ip"] == handle["host"] in ("h1", "h2")
    assert PLACER.host_of(KERNEL_ID) == handle["host"]
    remote.answers = [ok(state="running"), ok(result="stopped")]
    assert await _remote.poll(handle, options, False, log) is None
    await _remote.stop(handle, options, restart=False, force=False, log=log)
    assert PLACER.host_of(KERNEL_ID) is None
    assert handle["log_path"] in remote.scripts[-1]  # a kernel that ran fine: its log is removed


async def test_a_refused_launch_releases_the_host(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [CommandResult(98, "", "gp-ssh: python3 was not found")]
    with pytest.raises(BackendError, match=r"on host h\d .*python3 was not found"):
        await launch(options)
    assert PLACER.host_of(KERNEL_ID) is None


async def test_an_unreachable_host_releases_the_host(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [SshConnectionError("Cannot connect to u@h1:22: Connection refused")]
    with pytest.raises(BackendError, match="Cannot connect"):
        await launch(options)
    assert PLACER.host_of(KERNEL_ID) is None


async def test_a_failing_render_releases_the_host(options: SshOptions) -> None:
    rollback = Rollback(log)
    host = _remote.place(KERNEL_ID, options, {}, rollback)
    with pytest.raises(BackendError, match="cannot be passed"):
        _remote.render(KERNEL_ID, ["python3"], {"BAD-NAME": "x"}, options, host)
    assert PLACER.host_of(KERNEL_ID) == host  # render is pure: core's rollback releases it
    assert await rollback.run() == []
    assert PLACER.host_of(KERNEL_ID) is None


async def test_a_cancelled_launch_stops_what_it_started(remote: FakeRemote, options: SshOptions) -> None:
    remote.gate = threading.Event()
    remote.answers = [ok(pid="4242"), ok(result="stopped")]
    task = asyncio.create_task(launch(options))
    while not remote.scripts:  # the launch command is under way in its thread
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    remote.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(remote.scripts) == 2
    assert "kill -s KILL" in remote.scripts[1] and "gp_pid=4242" in remote.scripts[1]
    assert PLACER.host_of(KERNEL_ID) is None


async def test_poll_during_start_up(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [ok(pid="4242")]
    handle = await launch(options)
    remote.answers = [SshConnectionError("hiccup")]
    with pytest.raises(BackendError, match="hiccup"):  # not a LaunchError: core retries the poll
        await _remote.poll(handle, options, True, log)
    remote.answers = [CommandResult(0, "gp-ssh-state=gone\ngp-ssh-log-begin\nTraceback: boom\n", "")]
    with pytest.raises(LaunchError, match=r"(?s)exited during start-up on host h\d.*Traceback: boom"):
        await _remote.poll(handle, options, True, log)
    assert "tail -c" in remote.scripts[-1]  # the log tail was asked for
    remote.answers = [ok(result="gone")]
    await _remote.stop(handle, options, restart=False, force=True, log=log)
    assert handle["log_path"] not in remote.scripts[-1].split("rm -f --")[-1]  # kept: the launch failed


async def test_after_start_up_a_poll_error_is_raised(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [ok(pid="4242")]
    handle = await launch(options)
    remote.answers = [SshConnectionError("host down")]
    with pytest.raises(BackendError, match="host down"):  # core logs it and keeps the kernel
        await _remote.poll(handle, options, False, log)
    remote.answers = [ok(state="gone")]
    assert await _remote.poll(handle, options, False, log) == 0


@pytest.mark.parametrize(
    ("restart", "force", "polled", "log_removed"),
    [
        (False, False, True, True),  # an ordinary shutdown
        (False, True, True, True),  # a kill after the kernel ran
        (True, False, True, False),  # a restart appends to the same log
        (False, True, False, False),  # forced stop of a kernel never seen running: a failed launch
    ],
)
async def test_log_policy(
    remote: FakeRemote, options: SshOptions, restart: bool, force: bool, polled: bool, log_removed: bool
) -> None:
    remote.answers = [ok(pid="4242")]
    handle = await launch(options)
    if polled:
        remote.answers = [ok(state="running")]
        await _remote.poll(handle, options, False, log)
    remote.answers = [ok(result="stopped")]
    await _remote.stop(handle, options, restart=restart, force=force, log=log)
    removed = remote.scripts[-1].split("rm -f --")[-1] if "rm -f --" in remote.scripts[-1] else ""
    assert (handle["log_path"] in removed) is log_removed


async def test_a_kernel_surviving_sigkill_is_an_error(remote: FakeRemote, options: SshOptions) -> None:
    remote.answers = [ok(pid="4242")]
    handle = await launch(options)
    remote.answers = [ok(result="alive")]
    with pytest.raises(BackendError, match="survived SIGKILL"):
        await _remote.stop(handle, options, restart=False, force=True, log=log)
    assert PLACER.host_of(KERNEL_ID) is None
