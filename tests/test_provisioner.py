"""GenericRemoteProvisioner end to end on the local backend, with real ipykernel kernels."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from gp_core import (
    BackendError,
    BackendOptions,
    InvalidOptionError,
    LaunchError,
    LaunchTimeoutError,
    Rollback,
    UnknownBackendError,
    get_backend,
    hookimpl,
    installed_backends,
    local,
)
from gp_core.plugins import register_backend, unregister_backend
from gp_core.provisioner import GenericRemoteProvisioner
from gp_core.testing import (
    NullBackend,
    adopt_kernel,
    check_interrupt_without_launcher,
    execute,
    interrupt_sleep,
    kernel_manager,
    launcher_argv,
    require_backend,
    start_kernel,
    write_kernelspec,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purposes
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def kernels(tmp_path):
    return tmp_path / "kernels"


async def _started(kernels, name="k", **spec):
    write_kernelspec(kernels, name, backend=spec.pop("backend", "local"), **spec)
    km = kernel_manager(kernels, name)
    await start_kernel(km)
    return km


async def test_execute_interrupt_restart_shutdown(kernels):
    km = await _started(kernels)
    try:
        assert isinstance(km.provisioner, GenericRemoteProvisioner)
        output, reply = await execute(km, "import os; print(os.getpid(), os.environ['KERNEL_USERNAME'])")
        assert reply["status"] == "ok"
        pid, user = output.split()
        assert int(pid) == km.provisioner._handle["pid"] and user == "gp-tester"

        reply = await interrupt_sleep(km)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        output, reply = await execute(km, "print('still alive')")
        assert output == "still alive\n"

        await km.restart_kernel()
        new_pid = km.provisioner._handle["pid"]
        assert new_pid != int(pid) and not _alive(int(pid))
        output, _ = await execute(km, "import os; print(os.getpid())")
        assert int(output) == new_pid
    finally:
        await km.shutdown_kernel()
    assert not await km.is_alive()
    assert not _alive(new_pid)
    assert km.provisioner is None or not km.provisioner.has_process


SLOW_CELL_START = """
import pathlib, time
def _slow_start(*args):
    time.sleep(1.0)  # a slow machine: the cell runs well after its execute_input
    pathlib.Path({started!r}).write_text("running")
