"""The response listener: receives the launchers' encrypted connection info (docs/protocol.md §1).

One listener serves every launch of a server process (per running event loop), on one TCP port. Each
launch registers its kernel id and gets a one-shot token; the first valid payload carrying that token
resolves the launch's future, and anything else is answered ``{"ok": false}``, logged and forgotten.

Connections are unauthenticated until their payload is read, so they are bounded: at most
``max_connections`` are read at once, at most ``max_connections_per_source`` from one address, and one
more sheds at once the oldest unread connection of the source holding the most (a real launcher sends
its payload as it connects, and is read long before a flood can push it out). Accepting yields to the
reads after every connection, so a flood of connects cannot starve them.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hmac
import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jupyter_client.localinterfaces import public_ips
from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import _legacy_launcher as legacy
from .errors import GPError, LaunchError, ProtocolError
from .options import env_default, parse_list
from .protocol import MAX_PAYLOAD_BYTES, ServerKey, new_launch_token
from .untrusted import loggable

#: Ports tried one after another before the retries jump to random ports nearby.
_SEQUENTIAL_TRIES = 5
_PORT_BUSY = frozenset({errno.EADDRINUSE, errno.EACCES})
_CONNECTION_FIELDS = (
    "shell_port",
    "iopub_port",
    "stdin_port",
    "control_port",
    "hb_port",
    "ip",
    "key",
    "transport",
    "signature_scheme",
    "kernel_name",
)
#: Reported only by kernels that encrypt their transport (CurveZMQ); checked by gp_core.encryption.
_OPTIONAL_CONNECTION_FIELDS = ("curve_publickey", "curve_secretkey")

#: Seconds between two warnings about shed connections (each says how many).
_SHED_REPORT_INTERVAL = 10.0

_server_key: ServerKey | None = None
_server_key_lock = threading.Lock()


def server_key() -> ServerKey:
    """The process's X25519 key pair, created on first use."""
    global _server_key
    with _server_key_lock:
        if _server_key is None:
            _server_key = ServerKey.generate()
        return _server_key


@dataclass(frozen=True)
class LaunchReport:
    """What a launcher reported: everything a client needs to reach the kernel."""

    kernel_id: str
    #: shell/iopub/stdin/control/hb ports, ip, key (str), transport, signature_scheme, kernel_name.
    connection_info: dict[str, Any] = field(repr=False)  # holds the kernel's HMAC key: keep it out of logs
    comm_port: int
    pid: int | None
    pgid: int | None
    #: Source address of the payload's TCP connection.
    peer_ip: str


@dataclass(eq=False)
class _Reading:
    """An accepted connection whose payload is still being read (unauthenticated)."""

    sock: socket.socket
    peer_ip: str
    task: asyncio.Task[Any] | None = None
    shed: bool = False


@dataclass(eq=False)
class PendingLaunch:
    """A launch waiting for its payload; ``future`` resolves to the :class:`LaunchReport`."""

    kernel_id: str
    token: str = field(repr=False)
    future: asyncio.Future[LaunchReport] = field(repr=False)
    #: The kernel's address as its backend reported it (``expect_from``); None until then.
    address: str | None = None
    registered_at: float = 0.0


