"""Server side of the remote-launch protocol (docs/protocol.md): payload crypto and the comm-port client.

The kernel side is ``gp_core/launcher/launch_ipykernel.py``; it cannot import this module, so the
constants below are repeated there and the round-trip tests keep the two in step.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from Cryptodome.Cipher import AES
from Cryptodome.Hash import SHA256
from Cryptodome.Protocol.DH import import_x25519_public_key, key_agreement
from Cryptodome.Protocol.KDF import HKDF
from Cryptodome.PublicKey import ECC

from .errors import InvalidOptionError, ProtocolError

PROTOCOL_VERSION = 2
MAX_PAYLOAD_BYTES = 64 * 1024
#: Largest comm-port request or reply line.
MAX_COMM_BYTES = 4 * 1024

HKDF_SALT = b"gp-launch-v2"
AAD_PREFIX = b"gp-launch-v2|"
NONCE_BYTES = 12
TAG_BYTES = 16
#: DER SubjectPublicKeyInfo of an X25519 key is this 12-byte header followed by the 32-byte key.
X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")

ZMQ_PORT_FIELDS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
PORT_FIELDS = (*ZMQ_PORT_FIELDS, "comm_port")

_MAX_KERNEL_ID_CHARS = 255
_MAX_TEXT_CHARS = 1024
_PORT_RANGE = re.compile(r"(\d{1,5})\.\.(\d{1,5})")
DEFAULT_MIN_PORT_RANGE_SIZE = 1000


def new_launch_token() -> str:
    """A fresh one-shot launch token (32 hex characters)."""
    return secrets.token_hex(16)


def derive_payload_key(shared_secret: bytes, kernel_id: str) -> bytes:
    """The AES-256 key for one payload: HKDF-SHA256 over the X25519 shared secret."""
    if not any(shared_secret):
        # An all-zero secret means a low-order public key: anyone could derive this key.
        raise ValueError("degenerate X25519 shared secret")
    key = HKDF(shared_secret, 32, HKDF_SALT, SHA256, context=kernel_id.encode("utf-8"))
    assert isinstance(key, bytes)  # one key was asked for, not a tuple of them
    return key


def payload_aad(kernel_id: str) -> bytes:
    return AAD_PREFIX + kernel_id.encode("utf-8")


def decode_x25519_public_key(der: bytes) -> ECC.EccKey:
    """Import a DER SubjectPublicKeyInfo X25519 public key; ``ValueError`` on anything else."""
    if len(der) != len(X25519_SPKI_PREFIX) + 32 or not der.startswith(X25519_SPKI_PREFIX):
        raise ValueError("not a DER X25519 public key")
    return import_x25519_public_key(der[len(X25519_SPKI_PREFIX) :])


class ServerKey:
    """The server's X25519 key pair: it opens the launchers' encrypted payloads."""

    def __init__(self, private_key: ECC.EccKey) -> None:
        if private_key.curve != "Curve25519" or not private_key.has_private():
            raise ValueError("ServerKey needs an X25519 private key")
        self._private_key = private_key
        der = private_key.public_key().export_key(format="DER")
        self.public_key: str = base64.b64encode(der).decode("ascii")

    @classmethod
    def generate(cls) -> ServerKey:
        return cls(ECC.generate(curve="X25519"))

    def open_payload(
        self, raw: bytes, expected: Callable[[str], object] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Parse, authenticate and decrypt one envelope; return ``(kernel_id, plaintext)``.

        The plaintext is validated (see :func:`validate_plaintext`). ``expected``, when given, is asked
        about the envelope's kernel id before any cryptography, so payloads for unknown kernels cost
        little; a false answer rejects the payload. Anything wrong raises
        :class:`~gp_core.errors.ProtocolError` with the reason, never another exception type: the bytes
        come from the network.
        """
        try:
            return self._open_payload(raw, expected)
        except ProtocolError:
            raise
        except Exception as exc:  # hostile input must not surface as an arbitrary exception type
            raise ProtocolError(f"malformed payload ({type(exc).__name__}: {exc})") from exc

    def _open_payload(
        self, raw: bytes, expected: Callable[[str], object] | None
    ) -> tuple[str, dict[str, Any]]:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise ProtocolError("payload must be bytes")
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"payload of {len(raw)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
        envelope = _load_json_object(bytes(raw), "envelope")
        version = envelope.get("version")
        if not _is_int(version) or version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {version!r} (this server speaks version {PROTOCOL_VERSION}); "
                "use a launcher from the same gp release"
            )
        kernel_id = _check_kernel_id(envelope.get("kernel_id"), "envelope kernel_id")
        if expected is not None and not expected(kernel_id):
            raise ProtocolError(
                f"no launch of kernel {kernel_id} is pending (unknown kernel, or its connection info "
                "was already received)"
            )
        epk = _b64_field(envelope, "epk")
        nonce = _b64_field(envelope, "nonce")
        ciphertext = _b64_field(envelope, "ciphertext")
        tag = _b64_field(envelope, "tag")
        if len(nonce) != NONCE_BYTES:
            raise ProtocolError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
        if len(tag) != TAG_BYTES:
            raise ProtocolError(f"tag must be {TAG_BYTES} bytes, got {len(tag)}")
        try:
            ephemeral = decode_x25519_public_key(epk)
            key = key_agreement(
                static_priv=self._private_key,
                eph_pub=ephemeral,
                kdf=lambda secret: derive_payload_key(bytes(secret), kernel_id),
            )
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"invalid ephemeral public key 'epk' ({exc})") from None
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(payload_aad(kernel_id))
        try:
            plaintext = cipher.decrypt_and_verify(ciphertext, tag)
        except ValueError:
            raise ProtocolError(
                f"payload for kernel {kernel_id} failed authentication (tampered, encrypted for another "
                "server key, or bound to another kernel id)"
            ) from None
        return kernel_id, validate_plaintext(_load_json_object(plaintext, "plaintext"), kernel_id)


