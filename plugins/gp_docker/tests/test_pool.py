"""Pools of parked containers (``pool_size``) on the real dockerd: a pooled kernel is an ordinary kernel,
launches shaped differently start cold, and nothing parked outlives its pool or its server process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import docker.errors
import gp_docker
import pytest
from gp_docker import _pool

from gp_core.plugins import get_backend
from gp_core.testing import execute, interrupt_sleep

from .conftest import IMAGE, LAUNCHER_ARGV
from .test_e2e import WHERE_AM_I

pytestmark = [pytest.mark.docker, pytest.mark.parametrize("backend", ["docker"], indirect=True)]

PARKED = {"label": [f"{_pool.POOL_LABEL}=parked"]}


def parked_ids() -> set[str]:
    """The containers this process's pools hold parked."""
    return {parked.container_id for pool in list(_pool._pools.values()) for parked in pool._parked}


async def settle(seconds: float = 60) -> None:
    """Wait until every pool is full, then a little more: a just-parked launcher is still importing."""
    deadline = time.monotonic() + seconds
    while not _pool.pools_settled():
        assert time.monotonic() < deadline, "the pool did not fill"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


@pytest.fixture(autouse=True)
def pools(docker_api: Any) -> Any:
    """Every test's pools are closed at its end, and nothing they parked may remain."""
    yield
    ids = parked_ids()
    gp_docker.close_pools()
    left = [c["Names"][0] for c in docker_api.containers(all=True, filters=PARKED) if c["Id"] in ids]
    assert not left, f"parked containers left behind: {left}"


async def test_a_pooled_kernel_runs_interrupts_restarts_and_shuts_down(kernels, docker_api, leftovers):
    kernels.spec(config={"pool_size": 1})
    first = kernels.manager()
    await kernels.start(first)  # the pool's first launch starts cold and fills the pool
    assert (
        "gp.pool"
        not in docker_api.inspect_container(first.provisioner._handle["container_id"])["Config"]["Labels"]
    )
    await settle()
    (parked,) = parked_ids()

    km = kernels.manager()
    kernel_id = await kernels.start(km, KERNEL_FOO="bar")
    handle = km.provisioner._handle
    assert handle["container_id"] == parked  # taken from the pool ...
    container = docker_api.inspect_container(parked)
    assert container["Name"] == f"/gp-tester-{kernel_id}"  # ... renamed for its kernel

    output, reply = await execute(km, WHERE_AM_I)
    assert reply["status"] == "ok"
    seen = json.loads(output)
    assert seen["dockerenv"] and (seen["uid"], seen["gid"]) == (1000, 100)
    env = seen["env"]
    assert (
        env["KERNEL_ID"] == kernel_id and env["KERNEL_FOO"] == "bar" and env["KERNEL_USERNAME"] == "gp-tester"
    )
    assert "GP_LAUNCH_TOKEN" not in env

    reply = await interrupt_sleep(km)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    await km.restart_kernel()
    assert km.provisioner._handle["container_id"] != parked
    output, _ = await execute(km, "print(6 * 7)")
    assert output == "42\n"

    await km.shutdown_kernel()
    await first.shutdown_kernel()
    assert leftovers(kernels.kernel_ids) == []


async def test_concurrent_launches_take_each_parked_container_once(kernels, docker_api, leftovers):
    kernels.spec(config={"pool_size": 2})
    await kernels.start(kernels.manager())
    await settle()
    parked = parked_ids()
    assert len(parked) == 2

    managers = [kernels.manager() for _ in range(4)]
    await asyncio.gather(*(kernels.start(km) for km in managers))
    containers = [km.provisioner._handle["container_id"] for km in managers]
    assert len(set(containers)) == 4 and parked <= set(containers)  # both parked ones, each once
    outputs = await asyncio.gather(
        *(execute(km, "import os; print(os.environ['KERNEL_ID'])") for km in managers)
    )
    assert [out.strip() for out, _ in outputs] == [km.kernel_id for km in managers]
    await asyncio.gather(*(km.shutdown_kernel() for km in managers))
    assert not [c for c in containers if docker_api.containers(all=True, filters={"id": c})]


async def test_a_launch_shaped_differently_starts_cold_and_leaves_the_pool_alone(kernels, docker_api):
    kernels.spec(config={"pool_size": 1})
    await kernels.start(kernels.manager())
    await settle()
    (parked,) = parked_ids()

    km = kernels.manager()
    await kernels.start(km, KERNEL_UID="2000", KERNEL_GID="100")  # not the pool's user
    assert km.provisioner._handle["container_id"] != parked
    output, _ = await execute(km, "import os; print(os.getuid())")
    assert output == "2000\n"
    assert parked_ids() == {parked}