get_ipython().events.register("pre_run_cell", _slow_start)
"""


async def test_interrupt_sleep_interrupts_only_once_the_cell_runs(kernels, tmp_path):
    km = await _started(kernels)
    started = tmp_path / "cell-running"
    try:
        _, reply = await execute(km, SLOW_CELL_START.format(started=str(started)))
        assert reply["status"] == "ok"
        started.unlink(missing_ok=True)  # the registering cell did not run the hook; be sure anyway
        interrupt = km.interrupt_kernel
        seen_running: list[bool] = []

        async def checked_interrupt():
            seen_running.append(started.exists())
            await interrupt()

        km.interrupt_kernel = checked_interrupt
        reply = await interrupt_sleep(km, timeout=20)
        assert seen_running == [True]
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    finally:
        await km.shutdown_kernel(now=True)


async def test_a_local_kernel_is_interrupted_when_its_launcher_does_not_answer(kernels):
    km = await _started(kernels)
    try:
        await check_interrupt_without_launcher(km)  # local.send_signal: the kernel's process group
    finally:
        await km.shutdown_kernel(now=True)


async def _drip(host, port, stop):
    """An unsigned client holding a comm-port connection: a byte a second, never a whole request."""
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            while not stop.is_set():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1.0)
        except OSError:
            pass  # shed: come back
        finally:
            writer.close()


async def test_slow_clients_on_the_comm_port_do_not_block_an_interrupt(kernels):
    km = await _started(kernels)
    host, port = (await km.provisioner.get_provisioner_info())["comm_address"]
    stop = asyncio.Event()
    drips = [asyncio.ensure_future(_drip(host, port, stop)) for _ in range(16)]
    try:
        await asyncio.sleep(1.0)
        reply = await interrupt_sleep(km)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    finally:
        stop.set()
        await asyncio.gather(*drips, return_exceptions=True)
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("pgid", ["own", 0, 1, -5])
def test_local_send_signal_never_signals_the_servers_group_or_a_namespace_pgid(pgid):
    group = os.getpgid(0) if pgid == "own" else pgid
    handle = {"pid": os.getpid(), "pgid": group, "log_path": "/nonexistent", "ip": "127.0.0.1"}
    with pytest.raises(BackendError, match="Refusing to signal"):
        local.send_signal(handle=handle, signum=signal.SIGUSR1)


CONNECTION_DIR = "import os; from ipykernel.connect import get_connection_file; print(os.path.dirname(get_connection_file()))"


@pytest.mark.parametrize("now", [True, False])
async def test_the_launchers_connection_directory_is_removed(kernels, now):
    # It holds the kernel's HMAC key; a kernel killed by a signal never ran the launcher's atexit clean-up.
    km = await _started(kernels)
    try:
        output, _ = await execute(km, CONNECTION_DIR)
        connection_dir = output.strip()
        assert os.path.exists(os.path.join(connection_dir, "kernel.json"))
        await km.restart_kernel(now=now)
        assert not os.path.exists(connection_dir)
        output, _ = await execute(km, CONNECTION_DIR)
        connection_dir = output.strip()
    finally:
        await km.shutdown_kernel(now=now)
    assert not os.path.exists(connection_dir)


async def test_a_kernel_in_its_own_pid_namespace_reports_pgid_0_and_runs(kernels):
    # Under `unshare --pid --fork` the launcher is pid 1 and its group's leader (unshare) lies outside its
    # namespace: getpgid(0) says 0. Core takes it, and signals only what the backend's handle names.
    works = (
        shutil.which("unshare") is not None
        and not (
            await asyncio.to_thread(
                subprocess.run, ["unshare", "--pid", "--fork", "true"], capture_output=True
            )
        ).returncode
    )
    if not works:
        require_backend("local", "unshare --pid --fork does not work here")  # fails the run if required
    argv = ["unshare", "--pid", "--fork", *launcher_argv()]
    km = await _started(kernels, argv=argv)
    try:
        assert km.provisioner._report.pid == 1 and km.provisioner._report.pgid == 0
        handle_pgid = km.provisioner._handle["pgid"]
        assert handle_pgid > 1 and handle_pgid != os.getpgid(0)
        output, _ = await execute(km, "import os; print(os.getpid(), os.getpgid(0))")
        assert output.split() == ["1", "0"]
        reply = await interrupt_sleep(km)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    finally:
        await km.shutdown_kernel(now=True)
    assert not _alive(handle_pgid)


async def test_kernel_env_carries_request_values_not_server_secrets(kernels, monkeypatch):
    monkeypatch.setenv("GP_REMOTE_PWD", "s3cret")
    write_kernelspec(kernels, "k", backend="local", config={"inherit_server_env": False})
    km = kernel_manager(kernels, "k")
    await start_kernel(km, KERNEL_FOO="$(touch /tmp/gp-pwned); `id`", KERNEL_LAUNCH_TIMEOUT="40")
    try:
        output, _ = await execute(
            km,
            "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
            "('KERNEL_FOO', 'GP_REMOTE_PWD', 'HOME', 'KERNEL_ID', 'GP_LAUNCH_TOKEN')}))",
        )
        seen = json.loads(output)
        assert seen["KERNEL_FOO"] == "$(touch /tmp/gp-pwned); `id`"  # inert data
        assert seen["GP_REMOTE_PWD"] is None and seen["HOME"] is None  # not the server's environment
        assert seen["KERNEL_ID"] == km.kernel_id
        assert not os.path.exists("/tmp/gp-pwned")
    finally:
        await km.shutdown_kernel()


@pytest.mark.parametrize("name", ["KERNEL_X\n", "KERNEL_X\r", "KERNEL X", "KERNEL_X=Y"])
async def test_an_invalid_environment_name_is_refused_before_anything_starts(kernels, name):
    write_kernelspec(kernels, "k", backend="local")
    km = kernel_manager(kernels, "k")
    with pytest.raises(InvalidOptionError, match="Environment variable name"):
        await start_kernel(km, **{name: "v"})
    assert km.provisioner is None or not km.provisioner.has_process


async def test_adopt_running_kernel_from_second_manager(kernels):
    km = await _started(kernels)
    try:
        info = json.loads(json.dumps(await km.provisioner.get_provisioner_info()))  # as persisted
        other = await adopt_kernel(kernels, "k", info)
        assert await other.is_alive()
        output, reply = await execute(other, "print('adopted', 6 * 7)")
        assert output == "adopted 42\n"
        reply = await interrupt_sleep(other)
        assert reply["ename"] == "KeyboardInterrupt"
        await other.shutdown_kernel(now=True)
        assert not _alive(info["handle"]["pid"])
    finally:
        await km.shutdown_kernel(now=True)


ADOPT_IN_ANOTHER_PROCESS = """
import asyncio, json, sys
from gp_core.testing import adopt_kernel, execute, interrupt_sleep

