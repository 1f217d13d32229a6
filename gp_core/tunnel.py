"""SSH tunnelling of a kernel's ports (``GP_ENABLE_TUNNELING``), for servers that cannot reach the network
the kernels run on.

With tunnelling on, core forwards each of the kernel's five ZMQ ports and its communication port from a
port on this server's ``127.0.0.1`` through an SSH connection, and hands Jupyter connection info that
points at the local ends. Nothing spawns ``ssh``: the forwards are paramiko ``direct-tcpip`` channels,
served by one thread per forwarded port (and two per open connection, pumping both ways).

A backend opts in with the ``tunnel_route`` hook, returning a :class:`TunnelRoute`: how to open a channel
to an address as seen from the far end, and the kernel's address there. Core itself never imports an SSH
library: the ssh backend reuses its pooled paramiko connection to the kernel's host, and other backends
route through a jump host with gp-ssh's public ``gp_ssh.jump_host_route`` (e.g. the docker host).
``GP_TUNNEL_MAX_KEEP_ALIVE`` (seconds) is the SSH keepalive interval of the connection.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import BackendError

log = logging.getLogger("gp_core.tunnel")

#: The ports of a connection info that are forwarded (the comm port is forwarded besides them).
ZMQ_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
_CHUNK = 64 * 1024


@dataclass
class TunnelRoute:
    """How to reach a kernel's ports through SSH.

    ``open_channel((host, port), keepalive)`` is blocking and returns a connected socket-like channel
    (``send``/``recv``/``close``/``fileno``, e.g. a paramiko ``Channel``) to ``host:port`` as seen from the
    SSH server, setting the SSH keepalive interval to ``keepalive`` seconds; it raises
    :class:`gp_core.BackendError` when the SSH server cannot be reached or refuses the forward.
    ``kernel_ip`` is the kernel's address as seen from the SSH server (``None``: the address the kernel
    reported). ``description`` names the SSH server in logs and errors.
    """

    open_channel: Callable[[tuple[str, int], float], Any]
    description: str
    kernel_ip: str | None = None


@dataclass
class KernelTunnel:
    """Local listeners on ``127.0.0.1`` forwarding to one kernel's ports through a :class:`TunnelRoute`."""

    route: TunnelRoute
    keepalive: float
    #: remote (host, port) -> local port
    local_ports: dict[tuple[str, int], int] = field(default_factory=dict)
    #: channels opened per remote port: the proof that traffic went through the tunnel
    channels: dict[tuple[str, int], int] = field(default_factory=dict)
    _listeners: list[socket.socket] = field(default_factory=list)
    _open: set[Any] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def forward(self, remote: tuple[str, int]) -> int:
        """Start forwarding a local port to ``remote``; return the local port."""
        if remote in self.local_ports:
            return self.local_ports[remote]
        # One channel first: a route that cannot reach the kernel fails here, with its reason.
        self.route.open_channel(remote, self.keepalive).close()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        self._listeners.append(listener)
        self.local_ports[remote] = listener.getsockname()[1]
        self.channels[remote] = 0
        threading.Thread(
            target=self._accept, args=(listener, remote), name=f"gp-tunnel-{remote[1]}", daemon=True
        ).start()
        return self.local_ports[remote]

    def _accept(self, listener: socket.socket, remote: tuple[str, int]) -> None:
        while not self._closed:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, remote), daemon=True).start()

    def _serve(self, conn: socket.socket, remote: tuple[str, int]) -> None:
        try:
            channel = self.route.open_channel(remote, self.keepalive)
        except Exception as exc:
            log.warning("Tunnel via %s to %s:%d failed: %s", self.route.description, *remote, exc)
            conn.close()
            return
        with self._lock:
            self.channels[remote] += 1
            self._open.update((conn, channel))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            _pump(conn, channel)
        finally:
            with self._lock:
                self._open.difference_update((conn, channel))
            with contextlib.suppress(Exception):
                channel.close()
            conn.close()

    def close(self) -> None:
        """Stop every forward and close the connections through it."""
        self._closed = True
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            still_open = list(self._open)
        for end in still_open:
            with contextlib.suppress(Exception):
                end.close()


def _pump(conn: socket.socket, channel: Any) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        try:
            readable, _, _ = select.select([conn, channel], [], [], 30)
        except (OSError, ValueError):
            return
        for source, sink in ((conn, channel), (channel, conn)):
            if source in readable:
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return


def open_tunnel(
    route: TunnelRoute,
    connection_info: dict[str, Any],
    comm_address: tuple[str, int] | None,
    keepalive: float,
    reported_ip: str = "",
) -> tuple[KernelTunnel, dict[str, Any], tuple[str, int] | None]:
    """Forward the kernel's ports (blocking: run it in a thread).

    The far end of each forward is ``route.kernel_ip``, else the address the kernel bound (its report's
    ``ip``), where ``0.0.0.0`` (all addresses) is reached as the SSH server's own ``127.0.0.1``.

    :returns: The tunnel, the connection info pointing at its local ends (``ip`` 127.0.0.1), and the local
        comm address.
    :raises gp_core.BackendError: A forward could not be set up (the tunnel is closed again).
    """
    kernel_ip = route.kernel_ip or (reported_ip if reported_ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
    tunnel = KernelTunnel(route, keepalive)
    local = dict(connection_info)
    try:
        for name in ZMQ_PORT_NAMES:
            local[name] = tunnel.forward((kernel_ip, int(connection_info[name])))
        local_comm = None
        if comm_address is not None:
            local_comm = ("127.0.0.1", tunnel.forward((kernel_ip, int(comm_address[1]))))
    except BaseException as exc:
        tunnel.close()
        if isinstance(exc, BackendError):
            raise
        if isinstance(exc, Exception):
            raise BackendError(
                f"Cannot tunnel the kernel's ports through {route.description}: {exc}"
            ) from exc
        raise
    local["ip"] = "127.0.0.1"
    return tunnel, local, local_comm