class ResponseListener(LoggingConfigurable):
    """The TCP listener the launchers report to; get it with ``await ResponseListener.instance()``."""

    response_ip = Unicode(
        config=True,
        help="Address the launchers send their connection info to (env GP_RESPONSE_IP). Default: the first "
        "public IPv4 address not matching prohibited_local_ips, else 127.0.0.1.",
    )
    response_port = Integer(
        min=0, max=65535, config=True, help="Port of the response listener; 0 = any (env GP_RESPONSE_PORT)."
    )
    response_port_retries = Integer(
        min=0,
        config=True,
        help="Other ports to try when response_port is taken: the next few in order, then random ones "
        "nearby (env GP_RESPONSE_PORT_RETRIES).",
    )
    response_addr_any = Bool(
        config=True,
        help="Listen on all interfaces (0.0.0.0) while still advertising response_ip "
        "(env GP_RESPONSE_ADDR_ANY).",
    )
    prohibited_local_ips = List(
        Unicode(),
        config=True,
        help="Regular expressions, matched at the start of an address, of local addresses never to pick "
        "as the default response_ip (env GP_PROHIBITED_LOCAL_IPS, comma-separated).",
    )
    socket_timeout = Float(
        config=True, help="Seconds a launcher has to deliver its payload (env GP_SOCKET_TIMEOUT)."
    )
    max_connections = Integer(
        min=1,
        config=True,
        help="Connections whose payload is read at once; one more sheds the oldest of the busiest source "
        "(env GP_RESPONSE_MAX_CONNECTIONS).",
    )
    max_connections_per_source = Integer(
        min=1,
        config=True,
        help="Connections from one address read at once; one more sheds that address's oldest "
        "(env GP_RESPONSE_MAX_CONNECTIONS_PER_SOURCE).",
    )

    _response_port_default = default("response_port")(env_default("GP_RESPONSE_PORT", 8877))
    _response_port_retries_default = default("response_port_retries")(
        env_default("GP_RESPONSE_PORT_RETRIES", 10)
    )
    _response_addr_any_default = default("response_addr_any")(env_default("GP_RESPONSE_ADDR_ANY", False))
    _prohibited_local_ips_default = default("prohibited_local_ips")(
        env_default("GP_PROHIBITED_LOCAL_IPS", list, parse_list)
    )
    _socket_timeout_default = default("socket_timeout")(env_default("GP_SOCKET_TIMEOUT", 5.0))
    _max_connections_default = default("max_connections")(env_default("GP_RESPONSE_MAX_CONNECTIONS", 256))
    _max_per_source_default = default("max_connections_per_source")(
        env_default("GP_RESPONSE_MAX_CONNECTIONS_PER_SOURCE", 64)
    )

    @default("response_ip")
    def _response_ip_default(self) -> str:
        return os.environ.get("GP_RESPONSE_IP") or self._first_allowed_ip()

    _response_ip_default.func.env_vars = ("GP_RESPONSE_IP",)  # type: ignore[attr-defined]  # for gp reference

    @validate("prohibited_local_ips")
    def _check_patterns(self, proposal: Any) -> list[str]:
        for pattern in proposal["value"]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise TraitError(
                    f"prohibited_local_ips: {pattern!r} is not a regular expression ({exc})"
                ) from None
        return list(proposal["value"])

    @validate("socket_timeout")
    def _check_timeout(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError(f"socket_timeout must be positive, got {proposal['value']!r}")
        return float(proposal["value"])

    _instances: ClassVar[dict[asyncio.AbstractEventLoop, ResponseListener]] = {}
    _start_locks: ClassVar[dict[asyncio.AbstractEventLoop, asyncio.Lock]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    async def instance(cls, parent: Any = None) -> ResponseListener:
        """The listener of the running event loop, started on first use (concurrent first calls share it).

        ``parent`` lends its config and logger; it is not kept, since the listener outlives any one kernel.
        """
        loop = asyncio.get_running_loop()
        with ResponseListener._registry_lock:
            ResponseListener._forget_dead_loops()
            listener = ResponseListener._instances.get(loop)
            if listener is not None:
                return listener
            lock = ResponseListener._start_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            listener = ResponseListener._instances.get(loop)
            if listener is None:
                kwargs: dict[str, Any] = {}
                if parent is not None:
                    kwargs = {"config": parent.config, "log": parent.log}
                listener = cls(**kwargs)
                await listener._start(loop)
                with ResponseListener._registry_lock:
                    ResponseListener._instances[loop] = listener
        return listener

    @staticmethod
    def _forget_dead_loops() -> None:
        # pytest-asyncio and friends give each test its own loop; a listener whose loop has closed can never
        # serve again, so free its port. (Callers hold _registry_lock.)
        for loop in [loop for loop in ResponseListener._instances if loop.is_closed()]:
            ResponseListener._instances.pop(loop)._abandon()
        for loop in [loop for loop in ResponseListener._start_locks if loop.is_closed()]:
            del ResponseListener._start_locks[loop]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key = server_key()
        self._pending: dict[str, PendingLaunch] = {}
        self._connections: set[asyncio.Task[Any]] = set()
        self._reading: dict[socket.socket, _Reading] = {}  # oldest first
        self._shed_count = 0
        self._shed_reported = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.Task[None] | None = None  # the accept loop
        self.response_address = ""
        #: Gateway Provisioners launchers seen but not yet tied to a launch: (peer ip, loop time, kind).
        self._legacy_seen: collections.deque[tuple[str, float, str]] = collections.deque(maxlen=32)

    @property
    def connections_reading(self) -> int:
        """Connections accepted whose payload is still being read (bounded by ``max_connections``)."""
        return len(self._reading)

    @property
    def public_key(self) -> str:
        """Base64 DER of the server's X25519 public key (the ``{public_key}`` placeholder)."""
        return self._key.public_key

    # ------------------------------------------------------------------ life cycle

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sock = self._bind()
        # Resolve the limits now: a bad GP_* value fails the start, not the first connection.
        self._limits = (self.max_connections, self.max_connections_per_source)
        self._server = loop.create_task(self._accept_forever(self._sock), name="gp-response-listener")
        port = self._sock.getsockname()[1]
        ip = self.response_ip
        self.response_address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.log.info(
            "gp response listener on %s%s",
            self.response_address,
            " (listening on all interfaces)" if self.response_addr_any else "",
        )

    def _bind(self) -> socket.socket:
        host = "0.0.0.0" if self.response_addr_any else self.response_ip
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        tried = []
        for port in self._candidate_ports():
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                # Lets a restarted server rebind while old connections sit in TIME_WAIT; on Linux it never
                # lets two sockets listen on one port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                if exc.errno in _PORT_BUSY:
                    tried.append(port)
                    continue
                raise GPError(
                    f"The gp response listener cannot listen on {host}:{port}: {exc}. "
                    "Check GP_RESPONSE_IP (an address of this host) and GP_RESPONSE_PORT."
                ) from exc
            return sock
        raise GPError(
            f"The gp response listener found no free port on {host} (tried {', '.join(map(str, tried))}). "
            "Set GP_RESPONSE_PORT to a free port, or raise GP_RESPONSE_PORT_RETRIES."
        )

    def _candidate_ports(self) -> list[int]:
        first, retries = self.response_port, self.response_port_retries
        if first == 0:
            return [0]
        ports = [first]
        for attempt in range(1, retries + 1):
            if attempt < _SEQUENTIAL_TRIES:
                port = first + attempt
            else:
                port = random.randint(max(1, first - 2 * retries), min(65535, first + 2 * retries))
            if port <= 65535:
                ports.append(port)
        return ports

    def _first_allowed_ip(self) -> str:
        patterns = [re.compile(pattern) for pattern in self.prohibited_local_ips]
        for ip in public_ips():
            if ":" not in ip and not any(pattern.match(ip) for pattern in patterns):
                return ip
        return "127.0.0.1"

    async def close(self) -> None:
        """Stop listening; pending launches are cancelled."""
        server, self._server = self._server, None
        if server is None:
            return
        with ResponseListener._registry_lock:
            if self._loop is not None and ResponseListener._instances.get(self._loop) is self:
                del ResponseListener._instances[self._loop]
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    def _abandon(self) -> None:
        """Release the port of a listener whose event loop is closed (nothing on it can run any more)."""
        self._server = None
        self._pending.clear()
        if self._sock is not None:
            self._sock.close()

    # ------------------------------------------------------------------ launches

    def register(self, kernel_id: str) -> PendingLaunch:
        """Expect a payload for ``kernel_id``; a pending launch of the same id is cancelled and replaced."""
        if self._loop is None:
            raise RuntimeError("ResponseListener.register before the listener started")
        old = self._pending.pop(kernel_id, None)
        if old is not None:
            old.future.cancel()
        pending = PendingLaunch(
            kernel_id, new_launch_token(), self._loop.create_future(), registered_at=self._loop.time()
        )
        self._pending[kernel_id] = pending
        return pending

    def unregister(self, kernel_id: str) -> None:
        """Stop expecting ``kernel_id`` (no-op when its payload already arrived)."""
        pending = self._pending.pop(kernel_id, None)
        if pending is not None:
            pending.future.cancel()

    async def _accept_forever(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reported = float("-inf")
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:  # e.g. out of file descriptors: back off instead of spinning
                if sock.fileno() < 0:
                    return
                if time.monotonic() - reported >= _SHED_REPORT_INTERVAL:  # once in a while, not each time
                    self.log.warning("gp response listener cannot accept connections: %s", exc)
                    reported = time.monotonic()
                await asyncio.sleep(0.5)
                continue
            conn.setblocking(False)
            peer_ip = str(address[0]) if isinstance(address, tuple) and address else "unknown"
            reading = _Reading(conn, peer_ip)
            self._make_room(peer_ip)
            self._reading[conn] = reading
            reading.task = loop.create_task(self._serve_connection(reading))
            await asyncio.sleep(0)  # let the reads of what is already connected run

    def _make_room(self, newcomer: str) -> None:
        """Shed the oldest unread connection of the busiest source when one more would pass a bound."""
        max_total, max_per_source = self._limits
        counts: dict[str, int] = {newcomer: 1}
        for reading in self._reading.values():
            counts[reading.peer_ip] = counts.get(reading.peer_ip, 0) + 1
        if counts[newcomer] > max_per_source:
            victim_source = newcomer
        elif len(self._reading) + 1 > max_total:
            victim_source = max(counts, key=lambda peer: counts[peer])
        else:
            return
        victim = next((r for r in self._reading.values() if r.peer_ip == victim_source), None)
        if victim is None:  # the newcomer's source is the busiest and holds none yet: the oldest of all
            victim = next(iter(self._reading.values()))
        self._shed(victim)

    def _shed(self, reading: _Reading) -> None:
        self._reading.pop(reading.sock, None)
        reading.shed = True
        if reading.task is not None:
            # The task closes the socket once its read is unregistered: closing it here could let a new
            # connection reuse the descriptor while the old read is still registered.
            reading.task.cancel()
        else:
            reading.sock.close()
        self._shed_count += 1
        now = time.monotonic()
        if now - self._shed_reported >= _SHED_REPORT_INTERVAL:
            self.log.warning(
                "gp response listener shed %d unauthenticated connection(s) (latest from %s): more than "
                "max_connections (%d) or max_connections_per_source (%d) were open at once",
                self._shed_count,
                reading.peer_ip,
                *self._limits,
            )
            self._shed_count = 0
            self._shed_reported = now

    def expect_from(self, kernel_id: str, address: str | None) -> None:
        """Record the address the backend reported for a pending launch: a Gateway Provisioners launcher
        reporting from it (before or after this call) then fails that launch at once."""
        pending = self._pending.get(kernel_id)
        if pending is None or not address:
            return
        pending.address = address
        for peer_ip, seen_at, kind in list(self._legacy_seen):
            if (
                peer_ip == address
                and seen_at >= pending.registered_at
                and self._fail_legacy_launch(peer_ip, kind)
            ):
                return

    def legacy_note(self, since: float) -> str:
        """For a launch timeout: the Gateway Provisioners launchers seen since ``since`` (loop time) that
        could not be tied to a launch, or ``""``."""
        seen = sorted({peer for peer, at, _kind in self._legacy_seen if at >= since})
        if not seen:
            return ""
        return (
            f" Meanwhile a launcher speaking Gateway Provisioners' protocol connected from {', '.join(seen)}; "
            f"if that was this kernel: {legacy.REBUILD}"
        )

    def _legacy_launcher(self, raw: bytes, peer_ip: str, kind: str) -> str | None:
        """A payload in one of Gateway Provisioners' formats: fail its launch if it can be identified.

        None when it is not one after all (a "version 0" shape that opens with no pending kernel id is
        just base64 garbage, rejected like any other garbage)."""
        if kind == legacy.V0:
            kernel_id = legacy.v0_kernel_id(raw, list(self._pending))
            if kernel_id is None:
                return None
            self._fail_launch(kernel_id, kind, peer_ip)
        elif not self._fail_legacy_launch(peer_ip, kind):
            assert self._loop is not None
            self._legacy_seen.append((peer_ip, self._loop.time(), kind))
            return f"{legacy.describe(kind, peer_ip)}; no pending launch is known at that address. {legacy.REBUILD}"
        return f"{legacy.describe(kind, peer_ip)}. {legacy.REBUILD}"

    def _fail_legacy_launch(self, peer_ip: str, kind: str) -> bool:
        """Fail the one pending launch whose backend reported ``peer_ip``; False when none or several did."""
        matches = [p for p in self._pending.values() if p.address == peer_ip and not p.future.done()]
        if len(matches) != 1:
            return False
        self._fail_launch(matches[0].kernel_id, kind, peer_ip)
        return True

    def _fail_launch(self, kernel_id: str, kind: str, peer_ip: str) -> None:
        pending = self._pending.pop(kernel_id, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(LaunchError(legacy.launch_error_message(kernel_id, kind, peer_ip)))

    async def _serve_connection(self, reading: _Reading) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        loop = asyncio.get_running_loop()
        peer_ip, sock = reading.peer_ip, reading.sock
        try:
            try:
                raw = await self._read_payload(sock)
                self._reading.pop(sock, None)  # read: no longer sheddable, answered at once
                reply: dict[str, Any] = self._accept_payload(raw, peer_ip)
            except ProtocolError as exc:
                reason = loggable(exc)
                self.log.warning("gp response listener rejected a payload from %s: %s", peer_ip, reason)
                reply = {"ok": False, "error": reason}
            await asyncio.wait_for(
                loop.sock_sendall(sock, json.dumps(reply).encode("utf-8") + b"\n"), self.socket_timeout
            )
        except asyncio.CancelledError:
            if not reading.shed:
                raise
        except (OSError, TimeoutError) as exc:
            self.log.debug("gp response listener: connection from %s failed: %s", peer_ip, exc)
        except Exception:  # keep serving whatever one connection did
            self.log.exception("gp response listener: unexpected error with a connection from %s", peer_ip)
        finally:
            self._reading.pop(sock, None)
            sock.close()
            if task is not None:
                self._connections.discard(task)

    async def _read_payload(self, sock: socket.socket) -> bytes:
        """Everything up to end of input, within ``socket_timeout`` for the whole payload."""
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.socket_timeout):
                while chunk := await loop.sock_recv(sock, MAX_PAYLOAD_BYTES + 1 - size):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_PAYLOAD_BYTES:
                        raise ProtocolError(f"payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        except TimeoutError:
            raise ProtocolError(
                f"no complete payload within {self.socket_timeout:g} s (GP_SOCKET_TIMEOUT)"
            ) from None
        return b"".join(chunks)

    def _accept_payload(self, raw: bytes, peer_ip: str) -> dict[str, Any]:
        kind = legacy.recognise(raw)
        message = self._legacy_launcher(raw, peer_ip, kind) if kind is not None else None
        if message is not None:
            raise ProtocolError(message)
        kernel_id, info = self._key.open_payload(raw, expected=self._pending.__contains__)
        pending = self._pending.get(kernel_id)
        if pending is None:  # unregistered while the payload was being opened
            raise ProtocolError(f"the launch of kernel {kernel_id} was abandoned")
        if not hmac.compare_digest(info["launch_token"].encode("utf-8"), pending.token.encode("utf-8")):
            raise ProtocolError(f"wrong launch token for kernel {kernel_id}")
        del self._pending[kernel_id]  # one-shot: a replay finds nothing pending
        if pending.future.done():
            raise ProtocolError(f"the launch of kernel {kernel_id} was abandoned")
        report = LaunchReport(
            kernel_id=kernel_id,
            connection_info={
                **{name: info[name] for name in _CONNECTION_FIELDS},
                **{name: info[name] for name in _OPTIONAL_CONNECTION_FIELDS if name in info},
            },
            comm_port=info["comm_port"],
            pid=info.get("pid"),
            pgid=info.get("pgid"),
            peer_ip=peer_ip,
        )
        pending.future.set_result(report)
        self.log.debug("gp response listener: kernel %s reported from %s", kernel_id, peer_ip)
        return {"ok": True}


__all__ = ["LaunchReport", "PendingLaunch", "ResponseListener", "server_key"]
