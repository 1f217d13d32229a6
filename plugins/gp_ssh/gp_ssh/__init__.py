"""gp-ssh: the ``ssh`` gp backend, which starts Jupyter kernels on remote hosts over SSH.

Public API for other backends (versioned with this distribution): :func:`jump_host_route`, a
:class:`gp_core.TunnelRoute` through an SSH server, for their ``tunnel_route`` hook (GP_ENABLE_TUNNELING).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gp_core import TunnelRoute

__version__ = "0.1.0"
__all__ = ["__version__", "jump_host_route"]


def jump_host_route(
    host: str,
    *,
    port: int = 22,
    user: str = "",
    key_file: str = "",
    known_hosts_file: str = "",
    host_key_policy: str = "reject",
    connect_timeout: float = 10.0,
    kernel_ip: str | None = None,
) -> TunnelRoute:
    """A tunnel route through the SSH server ``host`` (pooled, authenticated like the ssh backend's own
    connections: key file, known_hosts, host key policy reject|warn|auto-add, password from GP_REMOTE_PWD).

    ``kernel_ip`` is the kernel's address as seen from ``host`` (``None``: what the kernel reported, its
    ``0.0.0.0`` being the host's loopback). paramiko is imported on the first call, not with this package.
    """
    import getpass

    from ._connections import SshTarget
    from ._options import HOST_KEY_POLICIES
    from ._remote import route_through

    if host_key_policy not in HOST_KEY_POLICIES:
        raise ValueError(f"host_key_policy {host_key_policy!r} is not one of {', '.join(HOST_KEY_POLICIES)}")
    target = SshTarget(
        host=host,
        port=port,
        user=user or getpass.getuser(),
        key_file=key_file,
        known_hosts_file=known_hosts_file,
        host_key_policy=host_key_policy,
        connect_timeout=connect_timeout,
    )
    return route_through(target, kernel_ip)
