"""The core contract every backend relies on: rollback before a handle exists, the growing handle,
transient versus fatal poll errors, and the hook vocabulary (request_env, resource_dir, the log's name)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from gp_core import BackendError, LaunchError, LaunchTimeoutError, Rollback, hookimpl, local
from gp_core.plugins import register_backend, unregister_backend
from gp_core.testing import adopt_kernel, execute, kernel_manager, start_kernel, write_kernelspec


@pytest.fixture
def kernels(tmp_path):
    return tmp_path / "kernels"


@pytest.fixture
def backend_name(request):
    names: list[str] = []

    def register(plugin: object) -> str:
        name = f"contract-{request.node.name.split('[')[0][-40:]}-{len(names)}".replace("_", "-")
        register_backend(name, plugin)
        names.append(name)
        return name

    yield register
    for name in names:
        unregister_backend(name)


class _Creates:
    """A backend that 'creates' a namespace and a resource, recording what was undone."""

    def __init__(self, fail_in: str = "", hang_launch: bool = False) -> None:
        self.fail_in = fail_in
        self.hang_launch = hang_launch
        self.undone: list[str] = []
        self.terminated = 0

    @hookimpl
    def resolve_namespace(self, kernel_id: str, rollback: Rollback) -> str:
        rollback.add(lambda: self.undone.append("namespace"), what="namespace")
        return f"ns-{kernel_id[:8]}"

    @hookimpl
    def render_resources(self, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
        if self.fail_in == "render":
            raise BackendError("refused by render_resources")
        return {"cmd": cmd}

    @hookimpl
    async def launch(self, rollback: Rollback) -> dict[str, Any]:
        def create() -> str:
            time.sleep(0.2)
            return "resource-1"

        created = await rollback.create_in_thread(create, self.undone.append, what="resource")
        if self.hang_launch:
            await asyncio.sleep(3600)
        if self.fail_in == "launch":
            raise BackendError("launch failed after creating")
        if self.fail_in == "sdk-timeout":
            raise TimeoutError("the SDK's own read timed out")
        return {"resource": created}

    @hookimpl
    def poll(self, launching: bool) -> int | None:
        if launching:
            raise LaunchError("the kernel died")
        return 0

    @hookimpl
    def terminate(self) -> None:
        self.terminated += 1


async def test_a_refused_render_rolls_back_what_resolve_namespace_created(kernels, backend_name):
    backend = _Creates(fail_in="render")
    write_kernelspec(kernels, "k", backend=backend_name(backend))
    with pytest.raises(BackendError, match="refused by render_resources"):
        await start_kernel(kernel_manager(kernels, "k"))
    assert backend.undone == ["namespace"] and backend.terminated == 0


async def test_a_failed_launch_hook_rolls_back_newest_first(kernels, backend_name):
    backend = _Creates(fail_in="launch")
    write_kernelspec(kernels, "k", backend=backend_name(backend))
    with pytest.raises(BackendError, match="launch failed after creating"):
        await start_kernel(kernel_manager(kernels, "k"))
    assert backend.undone == ["resource-1", "namespace"] and backend.terminated == 0


async def test_a_launch_cancelled_while_creating_undoes_the_creation_once_it_finishes(kernels, backend_name):
    backend = _Creates()
    write_kernelspec(kernels, "k", backend=backend_name(backend))
    task = asyncio.ensure_future(start_kernel(kernel_manager(kernels, "k")))
    await asyncio.sleep(0.1)  # inside create(), in its worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if len(backend.undone) == 2:
            break
        await asyncio.sleep(0.02)
    assert backend.undone == ["resource-1", "namespace"]


async def test_the_launch_timeout_inside_launch_rolls_back(kernels, backend_name):
    backend = _Creates(hang_launch=True)
    write_kernelspec(kernels, "k", backend=backend_name(backend), config={"launch_timeout": 0.6})
    with pytest.raises(LaunchTimeoutError, match=r"within 0.6 s \(launch_timeout\)"):
        await start_kernel(kernel_manager(kernels, "k"))
    assert backend.undone == ["resource-1", "namespace"]


async def test_a_timeout_error_of_the_backend_is_not_the_launch_timeout(kernels, backend_name):
    backend = _Creates(fail_in="sdk-timeout")
    write_kernelspec(kernels, "k", backend=backend_name(backend), config={"launch_timeout": 30})
    with pytest.raises(BackendError, match="timed out creating kernel .*the SDK's own read") as info:
        await start_kernel(kernel_manager(kernels, "k"))
    assert not isinstance(info.value, LaunchTimeoutError)
    assert backend.undone == ["resource-1", "namespace"]


async def test_after_launch_returned_terminate_owns_the_clean_up(kernels, backend_name):
    backend = _Creates()  # poll(launching=True) says the kernel died
    write_kernelspec(kernels, "k", backend=backend_name(backend))
    with pytest.raises(LaunchError, match="the kernel died"):
        await start_kernel(kernel_manager(kernels, "k"))
    assert backend.undone == [] and backend.terminated == 1


async def test_rollback_errors_are_noted_not_raised_instead(caplog):
    rollback = Rollback(logging.getLogger("test"))

    def broken() -> None:
        raise RuntimeError("cannot delete the namespace")

    rollback.add(broken, what="namespace")
    rollback.add(lambda: None, what="placement")
    errors = await rollback.run()
    assert [str(e) for e in errors] == ["cannot delete the namespace"]
    assert "Could not roll back namespace" in caplog.text
    assert len(rollback) == 0


async def test_async_undo_steps_are_awaited():
    done: list[str] = []

    async def undo() -> None:
        await asyncio.sleep(0)
        done.append("async")

    rollback = Rollback()
    rollback.add(undo, what="x")
    assert await rollback.run() == []
    assert done == ["async"]


class _Growing:
    """The local backend, with a poll that learns something after launch (like a YARN application id)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.polls_failing = 0

    @hookimpl
    def declare_options(self):
        return local.LocalOptions

    @hookimpl
    def render_resources(self, kernel_id, cmd, env, options, request_env, resource_dir, log):
        self.seen.update(request_env=dict(request_env), resource_dir=resource_dir, log_name=log.name)
        return local.render_resources(kernel_id=kernel_id, cmd=cmd, env=env, options=options)

    @hookimpl
    async def launch(self, resources, rollback):
        return await local.launch(resources=resources, rollback=rollback)

    @hookimpl
    def poll(self, handle, launching):
        if launching and self.polls_failing:
            self.polls_failing -= 1
            raise ConnectionError("apiserver blip")
        handle.setdefault("learnt_after_launch", {"app_id": "application_1_0001"})
        return local.poll(handle=handle, launching=launching)

    @hookimpl
    async def terminate(self, handle, options, force, log):
        await local.terminate(handle=handle, options=options, force=force, log=log)


