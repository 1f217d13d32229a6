"""gp kernel launcher: run an IPython kernel in this process and report its connection info to the gp server.

The protocol is gp's docs/protocol.md (version 2). This script is copied into kernel images and onto remote
hosts, so it needs only the standard library, pycryptodomex and ipykernel, and never imports gp_core.
Start-up latency is measured against plain ``python -m ipykernel_launcher``: anything heavy is imported
only when it is needed.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import hmac
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the launcher may meet an older Python than gp itself
    from collections.abc import Callable

    NamespaceFactory = Callable[[], dict[str, Any]]

PROTOCOL_VERSION = 2
HKDF_SALT = b"gp-launch-v2"
AAD_PREFIX = b"gp-launch-v2|"
#: DER SubjectPublicKeyInfo of an X25519 key is this 12-byte header followed by the 32-byte key.
X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4 * 1024
MAX_COMM_BYTES = 4 * 1024
MAX_ASSIGNMENT_BYTES = 1024 * 1024
COMM_MAX_CLOCK_SKEW = 300.0
#: Seconds a client has for its whole request, from its connection being accepted (not per read).
COMM_READ_TIMEOUT = 5.0
#: Connections read at once; past it, one of the source holding the most is dropped (see CommServer).
COMM_MAX_CONNECTIONS = 32
#: How long to keep retrying the response address while it refuses connections (server or network not ready).
CONNECT_RETRY_SECONDS = 5.0
REPLY_TIMEOUT = 30.0
#: shell, iopub, stdin, control, heartbeat and the comm port.
PORTS_NEEDED = 6
_PORT_BUSY = frozenset({errno.EADDRINUSE, errno.EACCES})

#: Names each cluster type puts into the user namespace, the function creating them, the package they need.
CLUSTER_NAMESPACES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "spark": (("spark", "sc", "sql"), "create_spark_namespace", "pyspark"),
    "dask": (("cluster",), "create_dask_namespace", "dask_yarn"),
}

_stderr_fd = 2


class LaunchFailed(Exception):
    """The launch cannot go on: the message is printed to stderr and the launcher exits non-zero."""


def say(message: str) -> None:
    """Write to the launcher's real stderr (once the kernel runs, ``sys.stderr`` goes to the notebook)."""
    try:
        os.write(_stderr_fd, f"gp launcher: {message}\n".encode(errors="replace"))
    except OSError:
        pass


# --------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="launch_ipykernel.py",
        description="Start an IPython kernel in this process and report its connection info to a gp server.",
        epilog="With --park as its only argument, the launcher imports ipykernel first, then takes these "
        "arguments and its environment from one JSON line on stdin (docs/protocol.md section 4).",
    )
    parser.add_argument("--kernel-id", default=env.get("KERNEL_ID"), help="the kernel's id (env KERNEL_ID)")
    parser.add_argument(
        "--response-address",
        default=env.get("RESPONSE_ADDRESS"),
        metavar="IP:PORT",
        help="the gp server's response listener (env RESPONSE_ADDRESS)",
    )
    parser.add_argument(
        "--public-key",
        default=env.get("PUBLIC_KEY"),
        help="base64 DER of the server's X25519 public key (env PUBLIC_KEY)",
    )
    parser.add_argument(
        "--port-range",
        default=env.get("PORT_RANGE") or "0..0",
        metavar="LOW..HIGH",
        help="bind every port inside this range; 0..0 means any port (env PORT_RANGE)",
    )
    parser.add_argument("--kernel-class-name", default="ipykernel.ipkernel.IPythonKernel")
    parser.add_argument(
        "--spark-context-initialization-mode", choices=("lazy", "eager", "none"), default="none"
    )
    parser.add_argument("--cluster-type", choices=("spark", "dask", "none"), default="none")
    parser.add_argument(
        "--launch-token",
        default=env.get("GP_LAUNCH_TOKEN"),
        help="the one-shot launch token; prefer env GP_LAUNCH_TOKEN (argv is visible to ps)",
    )
    parser.add_argument(
        "--ip", default=env.get("GP_KERNEL_IP") or "0.0.0.0", help="address to bind (env GP_KERNEL_IP)"
    )
    parser.add_argument(
        "--transport-encryption",
        choices=("none", "curve"),
        default=env.get("GP_TRANSPORT_ENCRYPTION") or "none",
        help="curve: generate a CurveZMQ key pair and encrypt the kernel's ZMQ sockets (env GP_TRANSPORT_ENCRYPTION)",
    )
    args = parser.parse_args(argv)
    for name, var in (
        ("kernel_id", "KERNEL_ID"),
        ("response_address", "RESPONSE_ADDRESS"),
        ("public_key", "PUBLIC_KEY"),
        ("launch_token", "GP_LAUNCH_TOKEN"),
    ):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} is required (or set {var})")
    try:
        args.port_range = parse_port_range(args.port_range)
        args.response_address = parse_address(args.response_address)
        decode_public_key(args.public_key)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def parse_port_range(text: str) -> tuple[int, int]:
    """``"LOW..HIGH"`` (inclusive) -> ``(LOW, HIGH)``; ``"0..0"`` -> ``(0, 0)``, any port."""
    low_text, sep, high_text = text.strip().partition("..")
    if not (sep and low_text.isdigit() and high_text.isdigit()):
        raise ValueError(f"--port-range {text!r} is malformed; use LOW..HIGH, or 0..0 for any port")
    low, high = int(low_text), int(high_text)
    if (low, high) == (0, 0):
        return low, high
    if not 1 <= low <= high <= 65535 or high - low + 1 < PORTS_NEEDED:
        raise ValueError(
            f"--port-range {text!r} must lie within 1..65535 and hold at least {PORTS_NEEDED} ports"
        )
    return low, high


