"""Errors gp raises. Their messages are written to be shown to the person who started the kernel.

Each class has an ``http_status``: what a Jupyter server answers a REST request (``POST /api/kernels``)
that the error failed with. The provisioner hands jupyter_client its errors as instances of a subclass
that is also a ``tornado.web.HTTPError`` (see :mod:`gp_core.provisioner`), so the client gets that status
and gp's message instead of 500 "Unhandled error"; this module imports neither tornado nor jupyter.
"""

from __future__ import annotations

import difflib
from typing import ClassVar

#: The backends of gp's own distributions, for install hints only: core dispatches on none of them (a
#: test checks this against plugins/*/pyproject.toml).
GP_DISTRIBUTIONS = {
    "docker": "gp-docker",
    "docker-swarm": "gp-docker",
    "ssh": "gp-ssh",
    "k8s": "gp-k8s",
    "yarn": "gp-yarn",
    "spark-operator": "gp-sparkop",
}


class GPError(Exception):
    """Base class of every error gp raises on purpose."""

    #: The HTTP status a Jupyter server answers with when this error fails a REST request.
    http_status: ClassVar[int] = 500


class BackendError(GPError):
    """A backend could not do what was asked; the message says why (fit to show the user).

    Backends raise it ``from`` the SDK exception so the cause stays in the traceback.
    """


class LaunchError(BackendError):
    """The kernel was created but failed before it reported its connection info."""


class LaunchTimeoutError(LaunchError, TimeoutError):
    """The kernel did not report its connection info within the launch timeout."""


class UnknownBackendError(GPError, LookupError):
    """``kernel.json`` names a backend that is not installed."""

    http_status = 400

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = sorted(installed)
        super().__init__(unknown_backend_message(name, self.installed))

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0])


def unknown_backend_message(name: str, installed: list[str]) -> str:
    """Say that ``name`` is no installed backend, with a close installed (or gp) name, or how to install it.

    ``pip install`` is suggested only for a backend of gp's own distributions, or, as an example, when
    no installed name is close (a typo of an installed backend must not send anyone to an index).
    """
    listing = f"installed backends: {', '.join(installed) or 'none'}"
    close = difflib.get_close_matches(name, installed, n=1, cutoff=0.6)
    if name in GP_DISTRIBUTIONS:
        dist = GP_DISTRIBUTIONS[name]
        return f"Unknown gp backend {name!r}; {listing}. It is provided by {dist}: pip install {dist}"
    if close:
        return f"Unknown gp backend {name!r}; did you mean {close[0]!r}? {listing}"
    known = difflib.get_close_matches(name, sorted(GP_DISTRIBUTIONS), n=1, cutoff=0.6)
    if known:
        dist = GP_DISTRIBUTIONS[known[0]]
        return (
            f"Unknown gp backend {name!r}; did you mean {known[0]!r} (not installed: pip install {dist})? "
            f"{listing}"
        )
    return (
        f"Unknown gp backend {name!r}; {listing}. "
        f"Install the package that provides it (e.g. 'pip install gp-{name}')."
    )


class InvalidOptionError(GPError, ValueError):
    """A provisioner or backend option is unknown or has an invalid value."""

    http_status = 400


class ServerConfigError(InvalidOptionError):
    """The server's own configuration (``c.<Section>.<option>``, a ``GP_*`` variable) is invalid: no
    request can fix that, so a Jupyter server answers 500."""

    http_status = 500


class NotAuthorizedError(GPError, PermissionError):
    """The user may not start this kernel (``authorized_users`` / ``unauthorized_users``)."""

    http_status = 403


class ProtocolError(GPError):
    """A payload on the response socket or the launcher's communication port was rejected."""


__all__ = [
    "BackendError",
    "GPError",
    "InvalidOptionError",
    "LaunchError",
    "LaunchTimeoutError",
    "NotAuthorizedError",
    "ProtocolError",
    "ServerConfigError",
    "UnknownBackendError",
]
