"""The response listener, for real on 127.0.0.1, fed by the launcher's own encryption."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import socket
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
from jupyter_client.localinterfaces import public_ips
from traitlets import TraitError

from gp_core.errors import GPError
from gp_core.launcher import LAUNCHER_PATH
from gp_core.listener import LaunchReport, ResponseListener, server_key
from gp_core.protocol import MAX_PAYLOAD_BYTES

SAFETY_TIMEOUT = 30  # only guards against hangs; nothing here asserts on time


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gp_test_launch_ipykernel", LAUNCHER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def listener_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    return monkeypatch


@pytest.fixture
async def listener(listener_env: pytest.MonkeyPatch) -> AsyncIterator[ResponseListener]:
    listener = await ResponseListener.instance()
    try:
        yield listener
    finally:
        await listener.close()


def payload(
    launcher: ModuleType, listener: ResponseListener, kernel_id: str, token: str, **overrides: Any
) -> bytes:
    info = {
        "kernel_id": kernel_id,
        "launch_token": token,
        "shell_port": 40001,
        "iopub_port": 40002,
        "stdin_port": 40003,
        "control_port": 40004,
        "hb_port": 40005,
        "comm_port": 40006,
        "ip": "0.0.0.0",
        "key": "kernel-hmac-key",
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
        "pid": 1234,
        "pgid": 1230,
        **overrides,
    }
    return launcher.seal_payload(listener.public_key, kernel_id, info)


async def deliver(listener: ResponseListener, data: bytes, *, close_write: bool = True) -> dict[str, Any]:
    """Send ``data`` as a launcher does and return the listener's one-line answer."""
    host, port = listener.response_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), SAFETY_TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    assert raw.endswith(b"\n")
    return json.loads(raw)


async def launch_once(launcher: ModuleType, listener: ResponseListener, kernel_id: str) -> LaunchReport:
    pending = listener.register(kernel_id)
    assert await deliver(listener, payload(launcher, listener, kernel_id, pending.token)) == {"ok": True}
    return await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)


# ------------------------------------------------------------------------------------------ launches


async def test_valid_payload_resolves_the_launch(launcher: ModuleType, listener: ResponseListener) -> None:
    pending = listener.register("kernel-a")
    assert len(pending.token) == 32

    reply = await deliver(listener, payload(launcher, listener, "kernel-a", pending.token))

    assert reply == {"ok": True}
    report = await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)
    assert report == LaunchReport(
        kernel_id="kernel-a",
        connection_info={
            "shell_port": 40001,
            "iopub_port": 40002,
            "stdin_port": 40003,
            "control_port": 40004,
            "hb_port": 40005,
            "ip": "0.0.0.0",
            "key": "kernel-hmac-key",
            "transport": "tcp",
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        },
        comm_port=40006,
        pid=1234,
        pgid=1230,
        peer_ip="127.0.0.1",
    )
    assert "kernel-hmac-key" not in repr(report) and pending.token not in repr(pending)