async def test_poll_grows_the_handle_and_adoption_sees_it(kernels, backend_name):
    name = backend_name(_Growing())
    write_kernelspec(kernels, "k", backend=name, config={"poll_interval": 0.05})
    km = kernel_manager(kernels, "k")
    await start_kernel(km)
    try:
        assert await km.provisioner.poll() is None
        info = await km.provisioner.get_provisioner_info()
        assert info["handle"]["learnt_after_launch"] == {"app_id": "application_1_0001"}
        other = await adopt_kernel(kernels, "k", info)
        assert other.provisioner._handle["learnt_after_launch"]["app_id"] == "application_1_0001"
        output, _ = await execute(other, "print(7 * 6)")
        assert output == "42\n"
    finally:
        await km.shutdown_kernel(now=True)


async def test_a_poll_that_puts_non_json_into_the_handle_is_named(kernels, backend_name):
    class _BadHandle(_Growing):
        @hookimpl
        def poll(self, handle, launching):
            handle["when"] = object()
            return None

    write_kernelspec(kernels, "k", backend=backend_name(_BadHandle()), config={"launch_timeout": 5})
    km = kernel_manager(kernels, "k")
    await start_kernel(km)
    try:
        # not launching: a backend bug is "status unknown", logged, never a dead kernel
        assert await km.provisioner.poll() is None
        with pytest.raises(BackendError, match="not JSON-serialisable"):
            await km.provisioner._poll_backend(launching=False)
    finally:
        await km.shutdown_kernel(now=True)


async def test_transient_poll_errors_while_launching_are_retried(kernels, backend_name, caplog):
    backend = _Growing()
    backend.polls_failing = 1000  # every poll while launching fails, yet the kernel's report arrives
    write_kernelspec(kernels, "k", backend=backend_name(backend), config={"poll_interval": 0.02})
    km = kernel_manager(kernels, "k")
    with caplog.at_level(logging.DEBUG):
        await start_kernel(km)
    try:
        output, _ = await execute(km, "print('up')")
        assert output == "up\n"
    finally:
        await km.shutdown_kernel(now=True)
    assert backend.polls_failing < 1000  # it really was polled and failed
    warnings = [r for r in caplog.records if "apiserver blip" in r.getMessage()]
    assert [r.levelno for r in warnings][:1] == [logging.WARNING]
    assert all(r.levelno == logging.DEBUG for r in warnings[1:])  # logged once, not in a loop


async def test_hooks_get_request_env_resource_dir_and_a_findable_logger(kernels, backend_name, monkeypatch):
    backend = _Growing()
    monkeypatch.setenv("SERVER_ONLY", "server")
    monkeypatch.setenv("KERNEL_FROM_SERVER", "same")
    write_kernelspec(kernels, "k", backend=backend_name(backend), env={"SPEC_VAR": "spec"})
    km = kernel_manager(kernels, "k")
    await start_kernel(km, KERNEL_FROM_REQUEST="req", SERVER_ONLY="changed-by-request")
    await km.shutdown_kernel(now=True)
    request_env = backend.seen["request_env"]
    assert request_env["KERNEL_FROM_REQUEST"] == "req"
    assert request_env["SERVER_ONLY"] == "changed-by-request"
    assert "KERNEL_FROM_SERVER" not in request_env and "SPEC_VAR" not in request_env
    assert "GP_LAUNCH_TOKEN" not in request_env
    assert backend.seen["resource_dir"] == str(kernels / "k")
    assert backend.seen["log_name"].endswith(f".gp.{km.provisioner.backend}")