async def test_requests_cannot_make_the_server_park_containers(kernels, docker_api):
    # The pool key held the request's PYTHON* values: each PYTHONHASHSEED made a new pool of parked
    # containers. A launch the request shapes starts cold and creates no pool.
    kernels.spec(config={"pool_size": 2})
    managers = [kernels.manager() for _ in range(3)]
    for seed, km in enumerate(managers, start=1):
        await kernels.start(km, PYTHONHASHSEED=str(seed))
    await asyncio.sleep(2 * _pool.REFILL_DELAY)  # a refill, had one been started, would be under way
    assert _pool._pools == {} and parked_ids() == set()
    for seed, km in enumerate(managers, start=1):
        output, _ = await execute(km, "import os; print(os.environ['PYTHONHASHSEED'])")
        assert output == f"{seed}\n"
    await asyncio.gather(*(km.shutdown_kernel() for km in managers))

    await kernels.start(kernels.manager())  # the kernelspec's own shape makes its one pool
    await settle()
    assert len(_pool._pools) == 1 and len(parked_ids()) == 2


async def test_a_parked_container_removed_behind_the_pools_back_means_a_cold_start(kernels, docker_api):
    kernels.spec(config={"pool_size": 1})
    await kernels.start(kernels.manager())
    await settle()
    (parked,) = parked_ids()
    docker_api.remove_container(parked, force=True)

    km = kernels.manager()
    await kernels.start(km)
    assert km.provisioner._handle["container_id"] != parked
    output, _ = await execute(km, "print('cold')")
    assert output == "cold\n"


async def test_a_parked_container_of_an_image_since_rebuilt_is_not_used(kernels, docker_api):
    import io
    import uuid

    reference = f"gp/kernel-py:pool-retag-{uuid.uuid4().hex[:8]}"
    repository, tag = reference.split(":")
    docker_api.tag(IMAGE, repository, tag)
    try:
        kernels.spec(config={"pool_size": 1, "image": reference})
        await kernels.start(kernels.manager())
        await settle()
        (parked,) = parked_ids()
        dockerfile = f"FROM {IMAGE}\nLABEL gp.test=rebuilt\n".encode()
        list(docker_api.build(fileobj=io.BytesIO(dockerfile), tag=reference, rm=True))  # the tag moves on

        km = kernels.manager()
        await kernels.start(km)
        handle = km.provisioner._handle
        assert handle["container_id"] != parked
        assert (
            docker_api.inspect_container(handle["container_id"])["Config"]["Labels"]["gp.test"] == "rebuilt"
        )
        assert docker_api.containers(all=True, filters={"id": parked}) == []  # discarded, not kept
        output, _ = await execute(km, "print('new image')")
        assert output == "new image\n"
    finally:
        await kernels.shutdown_all()
        gp_docker.close_pools()
        with contextlib.suppress(docker.errors.APIError):
            docker_api.remove_image(reference, force=True)


async def test_hostile_request_values_reach_a_pooled_kernel_as_inert_data(kernels, docker_api):
    kernels.spec(config={"pool_size": 1})
    await kernels.start(kernels.manager())
    await settle()
    (parked,) = parked_ids()

    hostile = '$(touch /tmp/gp-pwned); `id` && echo ${HOME} \'"\n{"argv": []}\n'
    km = kernels.manager()
    kernel_id = await kernels.start(km, KERNEL_USERNAME="Mallory.$(id)", KERNEL_EXTRA=hostile)
    assert km.provisioner._handle["container_id"] == parked
    output, _ = await execute(
        km,
        "import os, json; print(json.dumps([os.environ.get('KERNEL_USERNAME'), os.environ.get('KERNEL_EXTRA'), "
        "os.path.exists('/tmp/gp-pwned')]))",
    )
    assert json.loads(output) == ["Mallory.$(id)", hostile, False]
    assert docker_api.inspect_container(parked)["Name"] == f"/mallory-id-{kernel_id}"


SERVER = textwrap.dedent(
    """
    import json, os, sys, time
    from gp_docker import _pool

    resources = json.loads(sys.argv[1])
    pool = _pool.pool_for(resources, 2)
    pool.fill()
    while not pool.settled():
        time.sleep(0.05)
    print(json.dumps([parked.container_id for parked in pool._parked]), flush=True)
    os._exit(0)  # no clean-up at all: as if the server were killed
    """
)


def test_parked_containers_exit_when_their_server_dies_and_are_swept_later(backend, docker_api):
    backend = get_backend("docker")
    options = backend.make_options({"image": IMAGE, "network": "host"})
    resources = backend.hook.render_resources(
        kernel_id="k",
        cmd=LAUNCHER_ARGV,
        env={"KERNEL_USERNAME": "x"},
        request_env={},
        resource_dir=None,
        options=options,
        namespace=None,
        log=None,
    )
    done = subprocess.run(
        [sys.executable, "-c", SERVER, json.dumps(resources)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    orphans = json.loads(done.stdout)
    assert len(orphans) == 2
    try:
        deadline = time.monotonic() + 30
        while any(docker_api.inspect_container(c)["State"]["Running"] for c in orphans):
            assert time.monotonic() < deadline, "parked containers outlived their server"
            time.sleep(0.2)
        _pool.remove_leftovers()  # what the next pool's start does
        assert not [c for c in docker_api.containers(all=True, filters=PARKED) if c["Id"] in orphans]
    finally:
        for container in orphans:
            with contextlib.suppress(docker.errors.NotFound):
                docker_api.remove_container(container, force=True)
