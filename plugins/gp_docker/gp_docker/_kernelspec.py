"""The part of ``jupyter docker-spec install`` that runs as the backends' ``install_spec`` hook."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

#: Where ``jupyter image-bootstrap install`` (default ``--dest``) puts the launcher inside an image.
IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
IMAGE_LAUNCHERS_DIR = "/usr/local/bin/kernel-launchers"


def docker_kernel_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    """Point argv at the launcher inside the image and record the image, network and pool options."""
    shutil.rmtree(spec_dir / "scripts", ignore_errors=True)  # core staged a local launcher: not used here
    python = getattr(app, "python", "") or "python3"
    language = getattr(app, "language", "python")
    launcher = (
        IMAGE_LAUNCHER if language == "python" else f"{IMAGE_LAUNCHERS_DIR}/{language}/{app.launcher_name()}"
    )
    kernel_spec["argv"] = [python, launcher, *app.launcher_args()]
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
    for option, attribute in (("image", "image_name"), ("network", "network")):
        value = getattr(app, attribute, "")
        if value:
            config[option] = value
    if getattr(app, "pool_size", 0):
        config["pool_size"] = app.pool_size
    if "image" not in config:
        log.warning("No --image-name given: these kernels will run the server's GP_IMAGE_NAME image")
    return kernel_spec


def tunnel_route(handle: dict[str, Any], options: Any) -> Any:
    """GP_ENABLE_TUNNELING: the kernel's ports through SSH to the docker host (gp-ssh's jump_host_route,
    imported only here, so docker kernels without tunnelling never load an SSH library)."""
    from gp_core import BackendError

    if not options.tunnel_ssh_host:
        raise BackendError(
            "Tunnelling a docker kernel needs the docker host's SSH server: set tunnel_ssh_host "
            "(env GP_DOCKER_TUNNEL_HOST)"
        )
    try:
        from gp_ssh import jump_host_route  # optional: gp-docker[tunnel]
    except ImportError as exc:
        raise BackendError("Tunnelling docker kernels needs gp-ssh (pip install gp-ssh)") from exc
    # Host networking: the kernel's address is the docker host's own; otherwise the container's.
    kernel_ip = None if options.network == "host" else handle.get("ip")
    return jump_host_route(
        options.tunnel_ssh_host,
        port=options.tunnel_ssh_port,
        user=options.tunnel_ssh_user,
        key_file=options.tunnel_ssh_key_file,
        known_hosts_file=options.tunnel_known_hosts_file,
        kernel_ip=kernel_ip,
    )
