"""Kernelspecs written by gateway_provisioners 0.5.0's own ``jupyter docker-spec install`` (and
``--swarm``), converted by ``gp migrate``, start real kernels on gp's docker backends."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from gp_core._anchor_venv import anchor_jupyter
from gp_core.testing import execute, interrupt_sleep

from .conftest import IMAGE

pytestmark = [pytest.mark.docker]


async def test_a_converted_anchor_spec_runs_a_kernel(kernels, backend, tmp_path, monkeypatch, leftovers):
    anchor_prefix = tmp_path / "anchor"
    args = [
        "docker-spec",
        "install",
        f"--image-name={IMAGE}",
        "--kernel-name=converted",
        f"--prefix={anchor_prefix}",
    ]
    if backend == "docker-swarm":
        args.append("--swarm")
    done = await asyncio.to_thread(anchor_jupyter, *args)
    assert done.returncode == 0, done.stderr
    migrated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gp_core.cli", "migrate", str(anchor_prefix / "share/jupyter/kernels/converted"),
         "--output", str(kernels.directory), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    (result,) = json.loads(migrated.stdout)["kernelspecs"]
    assert result["backend"] == backend and result["validated"]
    # The network comes from the server's environment, the anchor's way (its specs never named one).
    monkeypatch.setenv("GP_DOCKER_NETWORK", "host")
    km = kernels.manager("converted")
    kernel_id = await kernels.start(km)
    try:
        output, reply = await execute(km, "print(6 * 7)")
        assert reply["status"] == "ok" and output == "42\n"
        interrupted = await interrupt_sleep(km)
        assert interrupted["ename"] == "KeyboardInterrupt"
    finally:
        await km.shutdown_kernel()
    assert not leftovers({kernel_id})
    shutil.rmtree(anchor_prefix)


@pytest.fixture(scope="module")
def anchor_image(docker_api_or_error, tmp_path_factory):
    """A kernel image as Gateway Provisioners built them: its launchers and entrypoint, not gp's."""
    if isinstance(docker_api_or_error, Exception):
        pytest.fail(f"dockerd is not reachable ({docker_api_or_error})")
    from gp_core._anchor_venv import anchor_venv

    package = next((anchor_venv() / "lib").glob("python3*/site-packages")) / "gateway_provisioners"
    context = tmp_path_factory.mktemp("anchor-image")
    launchers = package / "kernel-launchers"
    shutil.copytree(launchers / "python", context / "kernel-launchers" / "python",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(launchers / "shared/scripts/server_listener.py", context / "kernel-launchers/python/scripts")
    shutil.copy(launchers / "bootstrap/bootstrap-kernel.sh", context / "bootstrap-kernel.sh")
    (context / "Dockerfile").write_text(
        f"FROM {IMAGE}\n"
        "RUN rm -rf /usr/local/bin/kernel-launchers /usr/local/bin/bootstrap-kernel.sh\n"
        "COPY kernel-launchers/ /usr/local/bin/kernel-launchers/\n"
        "COPY bootstrap-kernel.sh /usr/local/bin/bootstrap-kernel.sh\n"
        "RUN chmod -R a+rX /usr/local/bin && chmod a+x /usr/local/bin/bootstrap-kernel.sh\n"
        "ENV KERNEL_LAUNCHERS_DIR=/usr/local/bin/kernel-launchers\n"
    )
    tag = "gp/kernel-py-anchor:" + IMAGE.rpartition(":")[2]
    build = subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)],
        capture_output=True, text=True, env={**__import__("os").environ, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    return tag


async def test_a_converted_spec_on_an_unrebuilt_image_says_to_rebuild_it(kernels, backend, anchor_image):
    """The image still has Gateway Provisioners' launcher: the launch fails at once, saying what to do."""
    from gp_core import LaunchError, LaunchTimeoutError

    kernels.spec("old-image", config={"image": anchor_image, "launch_timeout": 240})
    km = kernels.manager("old-image")
    with pytest.raises(LaunchError) as caught:
        await kernels.start(km)
    assert not isinstance(caught.value, LaunchTimeoutError)
    assert "The image has no gp launcher" in str(caught.value)
    assert "jupyter image-bootstrap install" in str(caught.value)


async def test_the_anchors_entrypoint_is_named_when_its_launch_times_out(kernels, backend, anchor_image):
    """The image's own (anchor) entrypoint runs the anchor's launcher: on the host network gp cannot tell
    which launch its connection belongs to, so the launch times out, and the timeout says what was seen."""
    from gp_core import LaunchTimeoutError

    entrypoint = ["/bin/bash", "-c", "/usr/local/bin/bootstrap-kernel.sh; exit $?"]  # the anchor image's CMD
    kernels.spec("old-entrypoint", argv=entrypoint, config={"image": anchor_image, "launch_timeout": 10})
    km = kernels.manager("old-entrypoint")
    with pytest.raises(LaunchTimeoutError) as caught:
        await kernels.start(km)
    assert "connected from 127.0.0.1" in str(caught.value)
    assert "carries Gateway Provisioners' launcher" in str(caught.value)


@pytest.mark.parametrize("backend", ["docker"], indirect=True)  # containers (a swarm kernel is a service)
async def test_the_anchors_containers_are_never_taken_for_gps(kernels, docker_api):
    """Gateway Provisioners' own provisioner may run on the same daemon during a migration: its containers
    carry the same kernel_id/component/app labels, but not gp.owner, so gp neither lists nor replaces them."""
    import uuid

    from gp_docker import _client

    from gp_core import BackendError
    from gp_core.testing import kernel_env

    assert "gp.owner=gp" in _client.KERNEL_FILTER["label"]
    kernel_id = str(uuid.uuid4())
    anchors = docker_api.create_container(
        IMAGE, command=["sleep", "60"], name=f"gp-tester-{kernel_id}",
        labels={"kernel_id": kernel_id, "component": "kernel", "app": "gateway-provisioners"},
    )  # fmt: skip
    try:
        kernels.spec("k")
        km = kernels.manager("k")
        kernels.kernel_ids.add(kernel_id)
        with pytest.raises(BackendError, match="is not this kernel's"):
            await km.start_kernel(kernel_id=kernel_id, env=kernel_env())
        assert docker_api.inspect_container(anchors["Id"])["Id"] == anchors["Id"]  # left alone
        listed = docker_api.containers(all=True, filters=_client.KERNEL_FILTER)
        assert anchors["Id"] not in {row["Id"] for row in listed}
    finally:
        docker_api.remove_container(anchors["Id"], force=True)