def parse_address(text: str) -> tuple[str, int]:
    """``"ip:port"`` or ``"[ipv6]:port"`` -> ``(host, port)``."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (sep and host and port_text.isdigit() and 0 < int(port_text) <= 65535):
        raise ValueError(f"--response-address {text!r} is malformed; use IP:PORT")
    return host, int(port_text)


def decode_public_key(text: str) -> bytes:
    """The raw 32-byte X25519 key inside the server's base64 DER public key."""
    try:
        der = base64.b64decode(text, validate=True)
    except ValueError:
        der = b""
    if len(der) != len(X25519_SPKI_PREFIX) + 32 or not der.startswith(X25519_SPKI_PREFIX):
        raise ValueError("--public-key is not a base64 DER X25519 public key")
    return der[len(X25519_SPKI_PREFIX) :]


# --------------------------------------------------------------------------------------------- payload


def _import_crypto() -> Any:
    # pycryptodome binds its C code through cffi when cffi is importable, and cffi parses C declarations at
    # import (~70 ms here); its ctypes binding loads the same libraries in a few ms. Hide cffi for this
    # import only, so kernel code can still use it.
    hide_cffi = "cffi" not in sys.modules and "Cryptodome.Util._raw_api" not in sys.modules
    if hide_cffi:
        sys.modules["cffi"] = None  # type: ignore[assignment]
    try:
        from Cryptodome.Cipher import AES
        from Cryptodome.Hash import SHA256
        from Cryptodome.Protocol.DH import import_x25519_public_key, key_agreement
        from Cryptodome.Protocol.KDF import HKDF
        from Cryptodome.PublicKey import ECC
    finally:
        if hide_cffi and sys.modules.get("cffi", 0) is None:
            del sys.modules["cffi"]
    return AES, SHA256, import_x25519_public_key, key_agreement, HKDF, ECC