async def main():
    kernels, info = sys.argv[1], json.loads(sys.stdin.read())
    km = await adopt_kernel(kernels, "k", info)
    alive = await km.is_alive()
    output, _ = await execute(km, "import os; print(os.getpid())")
    interrupted = (await interrupt_sleep(km))["ename"]
    await km.shutdown_kernel(now=True)
    print(json.dumps({"alive": alive, "pid": int(output), "interrupted": interrupted}))

asyncio.run(main())
"""


SERVER_THAT_DIES = """
import asyncio, sys
from gp_core.testing import execute, kernel_manager, start_kernel

async def main():
    km = kernel_manager(sys.argv[1], "k")
    await start_kernel(km)
    output, _ = await execute(km, "import os; print(os.getpid())")
    print(int(output), flush=True)
    await asyncio.sleep(3600)  # killed by the test meanwhile

asyncio.run(main())
"""


async def test_a_local_kernel_dies_with_its_killed_server(kernels):
    write_kernelspec(kernels, "k", backend="local")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_THAT_DIES, str(kernels), stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        kernel_pid = int(await asyncio.wait_for(server.stdout.readline(), 60))
        assert _alive(kernel_pid)
    finally:
        server.kill()
        await server.wait()
    for _ in range(200):  # ipykernel's parent poller checks every second
        if not _alive(kernel_pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(kernel_pid), "the local kernel outlived its server"


SERVER_THAT_DIES_WITH_ITS_CONNECTION_DIR = SERVER_THAT_DIES.replace(
    '"import os; print(os.getpid())"',
    '"import os; from ipykernel.connect import get_connection_file as f; print(os.getpid(), f())"',
).replace("print(int(output), flush=True)", "print(output.strip(), flush=True)")


async def test_a_dead_servers_connection_directories_are_swept_by_the_next_launch(kernels, monkeypatch):
    # A kernel that exits with its killed server (ipykernel's parent poller: os._exit) runs no clean-up,
    # and no terminate ever comes: the next server process's first local launch removes what it left.
    write_kernelspec(kernels, "k", backend="local")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_THAT_DIES_WITH_ITS_CONNECTION_DIR, str(kernels), stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        pid_text, connection_file = (await asyncio.wait_for(server.stdout.readline(), 60)).decode().split()
    finally:
        server.kill()
        await server.wait()
    ours = os.path.dirname(os.path.dirname(connection_file))
    for _ in range(200):
        if not _alive(int(pid_text)):
            break
        await asyncio.sleep(0.05)
    assert not _alive(int(pid_text)) and os.path.isdir(ours)  # left behind, with the kernel's key
    monkeypatch.setattr(local, "_swept", False)  # as in a new server process
    km = await _started(kernels)
    try:
        assert not os.path.exists(ours)
        assert os.path.isdir(km.provisioner._handle["connection_dir"])  # a live kernel's is kept
    finally:
        await km.shutdown_kernel(now=True)


async def test_adopt_from_another_server_process(kernels):
    # Nothing of the first process's state helps the second: only the persisted provisioner info.
    km = await _started(kernels)
    try:
        info = await km.provisioner.get_provisioner_info()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", ADOPT_IN_ANOTHER_PROCESS, str(kernels)],
            input=json.dumps(info),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen == {"alive": True, "pid": info["handle"]["pid"], "interrupted": "KeyboardInterrupt"}
        assert not _alive(info["handle"]["pid"])  # the other process shut it down
    finally:
        await km.shutdown_kernel(now=True)


async def test_unknown_backend_fails_before_anything_is_created(kernels):
    write_kernelspec(kernels, "k", backend="nomad")
    km = kernel_manager(kernels, "k")
    with pytest.raises(UnknownBackendError, match="'nomad'.*installed backends: .*local"):
        await start_kernel(km)


async def test_server_gp_variables_never_reach_an_inheriting_local_kernel(kernels, monkeypatch):
    monkeypatch.setenv("GP_REMOTE_PWD", "s3cret")  # another backend's secret, in the server's env
    monkeypatch.setenv("GP_SOME_SETTING", "server-config")
    monkeypatch.setenv("SERVER_ONLY_VARIABLE", "inherited")
    km = await _started(kernels)  # inherit_server_env left at its default (True)
    try:
        assert km.provisioner.options.inherit_server_env is True
        output, _ = await execute(
            km,
            "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
            "('GP_REMOTE_PWD', 'GP_SOME_SETTING', 'SERVER_ONLY_VARIABLE', 'KERNEL_ID')}))",
        )
        assert json.loads(output) == {
            "GP_REMOTE_PWD": None,
            "GP_SOME_SETTING": None,
            "SERVER_ONLY_VARIABLE": "inherited",
            "KERNEL_ID": km.kernel_id,
        }
    finally:
        await km.shutdown_kernel()


class _SecretiveOptions(BackendOptions):
    secret_env = ("NOMAD_TOKEN",)


class _RecordingBackend(NullBackend):
    """Records the env core hands to render_resources, then refuses the launch (nothing is started)."""

    def __init__(self) -> None:
        self.env: dict[str, str] | None = None

    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return _SecretiveOptions

    @hookimpl
    def render_resources(self, env: dict[str, str]) -> dict:
        self.env = dict(env)
        raise BackendError("recorded; not launching")

    @hookimpl
    def launch(self) -> dict:
        raise AssertionError("never reached")


class _HangingLaunch(NullBackend):
    """A backend whose launch never returns (an SSH host that takes the command, then hangs)."""

    def __init__(self) -> None:
        self.cancelled = False

    @hookimpl
    async def launch(self) -> dict[str, str]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True  # where a real backend removes what it started
            raise
        return {}


async def test_the_launch_timeout_bounds_the_backends_launch_too(kernels):
    backend = _HangingLaunch()
    register_backend("hanging-launch", backend)
    try:
        write_kernelspec(kernels, "k", backend="hanging-launch", config={"launch_timeout": 1})
        started = time.monotonic()
        with pytest.raises(
            LaunchTimeoutError, match=r"did not create kernel .* within 1 s \(launch_timeout\)"
        ):
            await start_kernel(kernel_manager(kernels, "k"))
        assert time.monotonic() - started < 30  # the launch timeout, not the hook, decides
    finally:
        unregister_backend("hanging-launch")
    assert backend.cancelled


async def test_kernel_env_drops_the_secrets_the_backend_declares(kernels, monkeypatch):
    recorder = _RecordingBackend()
    register_backend("undo-secretive", recorder)
    try:
        monkeypatch.setenv("NOMAD_TOKEN", "server-secret")
        write_kernelspec(
            kernels, "k", backend="undo-secretive", env={"NOMAD_TOKEN": "spec-value", "SPEC_VAR": "kept"}
        )
        with pytest.raises(BackendError, match="recorded; not launching"):
            await start_kernel(kernel_manager(kernels, "k"), KERNEL_FOO="bar")
    finally:
        unregister_backend("undo-secretive")
    assert recorder.env is not None
    assert "NOMAD_TOKEN" not in recorder.env  # even though the kernelspec's env names it
    assert recorder.env["SPEC_VAR"] == "kept" and recorder.env["KERNEL_FOO"] == "bar"
    assert recorder.env["GP_LAUNCH_TOKEN"]  # what core adds itself stays


def test_ssh_declares_its_password_secret():
    if "ssh" not in installed_backends():
        require_backend("ssh", "gp-ssh is not installed")
    assert "GP_REMOTE_PWD" in get_backend("ssh").secret_env


async def test_unknown_option_lists_every_valid_option(kernels):
    write_kernelspec(kernels, "k", backend="local", config={"imagee": "x"})
    km = kernel_manager(kernels, "k")
    with pytest.raises(InvalidOptionError) as info:
        await start_kernel(km)
    core = GenericRemoteProvisioner.core_option_names()
    assert {"backend", "launch_timeout", "port_range", "authorized_users", "poll_interval"} <= set(core)
    assert str(info.value) == (
        "Unknown option(s) 'imagee' for gp backend 'local'; valid options: "
        f"{', '.join(core)} (core), inherit_server_env, kernel_ip, log_dir, stop_timeout (local)"
    )


class _CleanupFailsBackend:
    """A kernel that dies while starting, and whose removal then fails too."""

    @hookimpl
    def launch(self) -> dict:
        return {"ip": "127.0.0.1"}

    @hookimpl
    def poll(self, launching: bool) -> int | None:
        if launching:
            raise LaunchError("the kernel died while starting")
        return 0

    @hookimpl
    def terminate(self) -> None:
        raise BackendError("could not remove the kernel's container")


async def test_failed_cleanup_after_failed_launch_keeps_the_launch_error(kernels, caplog):
    register_backend("undo-cleanup-fails", _CleanupFailsBackend())
    try:
        write_kernelspec(kernels, "k", backend="undo-cleanup-fails", config={"poll_interval": 0.05})
        with pytest.raises(LaunchError, match="the kernel died while starting") as info:
            await start_kernel(kernel_manager(kernels, "k"))
    finally:
        unregister_backend("undo-cleanup-fails")
    assert not isinstance(info.value, LaunchTimeoutError)
    assert any("could not remove the kernel's container" in note for note in info.value.__notes__)
    assert any(
        "after its failed launch" in record.getMessage()
        and "could not remove the kernel's container" in record.getMessage()
        for record in caplog.records
    )


async def test_local_launch_starts_the_process_off_the_event_loop(kernels, monkeypatch):
    threads: list[threading.Thread] = []
    start = local._start

    def recording_start(resources):
        threads.append(threading.current_thread())
        return start(resources)

    monkeypatch.setattr(local, "_start", recording_start)
    km = await _started(kernels)
    try:
        output, _ = await execute(km, "print('up')")
        assert output == "up\n"
    finally:
        await km.shutdown_kernel()
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


async def test_cancelled_local_launch_kills_the_process_it_started(tmp_path, monkeypatch):
    started: list[subprocess.Popen[bytes]] = []
    start = local._start
    entered, cancelled = threading.Event(), threading.Event()

    def slow_start(resources):
        entered.set()
        cancelled.wait(30)  # the launch is cancelled meanwhile, however slow the machine
        started.append(start(resources))
        return started[-1]

    monkeypatch.setattr(local, "_start", slow_start)
    log_path = tmp_path / "kernel.log"
    resources = {
        "argv": [sys.executable, "-c", "import time; time.sleep(600)"],
        "env": {},
        "cwd": None,
        "log_path": str(log_path),
        "ip": "127.0.0.1",
    }
    rollback = Rollback()
    task = asyncio.ensure_future(local.launch(resources, rollback))
    assert await asyncio.to_thread(entered.wait, 30)  # the process is being started in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not started  # still starting in its thread: core's rollback waits for it, then undoes it
    cancelled.set()
    assert await rollback.run() == []
    assert len(started) == 1
    assert await asyncio.to_thread(started[0].wait, 10) == -signal.SIGKILL
    assert not log_path.exists()


def _log_resources(log_path):
    return {
        "argv": [sys.executable, "-c", "print('kernel output')"],
        "env": {},
        "cwd": None,
        "log_path": str(log_path),
        "ip": "127.0.0.1",
    }


def test_the_local_kernel_log_is_private(tmp_path):
    log_path = tmp_path / "gp-kernel-k.log"
    process = local._start(_log_resources(log_path))
    assert process.wait(30) == 0
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600  # it may hold what the kernel prints
    assert log_path.read_text() == "kernel output\n"


def test_a_planted_symlink_at_the_local_log_path_is_not_followed(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    log_path = tmp_path / "gp-kernel-k.log"
    log_path.symlink_to(target)
    process = local._start(_log_resources(log_path))
    assert process.wait(30) == 0
    assert target.read_text() == "precious\n"
    assert not log_path.is_symlink() and log_path.read_text() == "kernel output\n"


def test_a_planted_hard_link_at_the_local_log_path_is_not_written(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    log_path = tmp_path / "gp-kernel-k.log"
    os.link(target, log_path)
    process = local._start(_log_resources(log_path))
    assert process.wait(30) == 0
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"port_range": "40000-41000"}, r"port_range.*40000-41000"),
        ({"port_range": "41000..40000"}, r"port_range"),
        ({"launch_timeout": -1}, r"launch_timeout must be a positive"),
        ({"inherit_server_env": "perhaps"}, r"inherit_server_env"),
    ],
)
async def test_invalid_options_are_named(kernels, config, match):
    write_kernelspec(kernels, "k", backend="local", config=config)
    km = kernel_manager(kernels, "k")
    with pytest.raises(InvalidOptionError, match=match):
        await start_kernel(km)


async def test_missing_backend_name_is_an_error(kernels):
    spec_dir = write_kernelspec(kernels, "k", backend="local")
    spec_file = spec_dir / "k" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    del spec["metadata"]["kernel_provisioner"]["config"]["backend"]
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(InvalidOptionError, match="must name a gp backend"):
        await start_kernel(kernel_manager(kernels, "k"))


@pytest.mark.parametrize(
    ("config", "user", "match"),
    [
        ({}, "root", "'root' is not authorized.*unauthorized_users"),
        ({"authorized_users": ["alice"]}, "bob", "'bob' is not authorized.*only alice may"),
        ({"authorized_users": ["alice"], "unauthorized_users": ["alice"]}, "alice", "unauthorized_users"),
    ],
)
async def test_unauthorized_users_are_refused(kernels, config, user, match):
    write_kernelspec(kernels, "k", backend="local", config=config)
    km = kernel_manager(kernels, "k")
    with pytest.raises(PermissionError, match=match):
        await start_kernel(km, KERNEL_USERNAME=user)
    assert not km.has_kernel


async def test_bad_per_request_launch_timeout_is_refused(kernels):
    write_kernelspec(kernels, "k", backend="local")
    km = kernel_manager(kernels, "k")
    with pytest.raises(InvalidOptionError, match="KERNEL_LAUNCH_TIMEOUT='9999'.*between 0 and 300"):
        await start_kernel(km, KERNEL_LAUNCH_TIMEOUT="9999")


async def test_kernel_that_dies_during_startup_fails_fast_with_its_log(kernels):
    argv = [sys.executable, "-c", "import sys; print('launcher exploded', file=sys.stderr); sys.exit(3)"]
    write_kernelspec(kernels, "k", backend="local", argv=argv, config={"launch_timeout": 60})
    km = kernel_manager(kernels, "k")
    with pytest.raises(LaunchError, match=r"(?s)exited with status 3.*launcher exploded"):
        await start_kernel(km)
    assert not km.has_kernel


async def test_launch_timeout_removes_the_kernel(kernels, tmp_path):
    pid_file = tmp_path / "pid"
    argv = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)",
    ]
    write_kernelspec(kernels, "k", backend="local", argv=argv, config={"launch_timeout": 1.5})
    km = kernel_manager(kernels, "k")
    with pytest.raises(LaunchTimeoutError, match="did not report its connection info within 1.5 s"):
        await start_kernel(km)
    assert not _alive(int(pid_file.read_text()))


async def test_third_party_backend_runs_a_real_kernel(kernels, tmp_path):
    km = await _started(kernels, backend="example", config={"sandbox_root": str(tmp_path), "greeting": "hi"})
    try:
        output, _ = await execute(
            km, "import os; print(os.environ['EXAMPLE_GREETING'], os.path.basename(os.getcwd()))"
        )
        assert output == "hi sandbox-gp-tester\n"
    finally:
        await km.shutdown_kernel()


async def test_terminate_signal_goes_through_the_comm_port(kernels):
    km = await _started(kernels)
    pid = km.provisioner._handle["pid"]
    try:
        await km.signal_kernel(signal.SIGTERM)
        assert await km.provisioner.wait() is not None
        assert not _alive(pid)
    finally:
        await km.shutdown_kernel(now=True)


def test_provisioner_is_registered_with_jupyter_client():
    factory = KernelProvisionerFactory.instance()
    assert any(ep.name == "gp-remote-provisioner" for ep in factory._get_all_provisioners())


def test_core_option_precedence(monkeypatch):
    from jupyter_client.kernelspec import KernelSpec
    from traitlets.config import Config, Configurable

    spec = KernelSpec(argv=["x"], display_name="x", language="python")

    def make(config: Config | None = None, **per_kernel):
        parent = Configurable(config=config or Config())
        return GenericRemoteProvisioner(
            kernel_id="k", kernel_spec=spec, parent=parent, backend="local", **per_kernel
        )

    assert make().launch_timeout == 30
    monkeypatch.setenv("GP_LAUNCH_TIMEOUT", "40")
    assert make().launch_timeout == 40
    server = Config({"GenericRemoteProvisioner": {"launch_timeout": 50}})
    assert make(server).launch_timeout == 50
    assert make(server, launch_timeout=60).launch_timeout == 60


def test_bad_env_value_is_named(monkeypatch):
    from jupyter_client.kernelspec import KernelSpec

    monkeypatch.setenv("GP_PORT_RANGE", "lots")
    spec = KernelSpec(argv=["x"], display_name="x", language="python")
    with pytest.raises(InvalidOptionError, match="lots"):
        GenericRemoteProvisioner(kernel_id="k", kernel_spec=spec, backend="local")


def test_the_anchors_single_port_form_from_env_reaches_launchers_as_any_port(monkeypatch):
    monkeypatch.setenv("GP_PORT_RANGE", "45000..45000")
    assert GenericRemoteProvisioner(backend="local").port_range == "0..0"
