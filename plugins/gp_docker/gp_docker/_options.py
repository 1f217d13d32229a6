"""Options of the ``docker`` and ``docker-swarm`` backends, and the parsers their values share.

Server config sets them as ``c.DockerOptions.<name>`` (both backends) or ``c.DockerSwarmOptions.<name>``
(swarm only); ``kernel.json`` sets them per kernel next to ``"backend"``.
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, validate

from gp_core import BackendOptions, env_default, parse_memory, pattern_within
from gp_core.choices import id_list_option, id_option

#: Value of the ``app`` label on everything gp-docker creates; status listings filter on it. Gateway
#: Provisioners' value, so the filters of existing monitoring and clean-up scripts keep working.
APP_LABEL = "gateway-provisioners"
#: A label only gp sets (``gp.owner=gp``): listings and clean-up filter on it too, so containers the anchor's
#: own provisioners create on the same daemon (same three labels) are never taken for gp's.
OWNER_LABEL = ("gp.owner", "gp")
#: The most containers one pool may keep parked.
MAX_POOL_SIZE = 32
#: The highest uid/gid a container may run as: uint32, minus (uid_t)-1, which means "unchanged".


def _memory_bytes(value: str) -> int:
    return parse_memory(value, "memory")


class DockerOptions(BackendOptions):
    """Options of the ``docker`` backend (and, inherited, of ``docker-swarm``).

    The prohibited ids, allowed_images and the CPU/memory limits are policies (see
    :func:`gp_core.options.apply_policy`): kernel.json may tighten the server's values, never loosen them.
    """

    request_variables = {
        "KERNEL_USERNAME": "First part of the container's (service's) name, {KERNEL_USERNAME}-{kernel_id}.",
        "KERNEL_IMAGE": "Another kernel image, only one allowed_images matches; the kernel's env gets the "
        "image it runs.",
        "KERNEL_UID": "User id the kernel runs as (a number; prohibited_uids refused; default default_uid).",
        "KERNEL_GID": "Group id the kernel runs as (a number; prohibited_gids refused; default default_gid).",
        "KERNEL_WORKING_DIR": "The kernel's working directory, only with mirror_working_dirs (absolute path).",
        "KERNEL_CPUS_LIMIT": "CPU limit of this kernel, at most max_cpus.",
        "KERNEL_MEMORY_LIMIT": "Memory limit of this kernel (e.g. 2g), at most max_memory.",
    }

    image = Unicode(
        config=True,
        help="Kernel image (env GP_IMAGE_NAME). A request's KERNEL_IMAGE may pick another only from "
        "allowed_images.",
    )
    allowed_images = List(
        Unicode(),
        config=True,
        help="Images a request may choose with KERNEL_IMAGE, as fnmatch patterns, e.g. 'myorg/kernel-*' "
        "(env GP_ALLOWED_IMAGES, comma list). Empty: requests cannot change the image. A policy: "
        "kernel.json's list must be within the server's.",
    ).tag(policy="allow", covers=pattern_within)
    network = Unicode(
        config=True,
        help="Docker network the kernel joins; 'host' shares the docker host's network "
        "(env GP_DOCKER_NETWORK, default bridge).",
    )
    default_uid = Unicode(
        "1000",
        config=True,
        help="User id the kernel runs as when the request sets no KERNEL_UID; '' = the image's user.",
    )
    default_gid = Unicode(
        "100",
        config=True,
        help="Group id the kernel runs as when the request sets no KERNEL_GID; '' = the image's group.",
    )
    prohibited_uids = List(
        Unicode(),
        config=True,
        help="User ids a request may not run the kernel as (env GP_PROHIBITED_UIDS, default 0). A policy: "
        "kernel.json's list adds to the server's.",
    ).tag(policy="deny")
    prohibited_gids = List(
        Unicode(),
        config=True,
        help="Group ids a request may not run the kernel as (env GP_PROHIBITED_GIDS, default 0). A "
        "policy: kernel.json's list adds to the server's.",
    ).tag(policy="deny")
    mirror_working_dirs = Bool(
        config=True,
        help="Honour a request's KERNEL_WORKING_DIR as the kernel's working directory "
        "(env GP_MIRROR_WORKING_DIRS, default false).",
    )
    working_dir = Unicode(
        config=True,
        help="The kernel's working directory unless KERNEL_WORKING_DIR is mirrored; '' = the image's.",
    )
    volumes = List(
        Unicode(),
        config=True,
        help="Mounts, as 'SOURCE:TARGET[:ro|rw]': a host path (absolute SOURCE) or a named volume.",
    )
    cpus = Float(
        0.0,
        config=True,
        help="CPU limit of the kernel (e.g. 1.5); 0 = none. A cap: kernel.json may only lower it.",
    ).tag(policy="cap", unlimited=0)
    max_cpus = Float(
        0.0,
        config=True,
        help="Highest CPU limit a request may ask for with KERNEL_CPUS_LIMIT; 0 = the cpus value. A cap: "
        "kernel.json may only lower it.",
    ).tag(policy="cap", unlimited=0, fallback="cpus")
    memory = Unicode(
        config=True,
        help="Memory limit of the kernel (e.g. 2g); '' = none. A cap: kernel.json may only lower it.",
    ).tag(policy="cap", unlimited=0, parse=_memory_bytes)
    max_memory = Unicode(
        config=True,
        help="Highest memory limit a request may ask for with KERNEL_MEMORY_LIMIT; '' = the memory value. A "
        "cap: kernel.json may only lower it.",
    ).tag(policy="cap", unlimited=0, parse=_memory_bytes, fallback="memory")
    remove_container = Bool(
        config=True,
        help="Remove the kernel's container when the kernel is shut down; false keeps it stopped, for "
        "post-mortems (env GP_REMOVE_CONTAINER, default true).",
    )
    init = Bool(
        True,
        config=True,
        help="Run docker's init as the container's PID 1, so SIGTERM reaches the kernel (a PID 1 kernel "
        "would ignore it) and the kernel's exited children are reaped.",
    )
    stop_timeout = Float(
        5.0, config=True, help="Seconds a graceful terminate waits after SIGTERM before SIGKILL."
    )
    pool_size = Integer(
        config=True,
        help="Containers kept parked (started, ipykernel imported) for launches of this kernel, so a "
        "kernel starts in about a third of the time; 0 = none (env GP_DOCKER_POOL_SIZE, default 0). "
        "docker backend only; see the gp-docker README.",
    )
    status_interval = Float(
        config=True,
        help="Seconds between refreshes of the one labelled listing every kernel's status comes from "
        "(env GP_POLL_INTERVAL, default 0.5).",
    )

    tunnel_ssh_host = Unicode(
        config=True,
        help="With GP_ENABLE_TUNNELING: the SSH server (the docker host) the kernel's ports are tunnelled "
        "through (env GP_DOCKER_TUNNEL_HOST; needs gp-ssh installed).",
    )
    tunnel_ssh_port = Integer(22, config=True, help="Its SSH port (env GP_DOCKER_TUNNEL_PORT).")
    tunnel_ssh_user = Unicode(config=True, help="User to log in as there (env GP_DOCKER_TUNNEL_USER).")
    tunnel_ssh_key_file = Unicode(
        config=True, help="Private key for it (env GP_DOCKER_TUNNEL_KEY_FILE; default: agent and ~/.ssh)."
    )
    tunnel_known_hosts_file = Unicode(
        config=True, help="known_hosts holding its host key (env GP_DOCKER_TUNNEL_KNOWN_HOSTS)."
    )

    _image_default = default("image")(env_default("GP_IMAGE_NAME", ""))
    _tunnel_host_default = default("tunnel_ssh_host")(env_default("GP_DOCKER_TUNNEL_HOST", ""))
    _tunnel_port_default = default("tunnel_ssh_port")(env_default("GP_DOCKER_TUNNEL_PORT", 22))
    _tunnel_user_default = default("tunnel_ssh_user")(env_default("GP_DOCKER_TUNNEL_USER", ""))
    _tunnel_key_default = default("tunnel_ssh_key_file")(env_default("GP_DOCKER_TUNNEL_KEY_FILE", ""))
    _tunnel_known_default = default("tunnel_known_hosts_file")(
        env_default("GP_DOCKER_TUNNEL_KNOWN_HOSTS", "")
    )
    _allowed_images_default = default("allowed_images")(env_default("GP_ALLOWED_IMAGES", []))
    _network_default = default("network")(env_default("GP_DOCKER_NETWORK", "bridge"))
    _prohibited_uids_default = default("prohibited_uids")(env_default("GP_PROHIBITED_UIDS", ["0"]))
    _prohibited_gids_default = default("prohibited_gids")(env_default("GP_PROHIBITED_GIDS", ["0"]))
    _mirror_default = default("mirror_working_dirs")(env_default("GP_MIRROR_WORKING_DIRS", False))
    _remove_default = default("remove_container")(env_default("GP_REMOVE_CONTAINER", True))
    _status_interval_default = default("status_interval")(env_default("GP_POLL_INTERVAL", 0.5))
    _pool_size_default = default("pool_size")(env_default("GP_DOCKER_POOL_SIZE", 0))

    @validate("pool_size")
    def _check_pool_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= MAX_POOL_SIZE:
            raise TraitError(f"pool_size must be within 0..{MAX_POOL_SIZE}, not {value!r}")
        return value

    @validate("default_uid", "default_gid")
    def _check_default_id(self, proposal: Any) -> str:
        return id_option(proposal)

    @validate("prohibited_uids", "prohibited_gids")
    def _check_prohibited(self, proposal: Any) -> list[str]:
        return id_list_option(proposal)

    @validate("memory", "max_memory")
    def _check_memory(self, proposal: Any) -> str:
        try:
            parse_memory(proposal["value"], proposal["trait"].name)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return str(proposal["value"]).strip()

    @validate("cpus", "max_cpus", "stop_timeout")
    def _check_not_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value < 1e6:
            raise TraitError(f"{proposal['trait'].name} must be a number >= 0, not {value!r}")
        return value

    @validate("status_interval")
    def _check_interval(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 < value <= 60:
            raise TraitError(f"status_interval must be within (0, 60] seconds, not {value!r}")
        return value

    @validate("network")
    def _check_network(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not value:
            raise TraitError("network must name a docker network, e.g. bridge or host")
        return value

    @validate("volumes")
    def _check_volumes(self, proposal: Any) -> list[str]:
        for spec in proposal["value"]:
            try:
                parse_volume(spec)
            except ValueError as exc:
                raise TraitError(str(exc)) from None
        return list(proposal["value"])

    @validate("working_dir")
    def _check_working_dir(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and not value.startswith("/"):
            raise TraitError(f"working_dir {value!r} must be an absolute path")
        return value


class DockerSwarmOptions(DockerOptions):
    """Options of the ``docker-swarm`` backend: the docker ones plus placement."""

    @default("pool_size")
    def _pool_size_default(self) -> int:
        return 0  # GP_DOCKER_POOL_SIZE is the docker backend's

    @validate("pool_size")
    def _check_pool_size(self, proposal: Any) -> int:
        if int(proposal["value"]) != 0:
            raise TraitError(
                "pool_size is not available on docker-swarm (a service's task has no stdin to "
                "assign it through); use 0, or the docker backend"
            )
        return 0

    placement_constraints = List(
        Unicode(),
        config=True,
        help="Swarm placement constraints of the kernel's service, e.g. 'node.role==worker'.",
    )


def parse_volume(spec: str) -> dict[str, Any]:
    """Parse ``SOURCE:TARGET[:ro|rw]`` into ``{"source", "target", "read_only", "type"}``."""
    parts = str(spec).split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or mode not in ("ro", "rw"):
        raise ValueError(f"volume {spec!r} is not 'SOURCE:TARGET[:ro|rw]'")
    source, target = parts
    if not source or not target.startswith("/"):
        raise ValueError(f"volume {spec!r} needs a source and an absolute target path")
    if any(ord(char) < 32 for char in spec):
        raise ValueError(f"volume {spec!r} contains a control character")
    return {
        "source": source,
        "target": target,
        "read_only": mode == "ro",
        "type": "bind" if source.startswith("/") else "volume",
    }