def seal_payload(public_key: str, kernel_id: str, info: dict[str, Any]) -> bytes:
    """Encrypt ``info`` for the server (docs/protocol.md §1.5) and return the JSON envelope."""
    AES, SHA256, import_x25519_public_key, key_agreement, HKDF, ECC = _import_crypto()
    kernel_id_bytes = kernel_id.encode("utf-8")

    def derive_key(shared_secret: bytes) -> bytes:
        if not any(shared_secret):
            raise ValueError("degenerate X25519 shared secret")
        return HKDF(bytes(shared_secret), 32, HKDF_SALT, SHA256, context=kernel_id_bytes)

    ephemeral = ECC.generate(curve="X25519")
    server_key = import_x25519_public_key(decode_public_key(public_key))
    key = key_agreement(eph_priv=ephemeral, static_pub=server_key, kdf=derive_key)
    nonce = os.urandom(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(AAD_PREFIX + kernel_id_bytes)
    ciphertext, tag = cipher.encrypt_and_digest(json.dumps(info).encode("utf-8"))

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    envelope = {
        "version": PROTOCOL_VERSION,
        "kernel_id": kernel_id,
        "epk": b64(ephemeral.public_key().export_key(format="DER")),
        "nonce": b64(nonce),
        "ciphertext": b64(ciphertext),
        "tag": b64(tag),
    }
    return json.dumps(envelope).encode("utf-8")


def send_payload(address: tuple[str, int], envelope: bytes) -> None:
    """Deliver the envelope to the response listener and check its answer.

    A connection refused, or closed without a word (a listener shedding a flood of connections closes
    the oldest unread ones before reading them), is retried for ``CONNECT_RETRY_SECONDS``.

    :raises LaunchFailed: The listener cannot be reached, does not answer, or rejects the payload.
    """
    if len(envelope) > MAX_PAYLOAD_BYTES:
        raise LaunchFailed(f"the payload is {len(envelope)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    host, port = address
    deadline = time.monotonic() + CONNECT_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_RETRY_SECONDS)
        except OSError as exc:  # refused, unreachable, not resolvable yet: the network may still be coming up
            if time.monotonic() + delay > deadline:
                raise LaunchFailed(
                    f"cannot reach the gp server's response address {host}:{port} ({exc}); "
                    "check GP_RESPONSE_IP / GP_RESPONSE_PORT on the server and the network in between"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        try:
            with sock:
                sock.settimeout(REPLY_TIMEOUT)
                sock.sendall(envelope)
                sock.shutdown(socket.SHUT_WR)
                raw = read_line(sock, MAX_REPLY_BYTES)
        except (ConnectionResetError, BrokenPipeError):
            raw = b""  # shed before it was read
        except OSError as exc:
            raise LaunchFailed(f"no answer from the gp server at {host}:{port} ({exc})") from None
        if raw != b"" or time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        reply = json.loads(raw or b"")
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise LaunchFailed(
            f"the gp server at {host}:{port} sent an unreadable answer: {(raw or b'')[:200]!r}"
        )
    if reply.get("ok") is not True:
        raise LaunchFailed(
            f"the gp server at {host}:{port} rejected the launch: {reply.get('error') or 'no reason given'}"
        )


def read_line(sock: socket.socket, limit: int) -> bytes | None:
    """Read up to the first newline or EOF; ``None`` once more than ``limit`` bytes came without one."""
    data = b""
    while True:
        end = data.find(b"\n")
        if end >= 0:
            return data[:end]
        if len(data) > limit:
            return None
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


# --------------------------------------------------------------------------------------------- ports


def bind_in_range(bind: Callable[[int], object], low: int, high: int) -> int:
    """Bind to the first free port of ``low..high``, starting at a random one; return it.

    The bind itself is the check, so no other process can take the port between choosing and using it.
    """
    size = high - low + 1
    start = random.randrange(size)  # concurrent kernels start apart, and so rarely collide
    for offset in range(size):
        port = low + (start + offset) % size
        try:
            bind(port)
        except Exception as exc:  # socket.error and zmq.ZMQError both carry errno
            if getattr(exc, "errno", None) not in _PORT_BUSY:
                raise
        else:
            return port
    raise LaunchFailed(f"no free port left in --port-range {low}..{high}")


def bind_comm_socket(ip: str, port_range: tuple[int, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if port_range == (0, 0):
            sock.bind((ip, 0))
        else:
            bind_in_range(lambda port: sock.bind((ip, port)), *port_range)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------------- comm port


class _Incoming:
    """A comm-port connection whose request is still being read."""

    __slots__ = ("conn", "data", "deadline", "peer")

    def __init__(self, conn: socket.socket, peer: str, deadline: float) -> None:
        self.conn, self.peer, self.deadline = conn, peer, deadline
        self.data = b""


class CommServer:
    """Serves the communication port (docs/protocol.md §2): signed ``signal`` and ``ping`` requests.

    One thread reads every connection without blocking (a selector), so no client can hold a slot
    another needs: each request has one deadline (``COMM_READ_TIMEOUT`` from its accept, not per read),
    at most ``COMM_MAX_CONNECTIONS`` are read at once, and when one more arrives the oldest connection of
    the source holding the most is dropped. A signed request, which arrives whole at once, is answered
    as soon as it is read, however many slow or idle unsigned clients there are (short of one source
    flooding from the server's own address faster than the server's request travels).
    """

    def __init__(self, sock: socket.socket, key: bytes, spark: bool) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._key = key
        self._spark = spark
        self._seen_nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._serve_forever, name="gp-comm", daemon=True).start()

    def _serve_forever(self) -> None:
        import selectors

        incoming: dict[socket.socket, _Incoming] = {}  # oldest first
        selector = selectors.DefaultSelector()
        try:
            self.sock.setblocking(False)
            selector.register(self.sock, selectors.EVENT_READ)
            while self.sock.fileno() >= 0:
                now = time.monotonic()
                wait = min((item.deadline for item in incoming.values()), default=now + 0.5) - now
                # Wake at least twice a second: a closed listening socket ends the loop.
                for key, _ in selector.select(min(max(wait, 0.0), 0.5)):
                    if key.fileobj is self.sock:
                        self._accept(selector, incoming)
                        continue
                    item = incoming.get(key.fileobj)  # type: ignore[call-overload]
                    if item is None:
                        continue
                    try:
                        self._read(selector, incoming, item)
                    except Exception as exc:  # one connection's trouble must not end the port
                        say(f"comm port: unexpected error with a request: {exc!r}")
                        self._drop(selector, incoming, item)
                now = time.monotonic()
                for item in [item for item in incoming.values() if item.deadline <= now]:
                    self._finish(
                        selector, incoming, item, {"ok": False, "error": "timed out reading the request"}
                    )
        except Exception as exc:  # the port must not die silently
            say(f"comm port: unexpected error, no longer serving: {exc!r}")
        finally:
            for item in list(incoming.values()):
                self._drop(selector, incoming, item)
            selector.close()

    def _accept(self, selector: Any, incoming: dict[socket.socket, _Incoming]) -> None:
        import selectors

        for _ in range(64):  # then serve the reads: a flood of connects must not starve them
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: shed the oldest to make room
                if incoming:
                    self._drop(selector, incoming, next(iter(incoming.values())))
                return
            peer = str(address[0]) if isinstance(address, tuple) and address else "?"
            if len(incoming) >= COMM_MAX_CONNECTIONS:
                self._drop(selector, incoming, self._victim(incoming, peer))
            conn.setblocking(False)
            item = _Incoming(conn, peer, time.monotonic() + COMM_READ_TIMEOUT)
            incoming[conn] = item
            selector.register(conn, selectors.EVENT_READ)

    @staticmethod
    def _victim(incoming: dict[socket.socket, _Incoming], newcomer: str) -> _Incoming:
        """The oldest connection of the source holding the most (the newcomer counted)."""
        counts: dict[str, int] = {newcomer: 1}
        for item in incoming.values():
            counts[item.peer] = counts.get(item.peer, 0) + 1
        greediest = max(counts, key=lambda peer: counts[peer])
        for item in incoming.values():
            if item.peer == greediest:
                return item
        return next(iter(incoming.values()))  # the newcomer's source holds none yet: the oldest of all

    def _read(self, selector: Any, incoming: dict[socket.socket, _Incoming], item: _Incoming) -> None:
        try:
            chunk = item.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(selector, incoming, item)
            return
        item.data += chunk
        end = item.data.find(b"\n")
        if end >= 0:
            raw: bytes | None = item.data[:end]
        elif len(item.data) > MAX_COMM_BYTES:
            raw = None
        elif not chunk:
            raw = item.data  # end of input: the request is what came
        else:
            return
        reply, action = self.handle(raw)
        self._finish(selector, incoming, item, reply)
        if action is not None:
            action()

    def _finish(
        self, selector: Any, incoming: dict[socket.socket, _Incoming], item: _Incoming, reply: dict[str, Any]
    ) -> None:
        try:  # a reply is far smaller than a fresh socket's send buffer: it goes out at once or never
            item.conn.send(json.dumps(reply).encode("utf-8") + b"\n")
        except OSError:
            pass  # the client went away; a signal already accepted is still delivered
        self._drop(selector, incoming, item)

    @staticmethod
    def _drop(selector: Any, incoming: dict[socket.socket, _Incoming], item: _Incoming) -> None:
        incoming.pop(item.conn, None)
        try:
            selector.unregister(item.conn)
        except (KeyError, ValueError):
            pass
        item.conn.close()

    def handle(self, raw: bytes | None) -> tuple[dict[str, Any], Callable[[], None] | None]:
        """Check one request; return the reply and what to do once it is sent."""
        try:
            request = self._verify(raw)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}, None
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}, None
        if op == "signal":
            signum = request.get("signum")
            if type(signum) is not int or signum not in signal.valid_signals():
                return {"ok": False, "error": f"invalid signal number {signum!r}"}, None
            return {"ok": True, "pid": os.getpid()}, lambda: self._deliver(signum)
        return {"ok": False, "error": f"unknown op {op!r}"}, None

    def _verify(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            raise ValueError(f"request exceeds {MAX_COMM_BYTES} bytes")
        try:
            outer = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError("request is not JSON") from None
        if not isinstance(outer, dict) or not isinstance(outer.get("body"), str):
            raise ValueError("request must be a JSON object with 'body' and 'sig'")
        body, sig = outer["body"], outer.get("sig")
        expected = hmac.new(self._key, body.encode("utf-8"), hashlib.sha256).hexdigest()
        if not isinstance(sig, str) or not hmac.compare_digest(expected.encode(), sig.encode("utf-8")):
            raise ValueError("bad signature")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("body is not JSON") from None
        if not isinstance(request, dict):
            raise ValueError("body must be a JSON object")
        ts, nonce = request.get("ts"), request.get("nonce")
        now = time.time()
        if (
            not isinstance(ts, (int, float))
            or isinstance(ts, bool)
            or not math.isfinite(ts)
            or abs(now - ts) > COMM_MAX_CLOCK_SKEW
        ):
            raise ValueError(f"timestamp is missing or more than {COMM_MAX_CLOCK_SKEW:g} s off")
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
            raise ValueError("nonce is missing or malformed")
        with self._lock:
            # A nonce older than twice the allowed skew can no longer pass the timestamp check.
            horizon = now - 2 * COMM_MAX_CLOCK_SKEW
            for old in [n for n, seen in self._seen_nonces.items() if seen < horizon]:
                del self._seen_nonces[old]
            if nonce in self._seen_nonces:
                raise ValueError("replayed nonce")
            self._seen_nonces[nonce] = now
        return request

    def _deliver(self, signum: int) -> None:
        # Aim at the main thread: it runs the user's code, and only a signal it receives itself
        # interrupts a blocking call there (a plain kill may land on another thread).
        main = threading.main_thread().ident
        send = getattr(signal, "pthread_kill", None)
        if signum == signal.SIGINT and self._spark and hasattr(signal, "SIGUSR2"):
            self._signal(send, main, signal.SIGUSR2)  # its handler cancels running Spark jobs
        self._signal(send, main, signum)

    @staticmethod
    def _signal(send: Callable[[int, int], None] | None, thread: int | None, signum: int) -> None:
        try:
            if send is not None and thread is not None:
                send(thread, signum)
            else:
                os.kill(os.getpid(), signum)
        except OSError as exc:
            say(f"could not raise signal {signum}: {exc}")


# --------------------------------------------------------------------------------------------- kernel


def create_kernel_app(args: argparse.Namespace, on_ports_bound: Callable[[Any], None]) -> Any:
    """Create and initialize the kernel app, its five ZMQ ports bound inside the range.

    ``on_ports_bound(app)`` runs in the middle of the set-up: once the ports are bound and SIGINT is
    ignored, before the kernel object and its shell exist (~80 ms more, most of it importing debugpy).
    Reporting there lets the server connect while the kernel finishes: ZMQ queues the first requests.
    """
    import atexit
    import shutil
    import tempfile

    import zmq
    from ipykernel.heartbeat import Heartbeat
    from ipykernel.kernelapp import IPKernelApp
    from traitlets.utils.importstring import import_item

    port_range: tuple[int, int] = args.port_range

    def bind_zmq(sock: Any, ip: str) -> int:
        if port_range == (0, 0):
            return int(sock.bind_to_random_port(f"tcp://{ip}"))  # the OS picks a free port
        return bind_in_range(lambda port: sock.bind(f"tcp://{ip}:{port}"), *port_range)

    class RangeHeartbeat(Heartbeat):
        """A heartbeat whose socket is bound before its thread starts, inside the port range.

        ipykernel's own picks a port by binding and releasing a plain socket, which races with every
        other process; here the ZMQ bind is the choice.
        """

        def pick_port(self) -> int:
            self.socket = self.context.socket(zmq.ROUTER)
            self.socket.linger = 1000
            if getattr(self, "_curve_secretkey", None) is not None:  # before the bind: a CurveZMQ server
                self.socket.curve_secretkey = self._curve_secretkey
                self.socket.curve_publickey = self._curve_publickey
                self.socket.curve_server = True
            self.port = bind_zmq(self.socket, self.ip)
            return self.port

        def run(self) -> None:
            while True:
                try:
                    zmq.device(zmq.QUEUE, self.socket, self.socket)
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    if exc.errno == zmq.ETERM:
                        self.socket.close()
                    elif exc.errno != zmq.ENOTSOCK:
                        raise
                break

    class GPKernelApp(IPKernelApp):
        def _try_bind_socket(self, s: Any, port: int) -> int:
            if self.transport == "tcp" and port <= 0:
                return bind_zmq(s, self.ip)
            return int(super()._try_bind_socket(s, port))

        def init_heartbeat(self) -> None:
            # Its own context, as ipykernel does: the heartbeat must never wait on the GIL.
            keys = {"curve_publickey": self.curve_publickey, "curve_secretkey": self.curve_secretkey}
            curve = keys if keys["curve_secretkey"] is not None else {}
            self.heartbeat = RangeHeartbeat(zmq.Context(), ("tcp", self.ip, 0), **curve)
            self.hb_port = self.heartbeat.port
            self.heartbeat.start()

        def init_kernel(self) -> None:
            # Ports bound, SIGINT ignored (init_signal, whose errors ipykernel swallows, ran just before).
            on_ports_bound(self)
            super().init_kernel()

    # A private connection file (for %connect_info), removed at exit: ipykernel deletes the file, we the dir.
    # A kernel killed by a signal never runs atexit: a backend that can starts the launcher with
    # GP_CONNECTION_DIR, a private directory it owns and removes when it stops the kernel.
    connection_dir = tempfile.mkdtemp(prefix="gp-kernel-", dir=os.environ.get("GP_CONNECTION_DIR") or None)
    atexit.register(shutil.rmtree, connection_dir, True)
    try:
        kernel_class = import_item(args.kernel_class_name)
    except Exception as exc:
        raise LaunchFailed(f"cannot import --kernel-class-name {args.kernel_class_name!r}: {exc!r}") from exc
    try:
        curve: dict[str, bytes] = {}
        if args.transport_encryption == "curve":
            if hasattr(IPKernelApp, "curve_secretkey") and zmq.has("curve"):
                curve["curve_publickey"], curve["curve_secretkey"] = zmq.curve_keypair()
            else:  # the server decides: 'required' refuses the kernel, 'auto' runs it unencrypted
                say("CurveZMQ asked for, but this ipykernel (>= 7.3 needed) or libzmq cannot do it")
        app = GPKernelApp.instance(
            kernel_class=kernel_class,
            ip=args.ip,
            transport="tcp",
            connection_file=os.path.join(connection_dir, "kernel.json"),
            **curve,
        )
    except Exception as exc:
        raise LaunchFailed(f"cannot set up the kernel ({args.kernel_class_name}): {exc}") from exc
    try:
        app.initialize([])
    except LaunchFailed:
        raise
    except Exception as exc:
        raise LaunchFailed(f"the kernel failed to initialize: {exc!r}") from exc
    return app


def connection_payload(args: argparse.Namespace, app: Any, comm_port: int) -> dict[str, Any]:
    getpgid = getattr(os, "getpgid", None)
    return {
        "kernel_id": args.kernel_id,
        "launch_token": args.launch_token,
        "shell_port": app.shell_port,
        "iopub_port": app.iopub_port,
        "stdin_port": app.stdin_port,
        "control_port": app.control_port,
        "hb_port": app.hb_port,
        "comm_port": comm_port,
        "ip": app.ip,
        "key": app.session.key.decode("utf-8"),
        "transport": "tcp",
        "signature_scheme": app.session.signature_scheme,
        "kernel_name": os.environ.get("KERNEL_NAME", ""),
        "pid": os.getpid(),
        "pgid": getpgid(0) if getpgid else None,
        **(
            {"curve_publickey": app.curve_publickey.decode(), "curve_secretkey": app.curve_secretkey.decode()}
            if getattr(app, "curve_secretkey", None) is not None
            else {}
        ),
    }


# --------------------------------------------------------------------------------------------- spark / dask


def create_spark_namespace() -> dict[str, Any]:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    return {"spark": spark, "sc": spark.sparkContext, "sql": spark.sql}


def create_dask_namespace() -> dict[str, Any]:
    import dask_yarn

    return {"cluster": dask_yarn.YarnCluster.from_current()}


def cluster_namespace_plan(args: argparse.Namespace) -> tuple[tuple[str, ...], NamespaceFactory] | None:
    """What ``--spark-context-initialization-mode`` asks for: the names and their factory, or ``None``.

    :raises LaunchFailed: ``eager`` without the package it needs.
    """
    mode = args.spark_context_initialization_mode
    if mode == "none":
        return None
    import importlib.util

    names, factory, package = CLUSTER_NAMESPACES["dask" if args.cluster_type == "dask" else "spark"]
    if importlib.util.find_spec(package) is None:
        message = f"--spark-context-initialization-mode {mode} needs the {package!r} package (not installed)"
        if mode == "eager":
            raise LaunchFailed(message)
        say(f"{message}; the kernel starts without it")
        return None
    return names, globals()[factory]


class Pending:
    """Stands for a name (``spark``, ``sc``, ...) still being created in the background: using it waits."""

    __slots__ = ("_name", "_ready", "_values")

    def __init__(self, name: str, ready: threading.Event, values: dict[str, Any]) -> None:
        self._name, self._ready, self._values = name, ready, values

    def _target(self) -> Any:
        self._ready.wait()
        if self._name not in self._values:
            raise NameError(f"{self._name} is unavailable: {self._values.get('__error__')!r}")
        return self._values[self._name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __repr__(self) -> str:
        if self._ready.is_set():
            return repr(self._target())
        return f"<{self._name}: being created in the background>"


def populate_lazily(user_ns: dict[str, Any], names: tuple[str, ...], factory: NamespaceFactory) -> None:
    ready = threading.Event()
    values: dict[str, Any] = {}
    placeholders = {name: Pending(name, ready, values) for name in names}
    user_ns.update(placeholders)

    def create() -> None:
        try:
            values.update(factory())
        except Exception as exc:
            values["__error__"] = exc
            say(f"background creation of {', '.join(names)} failed: {exc!r}")
        finally:
            for name, placeholder in placeholders.items():
                if name in values and user_ns.get(name) is placeholder:
                    user_ns[name] = values[name]
            ready.set()

    threading.Thread(target=create, name="gp-cluster-namespace", daemon=True).start()


def install_spark_cancel_handler(app: Any) -> None:
    """SIGUSR2 (sent with every interrupt when ``--cluster-type spark``) cancels the running Spark jobs.

    Installed before the kernel's shell exists: until then there is no job to cancel.
    """

    def cancel_jobs(_signum: int, _frame: Any) -> None:
        shell = getattr(app, "shell", None)
        context = shell.user_ns.get("sc") if shell is not None else None
        if context is None or isinstance(context, Pending):
            return

        def cancel() -> None:
            try:
                context.cancelAllJobs()
            except Exception as exc:
                say(f"could not cancel Spark jobs: {exc!r}")

        # Not in the handler itself: it runs on the main thread, whose py4j connection is busy with the
        # very job to cancel (PySpark pins each Python thread to one connection), so the call would wait
        # for the job. A thread of its own gets a connection of its own.
        threading.Thread(target=cancel, name="gp-spark-cancel", daemon=True).start()

    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, cancel_jobs)


# --------------------------------------------------------------------------------------------- parking


def preimport() -> None:
    """Import what every launch needs, before anything is known of the kernel: ipykernel and IPython,
    the default kernel class with its debugger (debugpy), and the payload crypto (~200 ms together)."""
    import importlib

    import ipykernel.kernelapp  # noqa: F401

    _import_crypto()
    for name in ("ipykernel.ipkernel", "ipykernel.debugger"):
        try:
            importlib.import_module(name)
        except Exception:  # a broken import is reported by the launch itself, with its reason
            pass


def wait_for_assignment(stream: Any) -> list[str] | None:
    """``--park``: preimport, then read one assignment line from ``stream`` (docs/protocol.md §4).

    Applies the assignment's environment and returns its launcher arguments; ``None`` on end of input
    (the pool that parked this launcher is gone: exit quietly).

    :raises LaunchFailed: The line is not an assignment.
    """
    preimport()
    line = stream.readline(MAX_ASSIGNMENT_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_ASSIGNMENT_BYTES:
        raise LaunchFailed(f"--park: the assignment exceeds {MAX_ASSIGNMENT_BYTES} bytes")
    try:
        assignment = json.loads(line)
    except (ValueError, RecursionError):
        raise LaunchFailed("--park: the assignment is not JSON") from None
    if not isinstance(assignment, dict):
        assignment = {}
    argv, env = assignment.get("argv"), assignment.get("env")
    if not (isinstance(argv, list) and all(isinstance(item, str) for item in argv)):
        raise LaunchFailed('--park: the assignment needs "argv", a list of strings')
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise LaunchFailed('--park: the assignment needs "env", an object of strings')
    try:
        os.environ.update(env)
    except ValueError as exc:  # e.g. a NUL or '=' in a name
        raise LaunchFailed(f"--park: the assignment's env is not usable: {exc}") from None
    return argv


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    global _stderr_fd
    if (sys.argv[1:] if argv is None else argv) == ["--park"]:
        try:
            argv = wait_for_assignment(sys.stdin.buffer)
        except LaunchFailed as exc:
            say(str(exc))
            return 2
        if argv is None:
            return 0
    args = parse_args(argv)
    os.environ.pop("GP_LAUNCH_TOKEN", None)  # one-shot, and no business of the kernel's subprocesses
    _stderr_fd = os.dup(2)  # ipykernel soon captures fd 2 for the notebook; our errors belong in the log
    spark = args.cluster_type == "spark"

    def report(app: Any) -> None:
        if spark:  # before the comm port opens: an interrupt's SIGUSR2 must never meet the default action
            install_spark_cancel_handler(app)
        comm = CommServer(bind_comm_socket(app.ip, args.port_range), app.session.key, spark=spark)
        comm.start()
        info = connection_payload(args, app, comm.port)
        send_payload(args.response_address, seal_payload(args.public_key, args.kernel_id, info))

    try:
        plan = cluster_namespace_plan(args)
        app = create_kernel_app(args, on_ports_bound=report)
        user_ns = app.shell.user_ns if getattr(app, "shell", None) is not None else None
        if plan is not None:
            names, factory = plan
            if user_ns is None:
                say(f"{args.kernel_class_name} has no user namespace; {', '.join(names)} not created")
            elif args.spark_context_initialization_mode == "eager":
                try:
                    user_ns.update(factory())
                except Exception as exc:
                    raise LaunchFailed(f"could not create {', '.join(names)}: {exc!r}") from exc
            else:
                populate_lazily(user_ns, names, factory)
    except LaunchFailed as exc:
        say(str(exc))
        return 1
    app.start()
    return 0


if __name__ == "__main__":
    # Python put this script's directory first on sys.path; the kernel's imports should not see it
    # (IPython adds the working directory back, as with ipykernel_launcher).
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