def validate_plaintext(info: dict[str, Any], kernel_id: str) -> dict[str, Any]:
    """Check the decrypted connection info field by field; return it with the known fields normalised."""
    if info.get("kernel_id") != kernel_id:
        raise ProtocolError(
            f"plaintext kernel_id {info.get('kernel_id')!r} does not match envelope kernel_id {kernel_id!r}"
        )
    token = info.get("launch_token")
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TEXT_CHARS:
        raise ProtocolError("launch_token is missing or not a string")
    ports = {}
    for field in PORT_FIELDS:
        port = info.get(field)
        if not _is_int(port) or not 1 <= port <= 65535:
            raise ProtocolError(f"{field} must be an integer in 1..65535, got {port!r}")
        ports[field] = port
    if len(set(ports.values())) != len(ports):
        raise ProtocolError(f"ports are not distinct: {ports}")
    ip = info.get("ip")
    try:
        ipaddress.ip_address(ip)  # type: ignore[arg-type]
    except ValueError:
        raise ProtocolError(f"ip must be an IP address, got {ip!r}") from None
    key = info.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_TEXT_CHARS:
        raise ProtocolError("key must be a non-empty string")
    if info.get("transport") != "tcp":
        raise ProtocolError(f"transport must be 'tcp', got {info.get('transport')!r}")
    scheme = info.get("signature_scheme")
    if not (
        isinstance(scheme, str)
        and scheme.startswith("hmac-")
        and scheme[len("hmac-") :] in hashlib.algorithms_guaranteed
    ):
        raise ProtocolError(f"signature_scheme must be 'hmac-<hash>', got {scheme!r}")
    kernel_name = info.get("kernel_name", "")
    if not isinstance(kernel_name, str) or len(kernel_name) > _MAX_TEXT_CHARS:
        raise ProtocolError("kernel_name must be a string")
    # As the launcher sees them, in its own PID namespace: pid 1 and pgid 0 (the group's leader lies
    # outside the namespace, e.g. under `unshare --pid --fork`) are normal there. Informational only:
    # core never signals them (docs/protocol.md section 1, step 7).
    for field, lowest in (("pid", 1), ("pgid", 0)):
        value = info.get(field)
        if value is not None and (not _is_int(value) or value < lowest):
            raise ProtocolError(f"{field} must be an integer >= {lowest}, got {value!r}")
    return {**info, **ports, "ip": str(ip), "kernel_name": kernel_name}


