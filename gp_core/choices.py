"""What a start request may choose for a containerised kernel (gp-docker, gp-k8s), within the server's
configuration: its image, its user and group ids, its working directory. Public: re-exported from gp_core.

Request values are untrusted: ids are parsed as the kernel will see them (``"00"``, ``" 0"``, ``"+0"`` are
all 0, so none slips past a prohibited 0), images must be references an allow-list admits, a working dir
must be an absolute path without control characters.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from traitlets import TraitError

from .errors import BackendError

#: The largest uid/gid a kernel may run as (2**32 - 1 is "no id" to the kernel).
MAX_ID = 2**32 - 2
_NUMERIC_ID = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take e.g. Arabic-Indic ones
_IMAGE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def parse_id(value: str, what: str) -> int:
    """Parse a uid/gid the way the kernel will see it: ``"00"``, ``" 0"``, ``"-0"`` and ``"+0"`` are all 0.

    :raises ValueError: For anything but an integer within 0..MAX_ID.
    """
    text = str(value).strip()
    if not _NUMERIC_ID.fullmatch(text):
        raise ValueError(f"{what}={value!r} is not a numeric id")
    number = int(text)
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"{what}={value!r} is out of range; ids are 0..{MAX_ID}")
    return number


def id_option(proposal: Mapping[str, Any]) -> str:
    """The body of a ``@validate`` of an id option (``default_uid``): '' or a canonical id."""
    value = str(proposal["value"])
    if value.strip() == "":
        return ""
    try:
        return str(parse_id(value, proposal["trait"].name))
    except ValueError as exc:
        raise TraitError(str(exc)) from None


def id_list_option(proposal: Mapping[str, Any]) -> list[str]:
    """The body of a ``@validate`` of an id list option (``prohibited_uids``): canonical ids."""
    try:
        return [str(parse_id(item, proposal["trait"].name)) for item in proposal["value"]]
    except ValueError as exc:
        raise TraitError(str(exc)) from None


def request_id(env: Mapping[str, str], name: str) -> int | None:
    """The request's ``KERNEL_UID``/``KERNEL_GID`` (``name``) as a number, or None when not set."""
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_id(value, name)
    except ValueError as exc:
        raise BackendError(f"{exc}; the kernel cannot run as that") from None


def refuse_prohibited_ids(
    env: Mapping[str, str],
    uid: int | None,
    gid: int | None,
    prohibited_uids: Iterable[str],
    prohibited_gids: Iterable[str],
) -> None:
    """:raises BackendError: When ``uid``/``gid`` is one of the prohibited ids (compared as numbers)."""
    if uid is not None and uid in {int(item) for item in prohibited_uids}:
        raise BackendError(f"KERNEL_UID={env.get('KERNEL_UID', uid)!r} refused: user id {uid} is prohibited")
    if gid is not None and gid in {int(item) for item in prohibited_gids}:
        raise BackendError(f"KERNEL_GID={env.get('KERNEL_GID', gid)!r} refused: group id {gid} is prohibited")


def choose_image(
    requested: str | None, configured: str, allowed_images: Iterable[str], installer: str
) -> str:
    """The configured image, or the request's ``KERNEL_IMAGE`` (``requested``) when ``allowed_images``
    (fnmatch patterns) admits it. ``installer`` names the spec installer in the "no image" error."""
    configured = configured.strip()
    allowed = list(allowed_images)
    if requested is not None and requested.strip() != configured:
        requested = requested.strip()
        if not any(fnmatchcase(requested, pattern) for pattern in allowed):
            why = (
                f"this kernel accepts only {', '.join(map(repr, allowed))}"
                if allowed
                else "this kernel does not let requests choose the image (allowed_images / GP_ALLOWED_IMAGES)"
            )
            raise BackendError(f"KERNEL_IMAGE={requested!r} refused: {why}.")
        if not _IMAGE_REFERENCE.fullmatch(requested):
            raise BackendError(f"KERNEL_IMAGE={requested!r} is not an image reference")
        return requested
    if not configured:
        raise BackendError(
            'No kernel image configured: set "image" in kernel.json\'s kernel_provisioner config '
            f"(jupyter {installer} install --image-name=...) or GP_IMAGE_NAME on the server."
        )
    return configured


def choose_working_dir(
    requested: str | None, mirror_working_dirs: bool, working_dir: str, log: logging.Logger
) -> str | None:
    """``KERNEL_WORKING_DIR`` (``requested``) when mirroring is on and it is an absolute path, else the
    configured ``working_dir`` (None when empty)."""
    if requested and mirror_working_dirs:
        if not requested.startswith("/") or _CONTROL_CHARS.search(requested):
            raise BackendError(f"KERNEL_WORKING_DIR={requested!r} must be an absolute path")
        return posixpath.normpath(requested)
    if requested:
        log.debug("Ignoring KERNEL_WORKING_DIR: mirror_working_dirs (GP_MIRROR_WORKING_DIRS) is off")
    return working_dir or None


__all__ = [
    "MAX_ID",
    "choose_image",
    "choose_working_dir",
    "id_list_option",
    "id_option",
    "parse_id",
    "refuse_prohibited_ids",
    "request_id",
]
