"""The payload crypto and port-range parsing of gp_core.protocol, against the real launcher's encryption."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib.util
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

from gp_core.errors import InvalidOptionError, ProtocolError
from gp_core.launcher import LAUNCHER_PATH
from gp_core.protocol import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    ServerKey,
    comm_request,
    decode_x25519_public_key,
    new_launch_token,
    parse_port_range,
)

KERNEL_ID = "0b5c1c9e-5d0a-4a43-9a57-6c5b1d0e8a11"


def load_launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gp_test_launch_ipykernel", LAUNCHER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    return load_launcher()


@pytest.fixture(scope="module")
def server_key() -> ServerKey:
    return ServerKey.generate()


def connection_info(kernel_id: str = KERNEL_ID, **overrides: Any) -> dict[str, Any]:
    info = {
        "kernel_id": kernel_id,
        "launch_token": new_launch_token(),
        "shell_port": 40001,
        "iopub_port": 40002,
        "stdin_port": 40003,
        "control_port": 40004,
        "hb_port": 40005,
        "comm_port": 40006,
        "ip": "0.0.0.0",
        "key": "5f3e0c1a-8d8b-4c39-9d0d-0f7c9b1f2e3d",
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
        "pid": 4242,
        "pgid": 4242,
    }
    info.update(overrides)
    return {name: value for name, value in info.items() if value is not ...}


def edit_envelope(raw: bytes, **changes: Any) -> bytes:
    envelope = json.loads(raw)
    envelope.update(changes)
    return json.dumps(envelope).encode()


def flip_first_byte(b64: str) -> str:
    data = bytearray(base64.b64decode(b64))
    data[0] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_with_the_launchers_encryption(launcher: ModuleType, server_key: ServerKey) -> None:
    info = connection_info()
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, info)
    envelope = json.loads(raw)
    assert envelope["version"] == PROTOCOL_VERSION == launcher.PROTOCOL_VERSION
    assert envelope["kernel_id"] == KERNEL_ID
    assert info["key"].encode() not in raw and info["launch_token"].encode() not in raw

    kernel_id, plaintext = server_key.open_payload(raw)

    assert kernel_id == KERNEL_ID
    assert plaintext == info


def test_every_payload_uses_a_fresh_ephemeral_key_and_nonce(
    launcher: ModuleType, server_key: ServerKey
) -> None:
    first = json.loads(launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info()))
    second = json.loads(launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info()))
    assert first["epk"] != second["epk"]
    assert first["nonce"] != second["nonce"]


def test_public_key_is_base64_der_x25519(server_key: ServerKey) -> None:
    der = base64.b64decode(server_key.public_key, validate=True)
    assert decode_x25519_public_key(der).curve == "Curve25519"
    assert ServerKey.generate().public_key != server_key.public_key


def test_launcher_and_server_agree_on_the_constants(launcher: ModuleType) -> None:
    from gp_core import protocol

    for name in ("PROTOCOL_VERSION", "HKDF_SALT", "AAD_PREFIX", "X25519_SPKI_PREFIX", "MAX_PAYLOAD_BYTES"):
        assert getattr(launcher, name) == getattr(protocol, name), name
    assert launcher.MAX_COMM_BYTES == protocol.MAX_COMM_BYTES


# ------------------------------------------------------------------------------------------ rejections


@pytest.mark.parametrize("field", ["ciphertext", "tag", "nonce"])
def test_tampered_field_fails_authentication(launcher: ModuleType, server_key: ServerKey, field: str) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    tampered = edit_envelope(raw, **{field: flip_first_byte(json.loads(raw)[field])})
    with pytest.raises(ProtocolError, match="failed authentication"):
        server_key.open_payload(tampered)


def test_substituted_ephemeral_key_fails_authentication(launcher: ModuleType, server_key: ServerKey) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    other_epk = ServerKey.generate().public_key  # a valid X25519 key, just not the one used
    with pytest.raises(ProtocolError, match="failed authentication"):
        server_key.open_payload(edit_envelope(raw, epk=other_epk))


@pytest.mark.parametrize(
    "epk",
    [
        "",
        "bm90IGEga2V5",  # "not a key"
        base64.b64encode(bytes.fromhex("302a300506032b656e032100") + bytes(32)).decode(),  # low-order point
        base64.b64encode(bytes.fromhex("302a300506032b656e032100") + (1).to_bytes(32, "little")).decode(),
        base64.b64encode(
            bytes.fromhex("302a300506032b6570032100") + bytes(range(32))
        ).decode(),  # Ed25519 OID
    ],
)
def test_invalid_ephemeral_key_is_rejected(launcher: ModuleType, server_key: ServerKey, epk: str) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    with pytest.raises(ProtocolError, match="epk"):
        server_key.open_payload(edit_envelope(raw, epk=epk))


def test_payload_moved_to_another_kernel_id_fails_authentication(
    launcher: ModuleType, server_key: ServerKey
) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    with pytest.raises(ProtocolError, match="failed authentication"):
        server_key.open_payload(edit_envelope(raw, kernel_id="another-kernel"))


def test_plaintext_for_another_kernel_is_rejected(launcher: ModuleType, server_key: ServerKey) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info(kernel_id="another-kernel"))
    with pytest.raises(ProtocolError, match="does not match envelope kernel_id"):
        server_key.open_payload(raw)


def test_payload_for_a_foreign_server_key_is_rejected(launcher: ModuleType, server_key: ServerKey) -> None:
    raw = launcher.seal_payload(ServerKey.generate().public_key, KERNEL_ID, connection_info())
    with pytest.raises(ProtocolError, match="failed authentication"):
        server_key.open_payload(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe",
        b"not json",
        b"[]",
        b'"text"',
        b"{}",
        b"null",
        b'{"version": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": 2, "kernel_id": "k"}',
        b'{"version": 2, "kernel_id": "", "epk": "", "nonce": "", "ciphertext": "", "tag": ""}',
        b'{"version": 2, "kernel_id": "k\\n", "epk": "", "nonce": "", "ciphertext": "", "tag": ""}',
        b'{"version": 2, "kernel_id": 7, "epk": "", "nonce": "", "ciphertext": "", "tag": ""}',
        b'{"version": 2, "kernel_id": "k", "epk": "@@", "nonce": "AAAA", "ciphertext": "", "tag": ""}',
        b'{"version": 2, "kernel_id": "k", "epk": "", "nonce": "\xc3\xa9", "ciphertext": "", "tag": ""}',
    ],
)
def test_garbage_is_rejected(server_key: ServerKey, raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        server_key.open_payload(raw)


@pytest.mark.parametrize("version", [None, 0, 1, 3, "2", 2.0, True, [2]])
def test_unknown_version_is_rejected(launcher: ModuleType, server_key: ServerKey, version: Any) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        server_key.open_payload(edit_envelope(raw, version=version))


def test_oversize_payload_is_rejected_before_parsing(server_key: ServerKey) -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        server_key.open_payload(b" " * (MAX_PAYLOAD_BYTES + 1))


def test_unexpected_kernel_is_rejected_before_any_cryptography(server_key: ServerKey) -> None:
    asked: list[str] = []

    def expected(kernel_id: str) -> bool:
        asked.append(kernel_id)
        return False

    # Nothing here could be decrypted: the rejection must come from the kernel id alone.
    raw = json.dumps({"version": 2, "kernel_id": "k", "epk": "", "nonce": "", "ciphertext": "", "tag": ""})
    with pytest.raises(ProtocolError, match="no launch of kernel k is pending"):
        server_key.open_payload(raw.encode(), expected=expected)
    assert asked == ["k"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"launch_token": ...}, "launch_token"),
        ({"launch_token": 1234}, "launch_token"),
        ({"shell_port": 0}, "shell_port"),
        ({"iopub_port": 65536}, "iopub_port"),
        ({"stdin_port": "40003"}, "stdin_port"),
        ({"control_port": True}, "control_port"),
        ({"hb_port": 40005.0}, "hb_port"),
        ({"comm_port": ...}, "comm_port"),
        ({"comm_port": 40001}, "not distinct"),
        ({"ip": "kernel.example.com"}, "ip must be an IP address"),
        ({"ip": None}, "ip must be an IP address"),
        ({"key": ""}, "key"),
        ({"key": "k" * 2000}, "key"),
        ({"transport": "ipc"}, "transport"),
        ({"signature_scheme": "sha256"}, "signature_scheme"),
        ({"signature_scheme": "hmac-nothing"}, "signature_scheme"),
        ({"kernel_name": 3}, "kernel_name"),
        ({"pid": -1}, "pid"),
        ({"pid": 0}, "pid"),
        ({"pgid": -1}, "pgid"),
        ({"pgid": "1"}, "pgid"),
    ],
)
def test_invalid_connection_info_is_rejected(
    launcher: ModuleType, server_key: ServerKey, overrides: dict[str, Any], reason: str
) -> None:
    raw = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info(**overrides))
    with pytest.raises(ProtocolError, match=reason):
        server_key.open_payload(raw)


def test_a_launcher_in_its_own_pid_namespace_is_accepted(launcher: ModuleType, server_key: ServerKey) -> None:
    # pid 1 with pgid 0: the group's leader is outside the launcher's PID namespace.
    info = connection_info(pid=1, pgid=0)
    _, plaintext = server_key.open_payload(launcher.seal_payload(server_key.public_key, KERNEL_ID, info))
    assert (plaintext["pid"], plaintext["pgid"]) == (1, 0)


def test_optional_fields_may_be_absent(launcher: ModuleType, server_key: ServerKey) -> None:
    info = connection_info(pid=..., pgid=None, kernel_name=...)
    _, plaintext = server_key.open_payload(launcher.seal_payload(server_key.public_key, KERNEL_ID, info))
    assert plaintext["kernel_name"] == ""
    assert plaintext.get("pid") is None and plaintext["pgid"] is None


def test_random_mutations_only_ever_raise_protocol_error(launcher: ModuleType, server_key: ServerKey) -> None:
    """Property: whatever a hostile peer does to a valid envelope, the server answers ProtocolError."""
    rng = random.Random(20240601)
    valid = launcher.seal_payload(server_key.public_key, KERNEL_ID, connection_info())
    replacements: list[Any] = [None, True, 0, -1, 2**70, 1e308, "", "A" * 5000, [], {}, "==", "\u2603"]
    for _ in range(400):
        kind = rng.randrange(4)
        if kind == 0:  # flip bits anywhere in the bytes
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            raw = bytes(data)
        elif kind == 1:  # truncate
            raw = valid[: rng.randrange(len(valid))]
        elif kind == 2:  # swap a field for a value of the wrong type or size
            envelope = json.loads(valid)
            envelope[rng.choice(list(envelope))] = rng.choice(replacements)
            raw = json.dumps(envelope).encode()
        else:  # drop a field
            envelope = json.loads(valid)
            del envelope[rng.choice(list(envelope))]
            raw = json.dumps(envelope).encode()
        if raw == valid:
            continue
        try:
            server_key.open_payload(raw)
        except ProtocolError:
            continue
        # A bit flip inside base64 padding or JSON whitespace can leave the payload intact.
        assert json.loads(raw) == json.loads(valid) or _same_decoded(raw, valid)


def _same_decoded(raw: bytes, valid: bytes) -> bool:
    mutated, original = json.loads(raw), json.loads(valid)
    fields = ("epk", "nonce", "ciphertext", "tag")
    return all(base64.b64decode(mutated[f]) == base64.b64decode(original[f]) for f in fields)


# ------------------------------------------------------------------------------------------ tokens, ranges


def test_launch_tokens_are_32_hex_characters_and_unique() -> None:
    tokens = {new_launch_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0..0", (0, 0)),
        ("40000..41000", (40000, 41000)),
        (" 1024..2024 ", (1024, 2024)),
        ("1024..65535", (1024, 65535)),
        ("40000..40000", (0, 0)),  # Gateway Provisioners' N..N: a range of size 0, no restriction
    ],
)
def test_parse_port_range_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("40000-41000", "malformed; use 'LOW..HIGH'"),
        ("", "malformed"),
        ("40000..", "malformed"),
        ("a..b", "malformed"),
        ("40000...41000", "malformed"),
        ("-1..1000", "malformed"),
        ("40000..41000..42000", "malformed"),
        ("41000..40000", "1024 <= LOW < HIGH <= 65535"),
        ("80..2000", "1024 <= LOW < HIGH <= 65535"),
        ("40000..70000", "1024 <= LOW < HIGH <= 65535"),
        ("0..1000", "1024 <= LOW < HIGH <= 65535"),
        ("80..80", "1024 <= LOW < HIGH <= 65535"),
        ("1024..2000", "at least 1000"),
    ],
)
def test_parse_port_range_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidOptionError, match=reason) as caught:
        parse_port_range(text)
    assert repr(text) in str(caught.value)


def test_parse_port_range_rejects_non_text() -> None:
    with pytest.raises(InvalidOptionError, match="malformed"):
        parse_port_range(None)  # type: ignore[arg-type]


def test_parse_port_range_minimum_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_port_range("40000..40010", min_size=10) == (40000, 40010)
    with pytest.raises(InvalidOptionError, match="at least 11"):
        parse_port_range("40000..40010", min_size=11)
    monkeypatch.setenv("GP_MIN_PORT_RANGE_SIZE", "5")
    assert parse_port_range("40000..40005") == (40000, 40005)
    monkeypatch.setenv("GP_MIN_PORT_RANGE_SIZE", "lots")
    with pytest.raises(InvalidOptionError, match="GP_MIN_PORT_RANGE_SIZE"):
        parse_port_range("40000..41000")


# ------------------------------------------------------------------------------------------ comm client

Handler = Callable[[bytes], Awaitable[bytes | None]]


@pytest.fixture
async def comm_peer() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """A one-request TCP peer on 127.0.0.1 answering with what ``handler`` returns (None = stay silent)."""
    servers: list[asyncio.Server] = []
    release = asyncio.Event()

    async def start(handler: Handler) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            reply = await handler(await reader.readline())
            if reply is None:
                await release.wait()  # silent until the test ends
            else:
                writer.write(reply)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    release.set()
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.sleep(0)  # let released handlers finish


async def test_comm_request_signs_the_body_as_the_spec_says(comm_peer: Any) -> None:
    seen: list[dict[str, Any]] = []

    async def check(line: bytes) -> bytes:
        request = json.loads(line)
        expected = hmac.new(b"kernel-key", request["body"].encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request["sig"], expected)
        seen.append(json.loads(request["body"]))
        return b'{"ok": true, "pid": 99}\n'

    port = await comm_peer(check)
    assert await comm_request("127.0.0.1", port, "kernel-key", "signal", signum=2) == {"ok": True, "pid": 99}
    assert await comm_request("127.0.0.1", port, b"kernel-key", "ping") == {"ok": True, "pid": 99}
    assert [body["op"] for body in seen] == ["signal", "ping"]
    assert seen[0]["signum"] == 2 and "signum" not in seen[1]
    assert seen[0]["nonce"] != seen[1]["nonce"]
    assert all(isinstance(body["ts"], float) for body in seen)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b'{"ok": false, "error": "bad signature"}\n', "bad signature"),
        (b"garbage\n", "not valid UTF-8 JSON"),
        (b"", "not valid UTF-8 JSON"),
        (b'["ok"]\n', "must be a JSON object"),
        (b'{"ok": "yes"}\n', "no reason given"),
        (b"x" * 5000, "exceeds"),
    ],
)
async def test_comm_request_rejects_bad_replies(comm_peer: Any, reply: bytes, reason: str) -> None:
    async def answer(_line: bytes) -> bytes:
        return reply

    port = await comm_peer(answer)
    with pytest.raises(ProtocolError, match=reason):
        await comm_request("127.0.0.1", port, "k", "ping")


async def test_comm_request_times_out_on_a_silent_peer(comm_peer: Any) -> None:
    async def silent(_line: bytes) -> None:
        return None

    port = await comm_peer(silent)
    with pytest.raises(TimeoutError):
        await comm_request("127.0.0.1", port, "k", "ping", timeout=0.2)


async def test_comm_request_to_a_closed_port_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        await comm_request("127.0.0.1", port, "k", "ping")


async def test_comm_request_signal_needs_signum() -> None:
    with pytest.raises(ValueError, match="signum"):
        await comm_request("127.0.0.1", 9, "k", "signal")
