"""A launcher speaking Gateway Provisioners' protocol fails its launch at once, saying so, instead of
timing out; when its launch cannot be identified, the listener logs what it saw."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from Cryptodome.Cipher import AES
from Cryptodome.PublicKey import RSA

from gp_core import LaunchError, LaunchTimeoutError
from gp_core._anchor_venv import anchor_venv
from gp_core._legacy_launcher import EMPTY, V0, V1, recognise
from gp_core.launcher import PLACEHOLDER_ARGS
from gp_core.listener import ResponseListener
from gp_core.testing import kernel_manager, start_kernel, write_kernelspec

SAFETY_TIMEOUT = 30


@pytest.fixture
async def listener(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ResponseListener]:
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    listener = await ResponseListener.instance()
    try:
        yield listener
    finally:
        await listener.close()


@pytest.fixture(scope="module")
def anchor_launchers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The anchor's python launcher, assembled as its image-bootstrap does (the shared listener beside it)."""
    package = next((anchor_venv() / "lib").glob("python3*/site-packages")) / "gateway_provisioners"
    target = tmp_path_factory.mktemp("anchor-launcher")
    shutil.copy2(package / "kernel-launchers/python/scripts/launch_ipykernel.py", target)
    shutil.copy2(package / "kernel-launchers/shared/scripts/server_listener.py", target)
    return target


@pytest.fixture(scope="module")
def anchor_listener(anchor_launchers: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "anchor_server_listener", anchor_launchers / "server_listener.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchor_v1_payload(anchor_listener: ModuleType, connection_info: dict[str, Any]) -> bytes:
    """What the anchor's 0.5.0 launcher sends, encrypted by its own code to an RSA key of another server."""
    sender = object.__new__(anchor_listener.ServerListener)
    der = RSA.generate(1024).public_key().export_key(format="DER")
    sender.public_key = base64.b64encode(der)
    return bytes(sender._encrypt(json.dumps(connection_info).encode()))


def anchor_v0_payload(kernel_id: str, connection_info: dict[str, Any]) -> bytes:
    """The legacy format: AES-ECB keyed by kernel_id[:16], padded with spaces (the anchor cut at the last '}')."""
    text = json.dumps(connection_info).encode()
    text += b" " * (-len(text) % 16)
    return base64.b64encode(AES.new(kernel_id[:16].encode(), AES.MODE_ECB).encrypt(text))


CONNECTION = {
    "shell_port": 1,
    "iopub_port": 2,
    "stdin_port": 3,
    "control_port": 4,
    "hb_port": 5,
    "ip": "0.0.0.0",
}


async def deliver(listener: ResponseListener, data: bytes) -> dict[str, Any]:
    host, port = listener.response_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), SAFETY_TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    return json.loads(raw)


def test_formats_are_recognised(anchor_listener: ModuleType) -> None:
    assert recognise(b"") == EMPTY
    assert recognise(anchor_v1_payload(anchor_listener, CONNECTION)) == V1
    assert recognise(anchor_v0_payload("0123456789abcdef-x", CONNECTION)) == V0
    assert recognise(b'{"version": 2, "kernel_id": "k"}') is None  # gp's own envelope
    assert recognise(b"GET / HTTP/1.1\r\n\r\n") is None


async def test_a_v0_payload_names_its_kernel_and_fails_that_launch(listener: ResponseListener) -> None:
    kernel_id = "5d5e8d42-8a1f-4c0e-9d7c-1f2e3d4c5b6a"
    other = listener.register("other-kernel-id-0000")
    pending = listener.register(kernel_id)
    reply = await deliver(listener, anchor_v0_payload(kernel_id, CONNECTION))
    assert reply["ok"] is False and "legacy Gateway Provisioners payload" in reply["error"]
    with pytest.raises(LaunchError, match="carries Gateway Provisioners' launcher"):
        await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)
    assert not other.future.done()  # only the kernel it named


async def test_an_empty_connection_from_the_kernels_address_fails_its_launch(
    listener: ResponseListener,
) -> None:
    pending = listener.register("kernel-a")
    listener.expect_from("kernel-a", "127.0.0.1")
    await _connect_and_close(listener)
    with pytest.raises(LaunchError) as caught:
        await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)
    assert "closed without sending anything" in str(caught.value)
    assert "jupyter image-bootstrap install" in str(caught.value)


async def test_an_anchor_launcher_seen_before_its_address_is_known_still_fails_the_launch(
    listener: ResponseListener,
) -> None:
    pending = listener.register("kernel-b")
    await _connect_and_close(listener)
    assert not pending.future.done()
    listener.expect_from("kernel-b", "127.0.0.1")  # the backend's launch returned after the connection
    with pytest.raises(LaunchError):
        await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)


async def test_an_unidentifiable_anchor_payload_is_only_logged(
    listener: ResponseListener, anchor_listener: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = listener.register("kernel-c"), listener.register("kernel-d")
    listener.expect_from("kernel-c", "127.0.0.1")
    listener.expect_from("kernel-d", "127.0.0.1")  # two launches at one address: ambiguous
    reply = await deliver(listener, anchor_v1_payload(anchor_listener, CONNECTION))
    assert reply["ok"] is False
    assert "Gateway Provisioners 0.5.0 payload" in reply["error"]
    assert "no pending launch is known at that address" in reply["error"]
    await _connect_and_close(listener)
    await asyncio.sleep(0.1)
    assert not one.future.done() and not two.future.done()
    assert any("Gateway Provisioners" in r.getMessage() for r in caplog.records)


async def _connect_and_close(listener: ResponseListener) -> None:
    host, port = listener.response_address.rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write_eof()
    await asyncio.sleep(0.2)  # the listener reads EOF and answers
    writer.close()
    await writer.wait_closed()


async def test_the_real_anchor_launcher_fails_the_launch_at_once(
    tmp_path: Path, anchor_launchers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway Provisioners 0.5.0's own launcher, started by gp (local backend): a clear error in
    seconds, not the launch timeout blaming the network; nothing is left running."""
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    argv = [sys.executable, str(anchor_launchers / "launch_ipykernel.py"), *PLACEHOLDER_ARGS]
    # A long timeout: the launch must fail on what the listener saw, not by timing out.
    write_kernelspec(tmp_path, "anchor", backend="local", argv=argv, config={"launch_timeout": 240})
    km = kernel_manager(tmp_path, "anchor")
    with pytest.raises(LaunchError) as caught:
        await start_kernel(km)
    assert not isinstance(caught.value, LaunchTimeoutError)
    assert "carries Gateway Provisioners' launcher" in str(caught.value)
    assert "closed without sending anything" in str(caught.value)
    assert not km.has_kernel


async def test_base64_garbage_is_not_taken_for_a_legacy_launcher(listener: ResponseListener) -> None:
    """A "version 0" shape that opens with no pending kernel id fails nobody's launch, even from the
    address of a pending one: it is rejected like any garbage."""
    pending = listener.register("kernel-e")
    listener.expect_from("kernel-e", "127.0.0.1")
    reply = await deliver(listener, base64.b64encode(b"x" * 32))
    assert reply["ok"] is False and "not valid UTF-8 JSON" in reply["error"]
    await asyncio.sleep(0.1)
    assert not pending.future.done()
