"""gp: remote kernel provisioners for Jupyter, as a pluggy plugin framework.

``import gp_core`` stays cheap (no jupyter_client): a backend's hooks module imports it at load time.
The jupyter-facing classes are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .choices import (
    choose_image,
    choose_working_dir,
    id_list_option,
    id_option,
    parse_id,
    refuse_prohibited_ids,
    request_id,
)
from .errors import (
    BackendError,
    GPError,
    InvalidOptionError,
    LaunchError,
    LaunchTimeoutError,
    NotAuthorizedError,
    ProtocolError,
    ServerConfigError,
    UnknownBackendError,
)
from .hookspecs import Handle, Resources, hookimpl
from .options import BackendOptions, env_default, inherited_server_env, parse_bool, parse_list, pattern_within
from .plugins import Backend, get_backend, installed_backends
from .processes import (
    file_tail,
    log_tail,
    open_private_log,
    process_status,
    signal_group,
    start_process,
    stop_process_group,
)
from .resources import parse_cpus, parse_memory, request_limit
from .rollback import Rollback
from .status import StatusSource, WatchFeed
from .tunnel import TunnelRoute
from .untrusted import is_env_name, loggable

if TYPE_CHECKING:
    from .listener import ResponseListener
    from .provisioner import GenericRemoteProvisioner
    from .specapp import InstallSpecApp, SpecInstallerApp

__version__ = "0.1.0"

#: Public names whose modules import jupyter_client, loaded by ``__getattr__`` when first asked for.
_LAZY = {
    "GenericRemoteProvisioner": "gp_core.provisioner",
    "InstallSpecApp": "gp_core.specapp",
    "ResponseListener": "gp_core.listener",
    "SpecInstallerApp": "gp_core.specapp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gp_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Backend",
    "BackendError",
    "BackendOptions",
    "GPError",
    "GenericRemoteProvisioner",
    "Handle",
    "InstallSpecApp",
    "InvalidOptionError",
    "LaunchError",
    "LaunchTimeoutError",
    "NotAuthorizedError",
    "ProtocolError",
    "Resources",
    "ResponseListener",
    "Rollback",
    "ServerConfigError",
    "SpecInstallerApp",
    "StatusSource",
    "TunnelRoute",
    "UnknownBackendError",
    "WatchFeed",
    "__version__",
    "choose_image",
    "choose_working_dir",
    "env_default",
    "file_tail",
    "get_backend",
    "hookimpl",
    "id_list_option",
    "id_option",
    "inherited_server_env",
    "installed_backends",
    "is_env_name",
    "log_tail",
    "loggable",
    "open_private_log",
    "parse_bool",
    "parse_cpus",
    "parse_id",
    "parse_list",
    "parse_memory",
    "pattern_within",
    "process_status",
    "refuse_prohibited_ids",
    "request_id",
    "request_limit",
    "signal_group",
    "start_process",
    "stop_process_group",
]
