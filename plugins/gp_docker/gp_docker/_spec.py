"""Render a kernel's container or service spec from the request: pure, creates nothing.

Everything a request controls (``KERNEL_*`` values) is validated here and ends up as data in the spec:
argv and env travel to the docker API as JSON arrays, never through a shell or a template.
"""

from __future__ import annotations

import logging
import re

from gp_core import BackendError, Resources, is_env_name, parse_cpus, parse_memory, request_limit
from gp_core.choices import choose_image, choose_working_dir, refuse_prohibited_ids, request_id

from ._options import (
    APP_LABEL,
    OWNER_LABEL,
    DockerOptions,
    DockerSwarmOptions,
    parse_volume,
)

#: Longest name: a DNS label, which a swarm service name (and a container hostname) must be.
MAX_NAME_LENGTH = 63
_UNSAFE_NAME_CHARS = re.compile(r"[^a-z0-9]+")


def resource_name(username: str, kernel_id: str) -> str:
    """``{username}-{kernel_id}``, made safe for a container, service and host name.

    Lowercase letters, digits and single dashes, at most 63 characters; the user part is shortened
    first so the kernel id, which makes the name unique, stays whole.
    """
    kernel_part = _UNSAFE_NAME_CHARS.sub("-", kernel_id.lower()).strip("-")[:MAX_NAME_LENGTH] or "kernel"
    room = MAX_NAME_LENGTH - len(kernel_part) - 1
    user_part = _UNSAFE_NAME_CHARS.sub("-", username.lower()).strip("-")[: max(room, 0)].strip("-")
    return f"{user_part}-{kernel_part}" if user_part else kernel_part


def kernel_labels(kernel_id: str) -> dict[str, str]:
    """The labels on everything gp-docker creates for a kernel: the anchor's three (existing filters keep
    working) and gp's own; status listings filter on the last three."""
    return {"kernel_id": kernel_id, "component": "kernel", "app": APP_LABEL, OWNER_LABEL[0]: OWNER_LABEL[1]}


def check_env(env: dict[str, str]) -> None:
    """Docker takes the environment as ``NAME=value`` strings: a name with ``=`` or a line break in it, or a
    NUL anywhere, would say something else than the request did."""
    for name, value in env.items():
        if not is_env_name(name):
            raise BackendError(
                f"Environment variable name {name!r} is invalid; names are letters, digits and '_', "
                "not starting with a digit"
            )
        if "\0" in value:
            raise BackendError(f"Environment variable {name} contains a NUL character")


def _requested(request_env: dict[str, str], name: str) -> str | None:
    """The start request's value for ``name`` (core's ``request_env``: what the request set), or None."""
    value = request_env.get(name)
    return None if value is None or value == "" else value


def select_image(env: dict[str, str], options: DockerOptions) -> str:
    """The configured image, or the request's ``KERNEL_IMAGE`` when ``allowed_images`` admits it."""
    return choose_image(_requested(env, "KERNEL_IMAGE"), options.image, options.allowed_images, "docker-spec")


def select_user(env: dict[str, str], options: DockerOptions) -> tuple[int | None, int | None]:
    """The (uid, gid) the kernel runs as: the request's ``KERNEL_UID``/``KERNEL_GID`` or the defaults.

    Ids are compared as numbers, so ``"00"``, ``" 0"`` and ``"-0"`` cannot slip past a prohibited 0.
    """
    uid = request_id(env, "KERNEL_UID")
    gid = request_id(env, "KERNEL_GID")
    if uid is None and options.default_uid:
        uid = int(options.default_uid)
    if gid is None and options.default_gid:
        gid = int(options.default_gid)
    refuse_prohibited_ids(env, uid, gid, options.prohibited_uids, options.prohibited_gids)
    if gid is not None and uid is None:
        raise BackendError("KERNEL_GID needs a user id too: set KERNEL_UID (or default_uid)")
    if uid is not None and gid is None and options.prohibited_gids:
        # Docker would give a uid unknown to the image group 0, past the gid policy.
        raise BackendError("KERNEL_UID needs a group id too: set KERNEL_GID (or default_gid)")
    return uid, gid


def select_working_dir(env: dict[str, str], options: DockerOptions, log: logging.Logger) -> str | None:
    """``KERNEL_WORKING_DIR`` when mirroring is on (and it is an absolute path), else ``working_dir``."""
    return choose_working_dir(
        env.get("KERNEL_WORKING_DIR"), options.mirror_working_dirs, options.working_dir, log
    )


def select_limits(env: dict[str, str], options: DockerOptions) -> tuple[int, int]:
    """(nano CPUs, memory bytes), 0 = unlimited: the configured limits, or a request's within them
    (``max_cpus`` / ``max_memory``, else the configured value, is the cap; see gp_core.request_limit)."""
    try:
        nano_cpus = request_limit(
            "KERNEL_CPUS_LIMIT",
            _requested(env, "KERNEL_CPUS_LIMIT"),
            parse_cpus,
            configured=parse_cpus(str(options.cpus), "cpus"),
            maximum=parse_cpus(str(options.max_cpus), "max_cpus"),
        )
        memory = request_limit(
            "KERNEL_MEMORY_LIMIT",
            _requested(env, "KERNEL_MEMORY_LIMIT"),
            parse_memory,
            configured=parse_memory(options.memory, "memory"),
            maximum=parse_memory(options.max_memory, "max_memory"),
        )
    except ValueError as exc:  # a configured value: the options' validators have seen it already
        raise BackendError(str(exc)) from None
    if memory and memory < 6 * 2**20:
        raise BackendError(f"Memory limit {memory} bytes is below docker's minimum of 6 MiB")
    return nano_cpus, memory


def render(
    kind: str,
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    options: DockerOptions,
    log: logging.Logger,
) -> Resources:
    """The JSON-serialisable spec ``launch`` turns into a container (``kind="container"``) or a swarm
    service (``kind="service"``). What a request may choose (image, limits) is read from ``request_env``."""
    check_env(env)
    image = select_image(request_env, options)
    uid, gid = select_user(env, options)
    working_dir = select_working_dir(env, options, log)
    nano_cpus, memory_bytes = select_limits(request_env, options)
    name = resource_name(env.get("KERNEL_USERNAME", ""), kernel_id)

    kernel_env = dict(env)
    kernel_env["KERNEL_IMAGE"] = image
    kernel_env.pop("KERNEL_UID", None)
    kernel_env.pop("KERNEL_GID", None)
    if uid is not None:
        kernel_env["KERNEL_UID"] = str(uid)
    if gid is not None:
        kernel_env["KERNEL_GID"] = str(gid)
    if working_dir is None or not options.mirror_working_dirs:
        kernel_env.pop("KERNEL_WORKING_DIR", None)

    user = None if uid is None else (str(uid) if gid is None else f"{uid}:{gid}")
    host_network = options.network == "host"
    return {
        "kind": kind,
        "name": name,
        "image": image,
        "cmd": list(cmd),
        "env": kernel_env,
        "labels": kernel_labels(kernel_id),
        "user": user,
        "working_dir": working_dir,
        "network": options.network,
        # A container on the host's network has the host's name; docker refuses to set another.
        "hostname": None if host_network else name,
        "volumes": [parse_volume(spec) for spec in options.volumes],
        "init": options.init,
        "nano_cpus": nano_cpus,
        "memory_bytes": memory_bytes,
        "placement_constraints": list(getattr(options, "placement_constraints", []))
        if isinstance(options, DockerSwarmOptions)
        else [],
    }
