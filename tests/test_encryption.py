"""CurveZMQ transport encryption (jupyter_client's transport_encryption) with real gp kernels."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import zmq
from jupyter_client.blocking import BlockingKernelClient

from gp_core import encryption
from gp_core.errors import LaunchError
from gp_core.testing import (
    execute,
    interrupt_sleep,
    kernel_manager,
    r_launcher_argv,
    start_kernel,
    write_kernelspec,
)

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq without CurveZMQ (libsodium)")


def curve_spec(tmp_path, name="k", declare=True, **kwargs):
    write_kernelspec(tmp_path, name, backend="local", **kwargs)
    spec_file = tmp_path / name / "kernel.json"
    spec = json.loads(spec_file.read_text())
    if declare:
        spec["metadata"]["supported_encryption"] = ["curve"]
    spec_file.write_text(json.dumps(spec))
    return tmp_path


def _silent_client(info: dict, **overrides) -> bool:
    """Whether a client with ``info`` (plus ``overrides``; None drops a key) gets no kernel_info reply."""
    info = {**info, **overrides}
    info = {k: v for k, v in info.items() if v is not None}
    client = BlockingKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    try:
        client.kernel_info()
        try:
            client.get_shell_msg(timeout=3)
        except Exception:  # queue.Empty: nothing came back
            return True
        return False
    finally:
        client.stop_channels()


async def test_required_encryption_runs_an_encrypted_kernel_that_keyless_clients_cannot_talk_to(tmp_path):
    km = kernel_manager(curve_spec(tmp_path), "k", transport_encryption="required")
    await start_kernel(km)
    try:
        info = km.get_connection_info()
        public, secret = info["curve_publickey"], info["curve_secretkey"]
        assert len(public) == 40 and zmq.curve_public(secret.encode()) == public.encode()  # a real pair
        output, _ = await execute(km, "print(6 * 7)")
        assert output == "42\n"
        reply = await interrupt_sleep(km)
        assert reply["ename"] == "KeyboardInterrupt"
        plain = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
        # Without the keys, or with a wrong server key, the kernel never answers.
        assert _silent_client(plain, curve_publickey=None, curve_secretkey=None)
        other_public, other_secret = zmq.curve_keypair()
        assert _silent_client(
            plain, curve_publickey=other_public.decode(), curve_secretkey=other_secret.decode()
        )
        assert not _silent_client(plain)  # the same client with the kernel's keys is answered

        await km.restart_kernel()
        restarted = km.get_connection_info()
        assert restarted["curve_publickey"] != public  # a fresh pair per launch, from the launcher
        output, _ = await execute(km, "print('again')")
        assert output == "again\n"
    finally:
        await km.shutdown_kernel(now=True)


async def test_auto_encrypts_a_declaring_kernelspec_and_not_another(tmp_path):
    km = kernel_manager(curve_spec(tmp_path), "k", transport_encryption="auto")
    await start_kernel(km)
    try:
        assert km.get_connection_info().get("curve_publickey")
    finally:
        await km.shutdown_kernel(now=True)
    km = kernel_manager(curve_spec(tmp_path, "plain", declare=False), "plain", transport_encryption="auto")
    await start_kernel(km)
    try:
        assert km.get_connection_info().get("curve_publickey") is None
        output, _ = await execute(km, "print(1)")
        assert output == "1\n"
    finally:
        await km.shutdown_kernel(now=True)


async def test_disabled_is_plain_zmq(tmp_path):
    km = kernel_manager(curve_spec(tmp_path), "k")
    await start_kernel(km)
    try:
        assert km.get_connection_info().get("curve_publickey") is None
    finally:
        await km.shutdown_kernel(now=True)


async def test_required_refuses_a_kernelspec_without_supported_encryption(tmp_path):
    km = kernel_manager(curve_spec(tmp_path, declare=False), "k", transport_encryption="required")
    with pytest.raises(RuntimeError, match="supported_encryption"):
        await start_kernel(km)


async def test_required_fails_a_kernel_that_does_not_encrypt(tmp_path):
    """An R kernel (IRkernel has no CurveZMQ) whose spec claims curve anyway: the launch fails, nothing runs."""
    from gp_core.testing import r_kernel_missing

    if r_kernel_missing():
        pytest.skip("needs R + IRkernel for a kernel without CurveZMQ")
    spec_dir = curve_spec(tmp_path, argv=r_launcher_argv(sys.executable), language="R")
    km = kernel_manager(spec_dir, "k", transport_encryption="required")
    with pytest.raises(LaunchError, match="did not enable CurveZMQ"):
        await start_kernel(km)


def test_reported_keys_are_validated(caplog):
    public, secret = (k.decode() for k in zmq.curve_keypair())
    other_public, _ = (k.decode() for k in zmq.curve_keypair())
    base = {"ip": "127.0.0.1", "key": b"k"}
    log = logging.getLogger("test")
    info = encryption.apply(
        {**base, "curve_publickey": public, "curve_secretkey": secret}, "required", True, None, "k1", log
    )
    assert info["curve_publickey"] == public
    for bad, why in (
        ({"curve_publickey": public}, "40-character Z85"),
        ({"curve_publickey": public, "curve_secretkey": "x" * 39}, "40-character Z85"),
        ({"curve_publickey": other_public, "curve_secretkey": secret}, "not the public key"),
        ({"curve_publickey": public[:-1] + "\n", "curve_secretkey": secret}, "40-character Z85"),
    ):
        with pytest.raises(LaunchError, match=why):
            encryption.apply({**base, **bad}, "auto", True, None, "k1", log)
    with caplog.at_level(logging.WARNING):
        plain = encryption.apply(dict(base), "auto", True, None, "k1", log)
    assert "curve_publickey" not in plain and "runs unencrypted" in caplog.text
    # Keys the kernel was not asked for are dropped (and stale ones on the kernel manager purged).

    class Manager:
        curve_publickey = b"stale"
        curve_secretkey = b"stale"

    manager = Manager()
    unasked = encryption.apply(
        {**base, "curve_publickey": public, "curve_secretkey": secret}, "disabled", False, manager, "k1", log
    )
    assert "curve_publickey" not in unasked and manager.curve_publickey is None