async def test_listener_address_and_key(listener: ResponseListener) -> None:
    host, port = listener.response_address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert listener.public_key == server_key().public_key  # one key pair per process


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("wrong_token", "wrong launch token"),
        ("unknown_kernel", "no launch of kernel"),
        ("garbage", "not valid UTF-8 JSON"),
        ("tampered", "failed authentication"),
        ("oversize", "exceeds"),
        ("slow", "no complete payload within"),
        ("bad_ports", "hb_port"),
    ],
)
async def test_rejections_are_answered_and_the_listener_keeps_serving(
    launcher: ModuleType,
    listener_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    attack: str,
    reason: str,
) -> None:
    listener_env.setenv("GP_SOCKET_TIMEOUT", "0.5")
    listener = await ResponseListener.instance()
    try:
        pending = listener.register("victim")
        good = payload(launcher, listener, "victim", pending.token)
        if attack == "wrong_token":
            reply = await deliver(listener, payload(launcher, listener, "victim", "f" * 32))
        elif attack == "unknown_kernel":
            reply = await deliver(listener, payload(launcher, listener, "stranger", pending.token))
        elif attack == "garbage":
            reply = await deliver(listener, b"\x16\x03\x01 hello? \xff\xfe")
        elif attack == "tampered":
            envelope = json.loads(good)
            ciphertext = bytearray(base64.b64decode(envelope["ciphertext"]))
            ciphertext[0] ^= 0x01
            envelope["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
            reply = await deliver(listener, json.dumps(envelope).encode())
        elif attack == "oversize":
            reply = await deliver(listener, b" " * (MAX_PAYLOAD_BYTES + 1))
        elif attack == "slow":  # half-open: sends part of a payload, never finishes
            reply = await deliver(listener, good[:40], close_write=False)
        else:
            reply = await deliver(
                listener, payload(launcher, listener, "victim", pending.token, hb_port=70000)
            )

        assert reply["ok"] is False
        assert reason in reply["error"]
        assert not pending.future.done()  # an attacker cannot spoil a launch
        assert any(
            reason in record.getMessage() and "127.0.0.1" in record.getMessage() for record in caplog.records
        )

        assert await deliver(listener, good) == {"ok": True}
        report = await asyncio.wait_for(pending.future, SAFETY_TIMEOUT)
        assert report.kernel_id == "victim"
    finally:
        await listener.close()


async def test_replayed_payload_is_rejected(launcher: ModuleType, listener: ResponseListener) -> None:
    pending = listener.register("kernel-r")
    data = payload(launcher, listener, "kernel-r", pending.token)
    assert await deliver(listener, data) == {"ok": True}

    replay = await deliver(listener, data)

    assert replay["ok"] is False and "no launch of kernel kernel-r is pending" in replay["error"]
    await launch_once(launcher, listener, "kernel-after-replay")


async def test_register_replaces_and_unregister_cancels(
    launcher: ModuleType, listener: ResponseListener
) -> None:
    first = listener.register("kernel-x")
    second = listener.register("kernel-x")
    assert first.future.cancelled() and first.token != second.token

    stale = await deliver(listener, payload(launcher, listener, "kernel-x", first.token))
    assert stale["ok"] is False and "wrong launch token" in stale["error"]

    listener.unregister("kernel-x")
    assert second.future.cancelled()
    listener.unregister("kernel-x")  # idempotent
    listener.unregister("never-registered")
    late = await deliver(listener, payload(launcher, listener, "kernel-x", second.token))
    assert late["ok"] is False


async def test_unregister_after_the_report_keeps_the_result(
    launcher: ModuleType, listener: ResponseListener
) -> None:
    pending = listener.register("kernel-done")
    assert await deliver(listener, payload(launcher, listener, "kernel-done", pending.token)) == {"ok": True}
    listener.unregister("kernel-done")
    assert (await pending.future).kernel_id == "kernel-done"


async def test_many_concurrent_launches(launcher: ModuleType, listener: ResponseListener) -> None:
    reports = await asyncio.gather(*(launch_once(launcher, listener, f"kernel-{n}") for n in range(20)))
    assert [report.kernel_id for report in reports] == [f"kernel-{n}" for n in range(20)]


async def test_close_cancels_pending_launches(listener_env: pytest.MonkeyPatch) -> None:
    listener = await ResponseListener.instance()
    pending = listener.register("kernel-c")
    await listener.close()
    assert pending.future.cancelled()
    await listener.close()  # idempotent
    replacement = await ResponseListener.instance()
    try:
        assert replacement is not listener
    finally:
        await replacement.close()


# ------------------------------------------------------------------------------------------ instance


async def test_concurrent_first_calls_start_one_listener(listener_env: pytest.MonkeyPatch) -> None:
    listeners = await asyncio.gather(*(ResponseListener.instance() for _ in range(5)))
    try:
        assert all(listener is listeners[0] for listener in listeners)
        assert await ResponseListener.instance() is listeners[0]
    finally:
        await listeners[0].close()


def test_a_listener_of_a_closed_loop_is_replaced(listener_env: pytest.MonkeyPatch) -> None:
    first = asyncio.run(ResponseListener.instance())  # its loop closes with asyncio.run
    first_port = int(first.response_address.rsplit(":", 1)[1])

    async def second_loop() -> ResponseListener:
        listener = await ResponseListener.instance()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", first_port))  # the abandoned listener released its port
        await listener.close()
        return listener

    assert asyncio.run(second_loop()) is not first


async def test_parent_lends_config(listener_env: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config, LoggingConfigurable

    listener_env.delenv("GP_SOCKET_TIMEOUT", raising=False)
    parent = LoggingConfigurable(config=Config({"ResponseListener": {"socket_timeout": 1.5}}))
    listener = await ResponseListener.instance(parent=parent)
    try:
        assert listener.socket_timeout == 1.5
        assert listener.parent is None  # the listener outlives any one kernel's provisioner
    finally:
        await listener.close()


# ------------------------------------------------------------------------------------------ ports


async def test_port_retry_when_the_port_is_taken(listener_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        listener_env.setenv("GP_RESPONSE_PORT", str(busy_port))
        listener_env.setenv("GP_RESPONSE_PORT_RETRIES", "10")
        listener = await ResponseListener.instance()
        try:
            port = int(listener.response_address.rsplit(":", 1)[1])
            assert port != busy_port and abs(port - busy_port) <= 20
        finally:
            await listener.close()


async def test_no_retries_left_is_a_clear_error(listener_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        listener_env.setenv("GP_RESPONSE_PORT", str(busy_port))
        listener_env.setenv("GP_RESPONSE_PORT_RETRIES", "0")
        with pytest.raises(GPError, match=f"no free port.*{busy_port}.*GP_RESPONSE_PORT"):
            await ResponseListener.instance()


def test_candidate_ports(listener_env: pytest.MonkeyPatch) -> None:
    listener = ResponseListener(response_port=8877, response_port_retries=10)
    ports = listener._candidate_ports()
    assert ports[:5] == [8877, 8878, 8879, 8880, 8881]
    assert len(ports) == 11 and all(8857 <= port <= 8897 for port in ports[5:])
    assert ResponseListener(response_port=0)._candidate_ports() == [0]
    assert ResponseListener(response_port=65535, response_port_retries=3)._candidate_ports() == [65535]


async def test_addr_any_listens_everywhere_but_advertises_response_ip(
    listener_env: pytest.MonkeyPatch,
) -> None:
    listener_env.setenv("GP_RESPONSE_ADDR_ANY", "true")
    listener = await ResponseListener.instance()
    try:
        assert listener.response_address.startswith("127.0.0.1:")
        assert listener._sock is not None and listener._sock.getsockname()[0] == "0.0.0.0"
        assert (await deliver(listener, b"{}"))["ok"] is False  # reachable through 127.0.0.1
    finally:
        await listener.close()


# ------------------------------------------------------------------------------------------ options


def test_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": "9999",
        "GP_RESPONSE_PORT_RETRIES": "3",
        "GP_RESPONSE_ADDR_ANY": "yes",
        "GP_PROHIBITED_LOCAL_IPS": "10\\..*, 172\\.17\\..*",
        "GP_SOCKET_TIMEOUT": "2.5",
    }.items():
        monkeypatch.setenv(name, value)
    listener = ResponseListener()
    assert (listener.response_ip, listener.response_port, listener.response_port_retries) == (
        "127.0.0.1",
        9999,
        3,
    )
    assert listener.response_addr_any is True
    assert listener.prohibited_local_ips == ["10\\..*", "172\\.17\\..*"]
    assert listener.socket_timeout == 2.5


def test_plain_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GP_RESPONSE_PORT", "GP_RESPONSE_PORT_RETRIES", "GP_RESPONSE_ADDR_ANY", "GP_SOCKET_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    listener = ResponseListener()
    assert (listener.response_port, listener.response_port_retries) == (8877, 10)
    assert listener.response_addr_any is False and listener.socket_timeout == 5.0


def test_default_response_ip_skips_prohibited_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GP_RESPONSE_IP", raising=False)
    candidates = [ip for ip in public_ips() if ":" not in ip]
    everything = ResponseListener(prohibited_local_ips=[".*"])
    assert everything.response_ip == "127.0.0.1"
    if candidates:
        assert ResponseListener(prohibited_local_ips=[]).response_ip == candidates[0]
        skip_first = ResponseListener(prohibited_local_ips=[candidates[0].replace(".", "\\.") + "$"])
        assert skip_first.response_ip == (candidates[1] if len(candidates) > 1 else "127.0.0.1")


def test_invalid_options_are_refused() -> None:
    with pytest.raises(TraitError, match="not a regular expression"):
        ResponseListener(prohibited_local_ips=["("])
    with pytest.raises(TraitError):
        ResponseListener(response_port=70000)
    with pytest.raises(TraitError, match="positive"):
        ResponseListener(socket_timeout=0)


# ------------------------------------------------------------------------------------------ floods

FLOODER = r"""
import json, selectors, socket, sys, time
host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
selector = selectors.DefaultSelector()
opened = shed = 0
end = time.monotonic() + seconds

def open_one():
    global opened
    sock = socket.socket()
    sock.settimeout(1.0)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        return
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
    opened += 1

for _ in range(count):
    open_one()
print("holding", flush=True)
while time.monotonic() < end:
    for key, _ in selector.select(0.05):  # closed on us: come back, at most `count` at a time
        selector.unregister(key.fileobj)
        key.fileobj.close()
        shed += 1
        open_one()
print(json.dumps({"opened": opened, "shed": shed, "held": len(selector.get_map())}), flush=True)
"""


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


async def test_a_flood_of_idle_connections_is_shed_and_real_launches_go_on(
    listener_env: pytest.MonkeyPatch, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # One client holding ~1,300 idle connections used to exhaust the server's file descriptors: the
    # server then could not start a kernel ("Too many open files"). The server gets a tight limit here.
    import resource
    import subprocess
    import sys

    from gp_core.testing import execute, kernel_manager, start_kernel, write_kernelspec

    listener_env.setenv("GP_SOCKET_TIMEOUT", "5")
    listener = await ResponseListener.instance()
    host, port = listener.response_address.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _open_fds() + 700
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, host, port, "1300", "20", stdout=subprocess.PIPE
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, soft), hard))
    try:
        assert flooder.stdout is not None
        assert await asyncio.wait_for(flooder.stdout.readline(), SAFETY_TIMEOUT) == b"holding\n"
        await asyncio.sleep(1.0)
        assert _open_fds() < limit - 300  # the excess was shed at once, not held for socket_timeout

        write_kernelspec(tmp_path / "kernels", "k", backend="local")
        km = kernel_manager(tmp_path / "kernels", "k")
        await start_kernel(km)  # its launcher reports through the flooded listener
        try:
            output, _ = await execute(km, "print(6 * 7)")
            assert output == "42\n"
        finally:
            await km.shutdown_kernel(now=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if flooder.returncode is None:
            flooder.kill()
        await flooder.wait()
        await listener.close()
    assert not any("out of system resource" in record.getMessage() for record in caplog.records)
    shed_logs = [record for record in caplog.records if "listener shed" in record.getMessage()]
    assert 1 <= len(shed_logs) <= 5  # reported, not once per connection


async def test_one_source_cannot_take_every_slot(
    launcher: ModuleType, listener_env: pytest.MonkeyPatch
) -> None:
    listener_env.setenv("GP_RESPONSE_MAX_CONNECTIONS_PER_SOURCE", "4")
    listener = await ResponseListener.instance()
    host, port = listener.response_address.rsplit(":", 1)
    try:
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(12)]
        await asyncio.sleep(0.2)
        assert listener.connections_reading <= 4
        assert await launch_once(launcher, listener, "kernel-in-a-flood")  # the newcomer is served
        for _, writer in idle:
            writer.close()
    finally:
        await listener.close()


@pytest.mark.parametrize("forged", ["\x85", "\u2028", "\u2029", "\x9b", "\x1b[2J", "\r\n"])
async def test_hostile_text_is_escaped_in_logs_and_replies(
    launcher: ModuleType, listener: ResponseListener, caplog: pytest.LogCaptureFixture, forged: str
) -> None:
    kernel_id = f"k{forged}2026-12-01 00:00:00 CRITICAL forged line"
    envelope = json.loads(payload(launcher, listener, "k", "t" * 32))
    envelope["kernel_id"] = kernel_id
    reply = await deliver(listener, json.dumps(envelope).encode())
    assert reply["ok"] is False
    messages = [record.getMessage() for record in caplog.records if "rejected" in record.getMessage()]
    assert messages
    for text in [*messages, reply["error"]]:
        assert forged not in text and not any(not char.isprintable() for char in text), text


async def test_attacker_text_is_truncated_in_logs_and_replies(
    launcher: ModuleType, listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = json.loads(payload(launcher, listener, "k", "t" * 32))
    envelope["version"] = "v" * 60000
    reply = await deliver(listener, json.dumps(envelope).encode())
    assert reply["ok"] is False and "version" in reply["error"]
    assert len(reply["error"]) < 1000
    assert all(len(record.getMessage()) < 1000 for record in caplog.records)
