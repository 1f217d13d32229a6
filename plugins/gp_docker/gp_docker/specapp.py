"""``jupyter docker-spec install``: kernelspecs whose kernels run in Docker containers or, with
``--swarm``, Docker Swarm services."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Integer, Unicode, default

from gp_core import env_default
from gp_core.specapp import InstallSpecApp, SpecInstallerApp


class DockerInstallSpecApp(InstallSpecApp):
    """Install a kernelspec that runs its kernel in a Docker container (--swarm: a swarm service)."""

    name = "jupyter-docker-spec-install"
    description = "Install a kernelspec whose kernel runs in a Docker container or a Docker Swarm service."

    image_name = Unicode(
        config=True,
        help="Kernel image (default: env GP_IMAGE_NAME; unset: the server's GP_IMAGE_NAME at launch).",
    )
    swarm = Bool(False, config=True, help="Run kernels as Docker Swarm services (backend docker-swarm).")
    network = Unicode(
        "",
        config=True,
        help="Docker network for the kernel, e.g. host (unset: the server's GP_DOCKER_NETWORK).",
    )
    pool_size = Integer(
        0,
        config=True,
        help="Containers to keep parked for this kernel, so it starts faster (docker only; checked like a "
        "launch's options; unset: the server's GP_DOCKER_POOL_SIZE).",
    )

    aliases = {
        **InstallSpecApp.aliases,
        "image-name": "DockerInstallSpecApp.image_name",
        "network": "DockerInstallSpecApp.network",
        "pool-size": "DockerInstallSpecApp.pool_size",
    }
    flags = {
        **InstallSpecApp.flags,
        "swarm": (
            {"DockerInstallSpecApp": {"swarm": True}},
            "Run kernels as Docker Swarm services (backend docker-swarm).",
        ),
    }

    _image_name_default = default("image_name")(env_default("GP_IMAGE_NAME", ""))

    @property
    def backend_name(self) -> str:  # type: ignore[override]
        return "docker-swarm" if self.swarm else "docker"

    @default("python")
    def _python_default(self) -> str:
        return "python3"  # the image's python, not this one


class DockerSpecApp(SpecInstallerApp):
    """``jupyter docker-spec``."""

    name = "jupyter-docker-spec"
    description = "Install kernelspecs for gp's docker and docker-swarm backends."
    subcommands: dict[str, tuple[Any, str]] = {
        "install": (DockerInstallSpecApp, DockerInstallSpecApp.description)
    }