def parse_port_range(text: str, min_size: int | None = None) -> tuple[int, int]:
    """Parse ``"LOW..HIGH"``; ``"0..0"`` (or, as in Gateway Provisioners, ``"N..N"``) means any port
    and gives ``(0, 0)``.

    Otherwise ``1024 <= LOW < HIGH <= 65535`` and ``HIGH - LOW >= min_size`` (default: env
    ``GP_MIN_PORT_RANGE_SIZE``, else 1000).
    """
    form = "use 'LOW..HIGH' (e.g. '40000..41000') or '0..0' for any port"
    match = _PORT_RANGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidOptionError(f"port_range {text!r} is malformed; {form}")
    low, high = int(match[1]), int(match[2])
    if (low, high) == (0, 0):
        return 0, 0
    if low == high and 1024 <= low <= 65535:
        # Gateway Provisioners' "N..N" (a range of size 0) meant "no restriction" there: same here.
        return 0, 0
    if min_size is None:
        min_size = _min_port_range_size()
    if not 1024 <= low < high <= 65535:
        raise InvalidOptionError(
            f"port_range {text!r} is out of bounds; ports must satisfy 1024 <= LOW < HIGH <= 65535 ({form})"
        )
    if high - low < min_size:
        raise InvalidOptionError(
            f"port_range {text!r} spans {high - low} ports; it must span at least {min_size} "
            "(GP_MIN_PORT_RANGE_SIZE)"
        )
    return low, high


def normalize_port_range(text: str) -> str:
    """``text`` as the launcher takes it: ``"0..0"`` for any port (also for the anchor's ``"N..N"``).

    :raises InvalidOptionError: As :func:`parse_port_range`.
    """
    low, high = parse_port_range(text)
    return f"{low}..{high}"


def _min_port_range_size() -> int:
    value = os.environ.get("GP_MIN_PORT_RANGE_SIZE")
    if value is None:
        return DEFAULT_MIN_PORT_RANGE_SIZE
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise InvalidOptionError(f"GP_MIN_PORT_RANGE_SIZE={value!r} is not a non-negative integer")
    return size


def sign_comm_request(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


async def comm_request(
    host: str,
    port: int,
    key: str | bytes,
    op: str,
    *,
    signum: int | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Send one signed request to a launcher's communication port and return its reply.

    :raises OSError: The port cannot be reached (``ConnectionRefusedError``: the kernel is gone).
    :raises TimeoutError: No reply within ``timeout`` seconds.
    :raises ProtocolError: The reply is malformed or says ``{"ok": false}``.
    """
    if op == "signal" and signum is None:
        raise ValueError("op 'signal' needs signum")
    request: dict[str, Any] = {"op": op, "ts": time.time(), "nonce": secrets.token_hex(16)}
    if signum is not None:
        request["signum"] = int(signum)
    body = json.dumps(request, separators=(",", ":"))
    secret = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    line = json.dumps({"body": body, "sig": sign_comm_request(secret, body)}).encode("utf-8") + b"\n"
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(line)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            raw = await read_to_eof(reader, MAX_COMM_BYTES)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # the launcher may have gone (e.g. after SIGTERM): the reply is what matters
    if raw is None:
        raise ProtocolError(f"reply from {host}:{port} exceeds {MAX_COMM_BYTES} bytes")
    reply = _load_json_object(raw.split(b"\n", 1)[0], f"reply from {host}:{port}")
    if reply.get("ok") is not True:
        raise ProtocolError(f"{host}:{port} refused {op!r}: {reply.get('error') or 'no reason given'}")
    return reply


async def read_to_eof(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read to EOF; ``None`` once more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def _load_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_kernel_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_KERNEL_ID_CHARS:
        raise ProtocolError(f"{what} must be a non-empty string of at most {_MAX_KERNEL_ID_CHARS} characters")
    if not value.isprintable():  # C0/C1 controls, DEL, line and paragraph separators, bidi overrides
        raise ProtocolError(f"{what} contains control or other non-printable characters")
    return value


def _b64_field(envelope: dict[str, Any], field: str) -> bytes:
    value = envelope.get(field)
    if not isinstance(value, str):
        raise ProtocolError(f"envelope field {field!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"envelope field {field!r} is not valid base64") from None


__all__ = [
    "MAX_COMM_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "ServerKey",
    "comm_request",
    "new_launch_token",
    "parse_port_range",
]
