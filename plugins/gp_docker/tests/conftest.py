"""Fixtures for gp-docker's tests: the docker daemon, the swarm, the kernel image, and a guarantee that
every kernel a test starts leaves no container or service behind, even when the test fails.

Kernels use host networking and report to 127.0.0.1. Without dockerd / a swarm / the kernel image the
tests needing them are skipped, unless ``GP_REQUIRED_BACKENDS`` names the backend: then they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gp_docker import _client
from gp_docker._kernelspec import IMAGE_LAUNCHER

from gp_core import StatusSource
from gp_core.testing import kernel_env, kernel_manager, launcher_argv, require_backend, write_kernelspec

IMAGE = os.environ.get("GP_TEST_KERNEL_IMAGE", "gp/kernel-py:test")
LAUNCHER_ARGV = launcher_argv("python3", IMAGE_LAUNCHER)


@pytest.fixture(autouse=True)
def _loopback_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test traffic stays on 127.0.0.1; port 0 so concurrent test runs never fight over 8877.
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")


class QuietEvents(_client.KernelEvents):
    """The event record without a stream, for unit tests: they feed it events by hand."""


def quiet_listing(fetch: Any) -> StatusSource[Any]:
    """A listing without a watch (a fresh one per test: no cache shared between tests)."""
    return StatusSource("test listing", fetch, max_age=0.45)


def _docker_api() -> Any:
    import docker

    return docker.from_env().api


@pytest.fixture(scope="session")
def docker_api_or_error() -> Any:
    try:
        api = _docker_api()
        api.ping()
    except Exception as exc:
        return exc
    return api


@pytest.fixture
def docker_api(docker_api_or_error: Any) -> Any:
    """A docker API client of the test's own (not the backend's), for inspecting and cleaning up."""
    if isinstance(docker_api_or_error, Exception):
        require_backend("docker", f"dockerd is not reachable ({docker_api_or_error})")
    return docker_api_or_error


def _require_image(api: Any, backend: str) -> None:
    import docker.errors

    try:
        api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        require_backend(
            backend, f"kernel image {IMAGE} is missing (bash scripts/build-kernel-image.sh builds it)"
        )


@pytest.fixture(params=["docker", pytest.param("docker-swarm", marks=pytest.mark.swarm)])
def backend(request: pytest.FixtureRequest, docker_api_or_error: Any) -> str:
    """Each backend in turn, skipped (or failed, when required) if its daemon, swarm or image is missing."""
    name: str = request.param
    if isinstance(docker_api_or_error, Exception):
        require_backend(name, f"dockerd is not reachable ({docker_api_or_error})")
    docker_api = docker_api_or_error
    if name == "docker-swarm":
        swarm = docker_api.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            require_backend(name, "this docker daemon is not a swarm manager (docker swarm init)")
    _require_image(docker_api, name)
    return name


def _kernel_containers(api: Any, kernel_id: str) -> list[dict[str, Any]]:
    """Containers labelled with ``kernel_id``, and those named after it (a pooled kernel's container was
    parked before its kernel existed, so it has no ``kernel_id`` label)."""
    rows = {c["Id"]: c for c in api.containers(all=True, filters={"label": [f"kernel_id={kernel_id}"]})}
    named = api.containers(all=True, filters={"name": kernel_id, "label": ["component=kernel"]})
    rows.update({c["Id"]: c for c in named})
    return list(rows.values())


def find_leftovers(api: Any, kernel_ids: set[str]) -> list[str]:
    """Containers and services still carrying (or named after) one of ``kernel_ids``."""
    found = []
    for kernel_id in kernel_ids:
        label = {"label": [f"kernel_id={kernel_id}", "component=kernel"]}
        found += [f"container {c['Names'][0]} ({c['State']})" for c in _kernel_containers(api, kernel_id)]
        found += [f"service {s['Spec']['Name']}" for s in api.services(filters=label)]
    return found


def remove_leftovers(api: Any, kernel_ids: set[str]) -> None:
    import docker.errors

    for kernel_id in kernel_ids:
        label = {"label": [f"kernel_id={kernel_id}", "component=kernel"]}
        for service in api.services(filters=label):
            try:
                api.remove_service(service["ID"])
            except docker.errors.NotFound:
                pass
        for container in _kernel_containers(api, kernel_id):
            try:
                api.remove_container(container["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def leftovers(docker_api: Any) -> Any:
    """``leftovers(kernel_ids)``: descriptions of the containers and services those kernels still have."""
    return lambda kernel_ids: find_leftovers(docker_api, set(kernel_ids))


class Kernels:
    """Starts kernels for one test and remembers their ids, so the test's teardown can prove (and
    enforce) that nothing of them is left."""

    def __init__(self, directory: Path, backend: str) -> None:
        self.directory = directory
        self.backend = backend
        self.kernel_ids: set[str] = set()
        self.managers: list[Any] = []

    def spec(
        self,
        name: str = "k",
        *,
        argv: list[str] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        options = {"image": IMAGE, "network": "host", **(config or {})}
        write_kernelspec(
            self.directory, name, backend=self.backend, argv=argv or LAUNCHER_ARGV, config=options, env=env
        )
        return name

    def manager(self, name: str = "k") -> Any:
        km = kernel_manager(self.directory, name)
        self.managers.append(km)
        return km

    async def start(self, km: Any, **variables: str) -> str:
        """Start ``km`` with ``variables`` as the request's ``KERNEL_*`` values; returns the kernel id."""
        kernel_id = str(uuid.uuid4())
        self.kernel_ids.add(kernel_id)
        await km.start_kernel(kernel_id=kernel_id, env=kernel_env(**variables))
        return kernel_id

    async def shutdown_all(self) -> None:
        for km in self.managers:
            if km.has_kernel:
                try:
                    await km.shutdown_kernel(now=True)
                except Exception:  # teardown goes on: leftovers are checked below
                    pass


@pytest.fixture
async def kernels(tmp_path: Path, backend: str, docker_api_or_error: Any) -> Any:
    """A :class:`Kernels` for ``backend``; at teardown, fails the test if any of its kernels left a
    container or service behind (and removes it, so one failure does not leak into the next test)."""
    started = Kernels(tmp_path / "kernels", backend)
    yield started
    await started.shutdown_all()
    left = find_leftovers(docker_api_or_error, started.kernel_ids)
    remove_leftovers(docker_api_or_error, started.kernel_ids)
    assert not left, f"resources left behind: {left}"


@pytest.fixture
def no_docker_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear every GP_* variable the options read, so a test sees the documented defaults."""
    for name in list(os.environ):
        if name.startswith("GP_") and name not in ("GP_RESPONSE_IP", "GP_RESPONSE_PORT"):
            monkeypatch.delenv(name)
    yield
