"""Both backends end to end: real kernels in containers / swarm services, driven through jupyter_client's
AsyncKernelManager and gp's GenericRemoteProvisioner.

Every test runs once per backend (``docker``, ``docker-swarm``); the ``kernels`` fixture fails a test
whose kernels left a container or service behind.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gp_docker import _client

from gp_core import BackendError, LaunchError, LaunchTimeoutError
from gp_core.testing import adopt_kernel, execute, interrupt_sleep, kernel_manager

from .conftest import IMAGE, IMAGE_LAUNCHER

pytestmark = [pytest.mark.docker]

#: Launch timeout of the fail-fast tests, and the bound (far below it) within which they must fail.
LAUNCH_TIMEOUT = 300
FAIL_FAST_BOUND = 60

WHERE_AM_I = (
    "import os, json, socket; print(json.dumps({'dockerenv': os.path.exists('/.dockerenv'), "
    "'uid': os.getuid(), 'gid': os.getgid(), 'host': socket.gethostname(), 'env': dict(os.environ)}))"
)


async def wait_until_dead(km, seconds: float) -> None:
    """Poll ``km`` every 0.1 s until it reports its kernel dead; fail if it still lives after ``seconds``."""
    for _ in range(round(seconds * 10)):
        if not await km.is_alive():
            return
        await asyncio.sleep(0.1)
    assert not await km.is_alive(), f"the kernel still lives after {seconds} s"


async def test_execute_interrupt_restart_shutdown(kernels, docker_api, leftovers, monkeypatch):
    monkeypatch.setenv("GP_SERVER_ONLY_SECRET", "must-not-reach-the-kernel")
    kernels.spec()
    km = kernels.manager()
    kernel_id = await kernels.start(km, KERNEL_FOO="bar")

    output, reply = await execute(km, WHERE_AM_I)
    assert reply["status"] == "ok"
    seen = json.loads(output)
    assert seen["dockerenv"], "the code did not run inside a container"
    assert (seen["uid"], seen["gid"]) == (1000, 100)
    env = seen["env"]
    assert env["KERNEL_ID"] == kernel_id and env["KERNEL_FOO"] == "bar"
    assert env["KERNEL_USERNAME"] == "gp-tester" and env["KERNEL_IMAGE"]
    assert "GP_SERVER_ONLY_SECRET" not in env
    first_handle = dict(km.provisioner._handle)
    assert docker_api.containers(all=True, filters={"label": f"kernel_id={kernel_id}"})

    reply = await interrupt_sleep(km)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    output, _ = await execute(km, "print('still here')")
    assert output == "still here\n"

    await km.restart_kernel()
    assert km.provisioner._handle != first_handle  # a new container / service ...
    output, _ = await execute(km, "print(6 * 7)")
    assert output == "42\n"
    running = docker_api.containers(filters={"label": f"kernel_id={kernel_id}", "status": "running"})
    assert len(running) == 1

    await km.shutdown_kernel()
    assert not await km.is_alive()
    # ... and after shutdown nothing of the kernel remains: terminate waits until it is gone.
    assert leftovers({kernel_id}) == []


@pytest.mark.parametrize("delay", [0, 1], ids=["at-once", "after-1s"])
async def test_a_crashing_kernel_fails_fast_with_exit_code_and_log(kernels, docker_api, leftovers, delay):
    """A kernel that dies while starting fails the launch at a poll, long before its launch timeout, with
    its exit code and log tail; at once, or after the listings have seen it running for a while."""
    code = f"import sys, time; time.sleep({delay}); print('gp-crash-marker', file=sys.stderr); sys.exit(3)"
    kernels.spec(argv=["python3", "-c", code], config={"launch_timeout": LAUNCH_TIMEOUT})
    km = kernels.manager()
    started = time.monotonic()
    try:
        # A functional bound, not a benchmark: a poll sees the exit within a second or so, while
        # waiting out the launch timeout would take five times the bound (and is cut short here).
        async with asyncio.timeout(FAIL_FAST_BOUND):
            with pytest.raises(LaunchError) as failure:
                await kernels.start(km)
    except TimeoutError:
        pytest.fail(f"the crashed kernel was still 'launching' after {FAIL_FAST_BOUND} s")
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert not isinstance(failure.value, LaunchTimeoutError), "waited for the timeout instead of failing fast"
    assert elapsed < FAIL_FAST_BOUND, f"the crash failed the launch only after {elapsed:.1f} s"
    assert re.search(r"(exited with code|exit code) 3\b", message), message
    assert "gp-crash-marker" in message.partition("Last lines of its log:\n")[2]  # the log tail
    assert leftovers(kernels.kernel_ids) == []


async def test_a_missing_image_is_a_clear_error(kernels, docker_api, leftovers):
    kernels.spec(config={"image": "gp/no-such-image:never", "launch_timeout": 300})
    km = kernels.manager()
    with pytest.raises(BackendError) as failure:
        await kernels.start(km)
    assert not isinstance(failure.value, LaunchTimeoutError)
    assert "gp/no-such-image:never" in str(failure.value)
    assert "image" in str(failure.value).lower()
    assert leftovers(kernels.kernel_ids) == []


async def test_launch_timeout_removes_what_was_created(kernels, docker_api, leftovers):
    kernels.spec(argv=["sleep", "600"], config={"launch_timeout": 3})  # runs, never reports back
    km = kernels.manager()
    with pytest.raises(LaunchTimeoutError):
        await kernels.start(km)
    assert leftovers(kernels.kernel_ids) == []


async def test_ten_launch_terminate_cycles_leave_nothing(kernels, docker_api, leftovers):
    kernels.spec()
    for _ in range(10):
        km = kernels.manager()
        await kernels.start(km)
        assert await km.is_alive()
        await km.shutdown_kernel(now=True)
    assert len(kernels.kernel_ids) == 10
    assert leftovers(kernels.kernel_ids) == []


async def test_hostile_request_values_are_refused_or_inert(kernels, docker_api, leftovers):
    kernels.spec()
    for refused in (
        {"KERNEL_UID": "00"},
        {"KERNEL_UID": " 0"},
        {"KERNEL_UID": "-0"},
        {"KERNEL_GID": "+0"},
        {"KERNEL_UID": "root"},
        {"KERNEL_UID": "1000; rm -rf /"},
        {"KERNEL_IMAGE": "evil/miner:latest"},
        {"KERNEL_CPUS_LIMIT": "$(nproc)"},
    ):
        km = kernels.manager()
        with pytest.raises(BackendError):
            await kernels.start(km, **refused)
    assert leftovers(kernels.kernel_ids) == []  # refused before anything was created

    hostile = "$(touch /tmp/gp-pwned); `id` && echo ${HOME} '\"\n"
    km = kernels.manager()
    kernel_id = await kernels.start(
        km, KERNEL_USERNAME="Mallory.$(id)", KERNEL_EXTRA=hostile, KERNEL_WORKING_DIR="/etc"
    )
    output, _ = await execute(
        km,
        "import os, json; print(json.dumps([os.environ.get('KERNEL_USERNAME'), os.environ.get('KERNEL_EXTRA'), "
        "os.environ.get('KERNEL_WORKING_DIR'), os.getcwd(), os.path.exists('/tmp/gp-pwned')]))",
    )
    username, extra, working_dir_env, cwd, pwned = json.loads(output)
    assert (username, extra) == ("Mallory.$(id)", hostile)
    assert working_dir_env is None and cwd != "/etc"  # mirroring is off by default
    assert not pwned
    name = km.provisioner._handle["name"]
    assert name == f"mallory-id-{kernel_id}"


async def test_status_of_many_kernels_costs_one_list_call_per_round(kernels):
    kernels.spec()
    managers = [kernels.manager() for _ in range(3)]
    for km in managers:
        await kernels.start(km)
    listing = _client.CONTAINERS if kernels.backend == "docker" else _client.TASKS
    for _ in range(3):
        before = listing.fetches
        alive = await asyncio.gather(*(km.is_alive() for km in managers))
        assert alive == [True, True, True]
        assert listing.fetches - before <= 1
    # In steady state the daemon's event stream keeps the listing current: polls cost no API call.
    for _ in range(100):
        if listing.watching:
            break
        await asyncio.sleep(0.05)
    assert listing.watching
    await asyncio.gather(*(km.is_alive() for km in managers))
    before, events_before = listing.fetches, _client.EVENTS.seen
    for _ in range(10):  # each kernel polled on its own clock, as jupyter_server's restarters do
        for km in managers:
            assert await km.is_alive()
            await asyncio.sleep(0.05)
    # Only an event (another kernel container starting or dying on this daemon) makes a poll list again.
    assert listing.fetches - before <= _client.EVENTS.seen - events_before
    assert listing.fetches - before < 10


async def test_a_kernel_whose_container_dies_is_reported_dead(kernels, docker_api, leftovers):
    kernels.spec()
    km = kernels.manager()
    kernel_id = await kernels.start(km)
    for container in docker_api.containers(filters={"label": f"kernel_id={kernel_id}"}):
        docker_api.kill(container["Id"])
    await wait_until_dead(km, seconds=20)
    await km.shutdown_kernel(now=True)
    assert leftovers({kernel_id}) == []


@pytest.mark.parametrize("backend", ["docker"], indirect=True)  # a swarm removes its task containers itself
async def test_graceful_terminate_reaches_the_kernel_through_init(kernels, docker_api, leftovers):
    kernels.spec(config={"remove_container": False})  # keep the stopped container to read its exit code
    km = kernels.manager()
    kernel_id = await kernels.start(km)
    handle = km.provisioner._handle
    await km.provisioner.terminate()
    state = docker_api.inspect_container(handle["container_id"])["State"]
    docker_api.remove_container(handle["container_id"], force=True)
    # 143 = SIGTERM: docker's init forwarded it; a PID 1 kernel would have ignored it and been SIGKILLed (137)
    assert (state["Status"], state["ExitCode"]) == ("exited", 143)
    assert leftovers({kernel_id}) == []


@pytest.fixture
def shared_dir():
    """A world-readable host directory the kernel (uid 1000) can read through a bind mount."""
    import shutil
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="gp-docker-test-"))
    directory.chmod(0o755)
    (directory / "hello.txt").write_text("from the host\n")
    (directory / "hello.txt").chmod(0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_options_reach_the_container(kernels, docker_api, shared_dir):
    kernels.spec(
        config={
            "volumes": [f"{shared_dir}:/data:ro"],
            "mirror_working_dirs": True,
            "cpus": 1,
            "max_cpus": 2,
            "memory": "256m",
            "default_uid": "1234",
            "default_gid": "2345",
        }
    )
    km = kernels.manager()
    kernel_id = await kernels.start(km, KERNEL_WORKING_DIR="/data", KERNEL_CPUS_LIMIT="1.5")
    output, _ = await execute(
        km, "import os; print(open('hello.txt').read().strip(), os.getcwd(), os.getuid(), os.getgid())"
    )
    assert output.split() == ["from", "the", "host", "/data", "1234", "2345"]
    (container,) = docker_api.containers(filters={"label": f"kernel_id={kernel_id}"})
    host_config = docker_api.inspect_container(container["Id"])["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["NanoCpus"] == 1_500_000_000 and host_config["Memory"] == 256 * 2**20
    assert host_config["Init"] is True
    if kernels.backend == "docker-swarm":
        spec = docker_api.inspect_service(km.provisioner._handle["service_id"])["Spec"]
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"  # a kernel is never restarted
        assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        assert spec["TaskTemplate"]["ContainerSpec"]["Labels"]["kernel_id"] == kernel_id


async def test_a_second_manager_adopts_a_running_kernel(kernels, docker_api, leftovers):
    """What another server process does with a kernel the first one persisted: reach it through the
    persisted provisioner info alone, run code, interrupt it, shut it down."""
    kernels.spec()
    km = kernels.manager()
    kernel_id = await kernels.start(km)
    info = json.loads(json.dumps(await km.provisioner.get_provisioner_info()))  # as persisted
    assert info["backend"] == kernels.backend and info["handle"]["kernel_id"] == kernel_id
    # A new process knows nothing of when this one created the kernel's container / service.
    _client.created_at.pop(info["handle"].get("container_id") or info["handle"].get("service_id"), None)

    other = await adopt_kernel(kernels.directory, "k", info)
    kernels.managers.append(other)
    assert other.provisioner is not km.provisioner
    assert await other.is_alive()
    output, reply = await execute(other, "import os; print('adopted', os.environ['KERNEL_ID'], 6 * 7)")
    assert reply["status"] == "ok" and output == f"adopted {kernel_id} 42\n"
    reply = await interrupt_sleep(other)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    output, _ = await execute(km, "print('first manager still works')")  # the same kernel, both ways
    assert output == "first manager still works\n"

    await other.shutdown_kernel(now=True)
    assert not await other.is_alive()
    assert leftovers({kernel_id}) == []
    # The first manager sees its kernel gone, and shutting it down again is a harmless no-op.
    await wait_until_dead(km, seconds=10)
    await km.shutdown_kernel(now=True)
    assert leftovers({kernel_id}) == []


def _jupyter() -> str:
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.fail(f"no jupyter command next to {sys.executable}: is the test venv installed?")
    return str(jupyter)


async def test_an_installed_kernelspec_runs(kernels, docker_api, leftovers, tmp_path):
    """``jupyter docker-spec install`` (``--swarm`` for docker-swarm) writes a kernelspec that jupyter_client
    starts as it is: the launcher inside the image, the backend, image and network from the installer."""
    swarm = ["--swarm"] if kernels.backend == "docker-swarm" else []
    result = await asyncio.to_thread(
        subprocess.run,
        [
            _jupyter(),
            "docker-spec",
            "install",
            f"--prefix={tmp_path / 'prefix'}",
            "--kernel-name=installed",
            f"--image-name={IMAGE}",
            "--network=host",
            *swarm,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    spec_root = tmp_path / "prefix/share/jupyter/kernels"
    spec = json.loads((spec_root / "installed/kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert (config["backend"], config["image"], config["network"]) == (kernels.backend, IMAGE, "host")

    km = kernel_manager(spec_root, "installed")
    kernels.managers.append(km)
    kernel_id = await kernels.start(km)
    assert km.provisioner.backend == kernels.backend
    output, reply = await execute(km, "import os; print(os.path.exists('/.dockerenv'), 6 * 7)")
    assert reply["status"] == "ok" and output == "True 42\n"  # ran, inside a container
    (container,) = docker_api.containers(filters={"label": f"kernel_id={kernel_id}"})
    inspected = docker_api.inspect_container(container["Id"])
    assert inspected["Config"]["Cmd"][:2] == ["python3", IMAGE_LAUNCHER]  # the image's launcher
    assert inspected["Config"]["Image"] == IMAGE and inspected["HostConfig"]["NetworkMode"] == "host"
    assert ("service_id" in km.provisioner._handle) == (kernels.backend == "docker-swarm")
    await km.shutdown_kernel()
    assert not await km.is_alive()
    assert leftovers({kernel_id}) == []
