"""gp: remote kernel provisioners for Jupyter, as a pluggy plugin framework."""

from __future__ import annotations

from .errors import (
    BackendError,
    GPError,
    InvalidOptionError,
    LaunchError,
    LaunchTimeoutError,
    ProtocolError,
    UnknownBackendError,
)
from .hookspecs import Handle, Resources, hookimpl
from .options import BackendOptions, env_default, parse_bool, parse_list
from .plugins import Backend, get_backend, installed_backends

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendOptions",
    "GPError",
    "Handle",
    "InvalidOptionError",
    "LaunchError",
    "LaunchTimeoutError",
    "ProtocolError",
    "Resources",
    "UnknownBackendError",
    "__version__",
    "env_default",
    "get_backend",
    "hookimpl",
    "installed_backends",
    "parse_bool",
    "parse_list",
]
