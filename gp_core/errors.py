"""Errors gp raises. Their messages are written to be shown to the person who started the kernel."""

from __future__ import annotations


class GPError(Exception):
    """Base class of every error gp raises on purpose."""


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

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = sorted(installed)
        super().__init__(
            f"Unknown gp backend {name!r}; installed backends: {', '.join(self.installed) or 'none'}. "
            f"Install the package that provides it (e.g. 'pip install gp-{name}')."
        )

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0])


class InvalidOptionError(GPError, ValueError):
    """A provisioner or backend option is unknown or has an invalid value."""


class ProtocolError(GPError):
    """A payload on the response socket or the launcher's communication port was rejected."""


__all__ = [
    "BackendError",
    "GPError",
    "InvalidOptionError",
    "LaunchError",
    "LaunchTimeoutError",
    "ProtocolError",
    "UnknownBackendError",
]
