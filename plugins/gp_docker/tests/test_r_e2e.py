"""R kernels in containers: the R kernel image (``bash scripts/build-kernel-image.sh TAG r``) started by
the docker and docker-swarm backends through gp's R launcher."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from gp_core.testing import (
    check_r_kernel_lifecycle,
    execute,
    kernel_manager,
    r_launcher_argv,
    require_language,
)

from .conftest import Kernels
from .test_cli import docker_spec

pytestmark = [pytest.mark.docker, pytest.mark.r]

R_IMAGE = os.environ.get("GP_TEST_R_KERNEL_IMAGE", "gp/kernel-r:test")
R_LAUNCHER = "/usr/local/bin/kernel-launchers/r/launch_irkernel.py"


@pytest.fixture
def r_image(docker_api: Any) -> str:
    import docker.errors

    try:
        docker_api.inspect_image(R_IMAGE)
    except docker.errors.ImageNotFound:
        require_language(
            "r", f"R kernel image {R_IMAGE} is missing (bash scripts/build-kernel-image.sh {R_IMAGE} r)"
        )
    return R_IMAGE


async def test_r_kernel_in_a_container(kernels: Kernels, r_image: str, leftovers: Any) -> None:
    kernels.spec("r", argv=r_launcher_argv("python3", R_LAUNCHER), config={"image": r_image})
    km = kernels.manager("r")
    kernel_id = await kernels.start(km)
    output, _ = await execute(
        km, 'cat(file.exists("/.dockerenv"), Sys.getenv("KERNEL_ID"), system("id -u", intern = TRUE))'
    )
    assert output.split() == ["TRUE", kernel_id, "1000"], output
    await check_r_kernel_lifecycle(km)
    assert not leftovers([kernel_id])


async def test_docker_spec_install_language_r_runs_in_the_r_image(
    kernels: Kernels, r_image: str, tmp_path: Any, leftovers: Any
) -> None:
    """``jupyter docker-spec install --language R`` writes a spec that runs in the R image as is."""
    swarm = ["--swarm"] if kernels.backend == "docker-swarm" else []
    result = docker_spec(
        "install", f"--prefix={tmp_path}", "--language=R", f"--image-name={r_image}", "--network=host", *swarm
    )
    assert result.returncode == 0, result.stderr
    name = "docker_swarm_r" if swarm else "docker_r"
    spec = json.loads((tmp_path / f"share/jupyter/kernels/{name}/kernel.json").read_text())
    assert spec["argv"][:2] == ["python3", R_LAUNCHER] and spec["language"] == "R"
    km = kernel_manager(tmp_path / "share/jupyter/kernels", name)
    kernels.managers.append(km)
    kernel_id = await kernels.start(km)
    output, _ = await execute(km, "cat(sum(1:10))")
    assert output == "55"
    await km.shutdown_kernel()
    assert not leftovers([kernel_id])
