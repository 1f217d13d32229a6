"""The real launcher (launch_ipykernel.py) as a subprocess against a real response listener, plus its comm port.

Nothing here asserts on time: timeouts only stop a broken kernel from hanging the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient

from gp_core.errors import ProtocolError
from gp_core.launcher import LAUNCHER_PATH
from gp_core.listener import LaunchReport, PendingLaunch, ResponseListener
from gp_core.protocol import ZMQ_PORT_FIELDS, comm_request, sign_comm_request

TIMEOUT = 60
LAUNCHER_ENV = (
    "KERNEL_ID",
    "RESPONSE_ADDRESS",
    "PUBLIC_KEY",
    "PORT_RANGE",
    "GP_LAUNCH_TOKEN",
    "JPY_PARENT_PID",
)

FAKE_PYSPARK = '''
"""Just enough of pyspark for the launcher's Spark namespace."""
import os


class _Context:
    name = "fake-spark-context"

    def cancelAllJobs(self):
        with open(os.environ["FAKE_SPARK_CANCEL_FILE"], "a") as marker:
            marker.write("cancelled\\n")


class _Session:
    sparkContext = _Context()

    def sql(self, query):
        return "sql:" + query


class _Builder:
    def getOrCreate(self):
        return _Session()


class SparkSession:
    builder = _Builder()
'''


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gp_test_launch_ipykernel", LAUNCHER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def listener(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ResponseListener]:
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    listener = await ResponseListener.instance()
    try:
        yield listener
    finally:
        await listener.close()


class Launches:
    """Starts launcher processes and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.connections = tmp_path / "connections"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: list[str],
        *,
        token: str | None,
        env: dict[str, str] | None = None,
        name: str = "launcher",
    ) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
        # As the backends do: a killed launcher's connection directory (the kernel's key) stays in here.
        self.connections.mkdir(exist_ok=True)
        base["GP_CONNECTION_DIR"] = str(self.connections)
        if token is not None:
            base["GP_LAUNCH_TOKEN"] = token
        with (
            open(self.tmp_path / f"{name}.out", "wb") as out,
            open(self.tmp_path / f"{name}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, str(LAUNCHER_PATH), *args],
                stdout=out,
                stderr=err,
                env={**base, **(env or {})},
            )
        self.procs.append(proc)
        return proc

    def launch(
        self, listener: ResponseListener, kernel_id: str, *args: str, token: str | None = None, **kwargs: Any
    ) -> tuple[subprocess.Popen[bytes], PendingLaunch]:
        pending = listener.register(kernel_id)
        argv = [
            "--kernel-id",
            kernel_id,
            "--response-address",
            listener.response_address,
            "--public-key",
            listener.public_key,
            "--ip",
            "127.0.0.1",
            *args,
        ]
        return self.start(argv, token=pending.token if token is None else token, **kwargs), pending

    def stderr(self, name: str = "launcher") -> str:
        """What the named launcher wrote to stderr."""
        return (self.tmp_path / f"{name}.err").read_text(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def launches(tmp_path: Path) -> Iterator[Launches]:
    launches = Launches(tmp_path)
    try:
        yield launches
    finally:
        launches.kill_all()


async def wait_report(
    pending: PendingLaunch, proc: subprocess.Popen[bytes], launches: Launches, name: str = "launcher"
) -> LaunchReport:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done, _ = await asyncio.wait({pending.future}, timeout=0.1)
        if done:
            return pending.future.result()
        if proc.poll() is not None:
            pytest.fail(f"launcher exited with {proc.returncode} before reporting:\n{launches.stderr(name)}")
    pytest.fail(f"no report within {TIMEOUT} s:\n{launches.stderr(name)}")


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    return await asyncio.to_thread(proc.wait, TIMEOUT)


async def connect(report: LaunchReport) -> AsyncKernelClient:
    client = AsyncKernelClient()
    client.load_connection_info(report.connection_info)
    client.start_channels()
    await client.wait_for_ready(timeout=TIMEOUT)
    return client


async def run(client: AsyncKernelClient, code: str) -> tuple[str, dict[str, Any]]:
    output: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            output.append(msg["content"]["text"])

    reply = await client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
    return "".join(output), reply["content"]


async def interrupt_sleep(client: AsyncKernelClient, report: LaunchReport) -> dict[str, Any]:
    """Run a long sleep, interrupt it through the comm port, return the execute_reply content."""
    msg_id = client.execute("import time; print('sleeping', flush=True); time.sleep(60)")
    while True:  # signal only once the cell runs, when SIGINT raises KeyboardInterrupt
        msg = await client.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    key = report.connection_info["key"]
    reply = await comm_request("127.0.0.1", report.comm_port, key, "signal", signum=signal.SIGINT)
    assert reply["ok"] is True and reply["pid"] == report.pid
    while True:
        msg = await client.get_shell_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]


async def raw_comm(port: int, data: bytes, *, close_write: bool = True) -> dict[str, Any] | None:
    """Send ``data`` to a comm port; the one-line answer, or None when the port closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    except OSError:  # closed on us before or while we wrote (reset, or ENOTCONN at write_eof)
        raw = b""
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return json.loads(raw) if raw else None


def signed_line(key: str | bytes, **request: Any) -> bytes:
    request.setdefault("ts", time.time())
    request.setdefault("nonce", os.urandom(16).hex())
    body = json.dumps(request)
    secret = key.encode() if isinstance(key, str) else key
    return json.dumps({"body": body, "sig": sign_comm_request(secret, body)}).encode() + b"\n"


async def check_comm_abuse(port: int, key: str) -> None:
    """Every kind of bad request is refused with a reason, and the port keeps serving."""
    cases = [
        (b"garbage\n", "not JSON"),
        (b"[1, 2]\n", "'body' and 'sig'"),
        (signed_line("not-the-kernel-key", op="ping"), "bad signature"),
        (json.dumps({"body": '{"op": "ping"}', "sig": "\u00e9"}).encode() + b"\n", "bad signature"),
        (signed_line(key, op="ping", ts=time.time() - 3600), "timestamp"),
        (signed_line(key, op="ping", ts="now"), "timestamp"),
        (signed_line(key, op="ping", nonce=7), "nonce"),
        (signed_line(key, op="signal", signum=999), "invalid signal number"),
        (signed_line(key, op="signal", signum=True), "invalid signal number"),
        (signed_line(key, op="reboot"), "unknown op"),
        (b"x" * 5000, "exceeds"),
    ]
    for data, reason in cases:
        reply = await raw_comm(port, data)
        assert reply is not None and reply["ok"] is False and reason in reply["error"], (data, reply)
    replayable = signed_line(key, op="ping")
    first = await raw_comm(port, replayable)
    assert first is not None and first["ok"] is True
    replay = await raw_comm(port, replayable)
    assert replay is not None and replay["ok"] is False and "replayed nonce" in replay["error"]
    assert (await comm_request("127.0.0.1", port, key, "ping"))["ok"] is True


# ------------------------------------------------------------------------------------------ full life


async def test_kernel_reports_runs_interrupts_and_shuts_down(
    listener: ResponseListener, launches: Launches
) -> None:
    proc, pending = launches.launch(listener, "kernel-life", "--port-range", "40000..41000")
    report = await wait_report(pending, proc, launches)

    assert report.kernel_id == "kernel-life"
    assert report.pid == proc.pid and report.pgid == os.getpgid(proc.pid)
    assert report.peer_ip == "127.0.0.1"
    info = report.connection_info
    assert (info["ip"], info["transport"], info["signature_scheme"]) == ("127.0.0.1", "tcp", "hmac-sha256")
    ports = [info[field] for field in ZMQ_PORT_FIELDS] + [report.comm_port]
    assert len(set(ports)) == 6 and all(40000 <= port <= 41000 for port in ports), ports

    client = await connect(report)
    try:
        output, reply = await run(client, "import os; print(6 * 7, os.environ.get('GP_LAUNCH_TOKEN'))")
        assert reply["status"] == "ok" and output == "42 None\n"  # the token does not leak into the kernel

        interrupted = await interrupt_sleep(client, report)
        assert interrupted["status"] == "error" and interrupted["ename"] == "KeyboardInterrupt"
        output, reply = await run(client, "print('still here')")
        assert output == "still here\n"

        await check_comm_abuse(report.comm_port, info["key"])

        output, _ = await run(
            client, "from ipykernel.connect import get_connection_file; print(get_connection_file())"
        )
        connection_file = Path(output.strip())
        assert connection_file.is_file() and connection_file.parent.parent == launches.connections

        client.shutdown()
        assert await wait_exit(proc) == 0
    finally:
        client.stop_channels()
    assert not connection_file.parent.exists()  # the private connection file went with the kernel
    with pytest.raises(ConnectionRefusedError):
        await comm_request("127.0.0.1", report.comm_port, info["key"], "ping")


async def test_sigterm_through_the_comm_port_ends_the_kernel(
    listener: ResponseListener, launches: Launches
) -> None:
    proc, pending = launches.launch(listener, "kernel-term")  # default port range: any port
    report = await wait_report(pending, proc, launches)
    key = report.connection_info["key"]
    assert await comm_request("127.0.0.1", report.comm_port, key, "ping") == {"ok": True, "pid": proc.pid}

    await comm_request("127.0.0.1", report.comm_port, key, "signal", signum=signal.SIGTERM)

    assert await wait_exit(proc) == -signal.SIGTERM


# ------------------------------------------------------------------------------------------ failures


async def test_rejected_launch_exits_non_zero_with_the_reason(
    listener: ResponseListener, launches: Launches
) -> None:
    proc, pending = launches.launch(listener, "kernel-bad-token", token="0" * 32)

    assert await wait_exit(proc) == 1
    stderr = launches.stderr()
    assert "rejected the launch" in stderr and "wrong launch token" in stderr
    assert not pending.future.done()


async def test_unreachable_server_exits_non_zero(listener: ResponseListener, launches: Launches) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    args = [
        "--kernel-id",
        "kernel-alone",
        "--response-address",
        f"127.0.0.1:{closed_port}",
        "--public-key",
        listener.public_key,
        "--ip",
        "127.0.0.1",
    ]
    proc = launches.start(args, token="0" * 32)

    assert await wait_exit(proc) == 1
    assert f"cannot reach the gp server's response address 127.0.0.1:{closed_port}" in launches.stderr()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "--kernel-id is required (or set KERNEL_ID)"),
        (
            ["--kernel-id", "k", "--response-address", "127.0.0.1:9"],
            {},
            "--public-key is required (or set PUBLIC_KEY)",
        ),
        (["--kernel-id", "k", "--response-address", "127.0.0.1:9", "--public-key", "AAAA"], {}, "X25519"),
        (["--response-address", "localhost", "--public-key", "AAAA"], {"KERNEL_ID": "k"}, "IP:PORT"),
        (
            ["--port-range", "5-6"],
            {"KERNEL_ID": "k", "RESPONSE_ADDRESS": "127.0.0.1:9", "PUBLIC_KEY": "AAAA"},
            "--port-range '5-6' is malformed",
        ),
        (["--cluster-type", "mesos"], {}, "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(launches: Launches, args: list[str], env: dict[str, str], message: str) -> None:
    proc = launches.start(args, token="0" * 32, env=env)
    assert proc.wait(TIMEOUT) == 2
    assert message in launches.stderr()


def test_missing_token_exits_2(launches: Launches, listener_key: str) -> None:
    args = ["--kernel-id", "k", "--response-address", "127.0.0.1:9", "--public-key", listener_key]
    proc = launches.start(args, token=None)
    assert proc.wait(TIMEOUT) == 2
    assert "--launch-token is required (or set GP_LAUNCH_TOKEN)" in launches.stderr()


@pytest.fixture
def listener_key() -> str:
    from gp_core.listener import server_key

    return server_key().public_key


def test_unknown_kernel_class_exits_non_zero(launches: Launches, listener_key: str) -> None:
    args = ["--kernel-id", "k", "--response-address", "127.0.0.1:9", "--public-key", listener_key]
    proc = launches.start([*args, "--kernel-class-name", "no.such.Kernel"], token="0" * 32)
    assert proc.wait(TIMEOUT) == 1
    assert "cannot import --kernel-class-name 'no.such.Kernel'" in launches.stderr()


async def test_the_report_goes_out_before_the_kernel_is_built_and_early_requests_wait(
    listener: ResponseListener, launches: Launches, tmp_path: Path
) -> None:
    """The connection info goes out once the ports are bound, while the kernel object and its shell are
    still being created (~80 ms): an interrupt sent then is harmless, and a request sent then is answered
    once the kernel is up. The kernel class here is built only once the test has its report."""
    go = tmp_path / "go"
    (tmp_path / "gated_kernel.py").write_text(
        "import os, time\nfrom ipykernel.ipkernel import IPythonKernel\n\n"
        "class GatedKernel(IPythonKernel):\n"
        "    def __init__(self, **kwargs):\n"
        f"        while not os.path.exists({str(go)!r}):\n"
        "            time.sleep(0.01)\n"
        "        super().__init__(**kwargs)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc, pending = launches.launch(
        listener, "kernel-early", "--kernel-class-name", "gated_kernel.GatedKernel", env=env
    )
    report = await wait_report(pending, proc, launches)
    key = report.connection_info["key"]
    reply = await comm_request("127.0.0.1", report.comm_port, key, "signal", signum=signal.SIGINT)
    assert reply["ok"] is True
    client = AsyncKernelClient()
    client.load_connection_info(report.connection_info)
    client.start_channels()
    try:
        msg_id = client.execute("print('up')")  # no wait_for_ready: ZMQ queues it until the kernel reads
        go.touch()
        while True:
            msg = await client.get_shell_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        assert msg["content"]["status"] == "ok"
        assert proc.poll() is None
    finally:
        client.stop_channels()


async def test_a_kernel_failing_after_the_report_exits_non_zero_with_the_reason(
    listener: ResponseListener, launches: Launches, tmp_path: Path
) -> None:
    (tmp_path / "broken_kernel.py").write_text(
        "from ipykernel.ipkernel import IPythonKernel\n\n"
        "class BrokenKernel(IPythonKernel):\n"
        "    def __init__(self, **kwargs):\n"
        "        raise RuntimeError('no licence for this kernel')\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc, pending = launches.launch(
        listener, "kernel-broken", "--kernel-class-name", "broken_kernel.BrokenKernel", env=env
    )
    assert await wait_exit(proc) == 1
    assert pending.future.done()  # reported: the server learns of the failure as the kernel's exit
    stderr = launches.stderr()
    assert "the kernel failed to initialize" in stderr and "no licence for this kernel" in stderr


# ------------------------------------------------------------------------------------------ --park


def park(launches: Launches, name: str = "parked") -> subprocess.Popen[bytes]:
    """A launcher started with ``--park`` alone, its stdin a pipe the test writes the assignment to."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    launches.connections.mkdir(exist_ok=True)
    base["GP_CONNECTION_DIR"] = str(launches.connections)
    with open(launches.tmp_path / f"{name}.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER_PATH), "--park"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=base,
        )
    launches.procs.append(proc)
    return proc


async def test_a_parked_launcher_takes_its_arguments_and_env_from_stdin(
    listener: ResponseListener, launches: Launches
) -> None:
    proc = park(launches)
    pending = listener.register("kernel-parked")
    assignment = {
        "argv": ["--kernel-id", "kernel-parked", "--response-address", listener.response_address,
                 "--public-key", listener.public_key, "--ip", "127.0.0.1"],
        "env": {"GP_LAUNCH_TOKEN": pending.token, "KERNEL_USERNAME": "alice", "KERNEL_ODD": "a b;$(x)"},
    }  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(assignment).encode() + b"\n")
    proc.stdin.close()  # what the pool's detach does: the kernel never reads its stdin
    report = await wait_report(pending, proc, launches, name="parked")
    client = await connect(report)
    try:
        code = (
            "import os; e = os.environ; print(e['KERNEL_USERNAME'], e['KERNEL_ODD'], 'GP_LAUNCH_TOKEN' in e)"
        )
        output, reply = await run(client, code)
        assert reply["status"] == "ok" and output == "alice a b;$(x) False\n"
        interrupted = await interrupt_sleep(client, report)
        assert interrupted["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()


def test_a_parked_launcher_exits_quietly_when_its_pool_goes_away(launches: Launches) -> None:
    proc = park(launches)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(TIMEOUT) == 0
    assert "gp launcher" not in launches.stderr("parked")  # (debugpy may warn about frozen modules)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "the assignment is not JSON"),
        (b'{"argv": "--kernel-id x", "env": {}}\n', '"argv", a list of strings'),
        (b'{"argv": [], "env": {"A": 1}}\n', '"env", an object of strings'),
        (b'{"argv": [], "env": {"A=B": "c"}}\n', "the assignment's env is not usable"),
        (b"x" * (1024 * 1024 + 10) + b"\n", "the assignment exceeds 1048576 bytes"),
    ],
)
def test_a_parked_launcher_refuses_garbage_on_stdin(launches: Launches, line: bytes, message: str) -> None:
    proc = park(launches)
    try:
        proc.communicate(line, timeout=TIMEOUT)
    except BrokenPipeError:  # it may stop reading an oversize line before the test stops writing
        proc.wait(TIMEOUT)
    assert proc.returncode == 2
    assert message in launches.stderr("parked")


# ------------------------------------------------------------------------------------------ spark / dask


@pytest.fixture
def fake_pyspark(tmp_path: Path) -> dict[str, str]:
    package = tmp_path / "fakes" / "pyspark"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sql.py").write_text(textwrap.dedent(FAKE_PYSPARK))
    return {
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fakes"), os.environ.get("PYTHONPATH", "")]),
        "FAKE_SPARK_CANCEL_FILE": str(tmp_path / "cancelled"),
    }


async def test_eager_spark_namespace_and_interrupt_cancels_jobs(
    listener: ResponseListener, launches: Launches, fake_pyspark: dict[str, str], tmp_path: Path
) -> None:
    proc, pending = launches.launch(
        listener,
        "kernel-eager",
        "--spark-context-initialization-mode",
        "eager",
        "--cluster-type",
        "spark",
        env=fake_pyspark,
    )
    report = await wait_report(pending, proc, launches)
    client = await connect(report)
    try:
        output, _ = await run(client, "print(type(spark).__name__, sc.name, sql('q'))")
        assert output == "_Session fake-spark-context sql:q\n"

        interrupted = await interrupt_sleep(client, report)
        assert interrupted["ename"] == "KeyboardInterrupt"
        assert (tmp_path / "cancelled").read_text() == "cancelled\n"  # SIGUSR2 reached the handler
        output, _ = await run(client, "print('alive')")
        assert output == "alive\n"
    finally:
        client.stop_channels()


async def test_lazy_spark_namespace_fills_in_the_background(
    listener: ResponseListener, launches: Launches, fake_pyspark: dict[str, str]
) -> None:
    proc, pending = launches.launch(
        listener, "kernel-lazy", "--spark-context-initialization-mode", "lazy", env=fake_pyspark
    )
    report = await wait_report(pending, proc, launches)
    client = await connect(report)
    try:
        output, _ = await run(client, "print(sql('q'))")  # waits for the background creation if need be
        assert output == "sql:q\n"
        output, _ = await run(client, "print(type(spark).__name__, sc.name)")
        assert output == "_Session fake-spark-context\n"
    finally:
        client.stop_channels()


def _pyspark_installed() -> bool:
    return importlib.util.find_spec("pyspark") is not None


@pytest.mark.skipif(_pyspark_installed(), reason="pyspark is installed")
async def test_lazy_without_pyspark_starts_without_spark(
    listener: ResponseListener, launches: Launches
) -> None:
    proc, pending = launches.launch(
        listener, "kernel-no-spark", "--spark-context-initialization-mode", "lazy", "--cluster-type", "spark"
    )
    report = await wait_report(pending, proc, launches)
    client = await connect(report)
    try:
        output, _ = await run(client, "print('spark' in globals())")
        assert output == "False\n"
        # With --cluster-type spark an interrupt also raises SIGUSR2; with no Spark it must stay harmless.
        interrupted = await interrupt_sleep(client, report)
        assert interrupted["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()
    assert "needs the 'pyspark' package" in launches.stderr()


@pytest.mark.skipif(_pyspark_installed(), reason="pyspark is installed")
def test_eager_without_pyspark_fails_fast(launches: Launches, listener_key: str) -> None:
    args = ["--kernel-id", "k", "--response-address", "127.0.0.1:9", "--public-key", listener_key]
    proc = launches.start([*args, "--spark-context-initialization-mode", "eager"], token="0" * 32)
    assert proc.wait(TIMEOUT) == 1
    assert "needs the 'pyspark' package" in launches.stderr()


@pytest.mark.skipif(importlib.util.find_spec("dask_yarn") is not None, reason="dask_yarn is installed")
def test_eager_dask_without_dask_yarn_fails_fast(launches: Launches, listener_key: str) -> None:
    args = ["--kernel-id", "k", "--response-address", "127.0.0.1:9", "--public-key", listener_key]
    mode = ["--spark-context-initialization-mode", "eager", "--cluster-type", "dask"]
    proc = launches.start([*args, *mode], token="0" * 32)
    assert proc.wait(TIMEOUT) == 1
    assert "needs the 'dask_yarn' package" in launches.stderr()


# ------------------------------------------------------------------------------------------ in process


def test_launcher_is_self_contained() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('l', {str(LAUNCHER_PATH)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gp_core', 'ipykernel', 'zmq', 'Cryptodome')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # nothing heavy, and never gp_core, at import


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0..0", (0, 0)), ("40000..41000", (40000, 41000)), (" 1..6 ", (1, 6))],
)
def test_launcher_port_range(launcher: ModuleType, text: str, expected: tuple[int, int]) -> None:
    assert launcher.parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["", "1-6", "1..5", "0..6", "6..1", "1..70000", "a..b", "1...6"])
def test_launcher_port_range_rejects(launcher: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="--port-range"):
        launcher.parse_port_range(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8877", ("127.0.0.1", 8877)), ("[::1]:8877", ("::1", 8877)), ("host:1", ("host", 1))],
)
def test_launcher_response_address(launcher: ModuleType, text: str, expected: tuple[str, int]) -> None:
    assert launcher.parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "127.0.0.1", ":8877", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "h:x"]
)
def test_launcher_response_address_rejects(launcher: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="IP:PORT"):
        launcher.parse_address(text)


def test_bind_in_range_skips_busy_ports(launcher: ModuleType) -> None:
    import socket

    taken: list[socket.socket] = []
    try:
        with socket.socket() as probe:  # find a small range with its first ports occupied
            probe.bind(("127.0.0.1", 0))
            low = probe.getsockname()[1]
        for port in range(low, low + 3):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            taken.append(sock)
        busy = {sock.getsockname()[1] for sock in taken}
        for _ in range(5):
            with launcher.bind_comm_socket("127.0.0.1", (low, low + 5)) as sock:
                port = sock.getsockname()[1]
                assert low <= port <= low + 5 and port not in busy
    finally:
        for sock in taken:
            sock.close()


def test_bind_in_range_reports_an_exhausted_range(launcher: ModuleType) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(launcher.LaunchFailed, match=f"no free port left in --port-range {port}..{port}"):
            launcher.bind_in_range(lambda p: socket.create_server(("127.0.0.1", p)).close(), port, port)


@pytest.fixture
def comm_server(launcher: ModuleType) -> Iterator[Any]:
    server = launcher.CommServer(
        launcher.bind_comm_socket("127.0.0.1", (0, 0)), b"in-process-key", spark=False
    )
    server.start()
    try:
        yield server
    finally:
        server.sock.close()


async def test_comm_server_in_process(comm_server: Any) -> None:
    await check_comm_abuse(comm_server.port, "in-process-key")
    assert await comm_request("127.0.0.1", comm_server.port, "in-process-key", "ping") == {
        "ok": True,
        "pid": os.getpid(),
    }


async def test_comm_server_delivers_signals_to_the_main_thread(comm_server: Any) -> None:
    received = asyncio.Event()
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    def handler(_signum: int, _frame: Any) -> None:
        seen.append(threading.current_thread().name)
        loop.call_soon_threadsafe(received.set)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        reply = await comm_request(
            "127.0.0.1", comm_server.port, "in-process-key", "signal", signum=signal.SIGUSR1
        )
        assert reply == {"ok": True, "pid": os.getpid()}
        await asyncio.wait_for(received.wait(), TIMEOUT)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [threading.main_thread().name]


async def test_comm_server_survives_half_open_connections_and_floods(
    launcher: ModuleType, comm_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "COMM_READ_TIMEOUT", 0.3)
    half_open = await raw_comm(comm_server.port, b'{"body": ', close_write=False)
    assert half_open is not None and "timed out" in half_open["error"]

    monkeypatch.setattr(launcher, "COMM_READ_TIMEOUT", TIMEOUT)
    # Far more idle peers than the port holds at once: the excess is shed, and a signed request still
    # gets through, whoever came first.
    peers = launcher.COMM_MAX_CONNECTIONS * 3
    idle = [await asyncio.open_connection("127.0.0.1", comm_server.port) for _ in range(peers)]
    try:
        assert (await comm_request("127.0.0.1", comm_server.port, "in-process-key", "ping"))["ok"] is True
    finally:
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert await ping_when_free(comm_server.port, "in-process-key")


async def test_a_request_that_breaks_the_handler_does_not_end_the_port(
    comm_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = comm_server.handle
    calls: list[int] = []

    def broken_once(raw: bytes | None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return handle(raw)

    monkeypatch.setattr(comm_server, "handle", broken_once)
    assert await raw_comm(comm_server.port, signed_line("in-process-key", op="ping")) is None
    assert (await comm_request("127.0.0.1", comm_server.port, "in-process-key", "ping"))["ok"] is True


async def drip(port: int, seconds: float, every: float = 0.1) -> tuple[int, bytes]:
    """Send a byte of a request every ``every`` s for up to ``seconds``; (bytes sent, the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        for _ in range(int(seconds / every)):
            try:
                writer.write(b" ")
                await writer.drain()
            except OSError:
                break
            sent += 1
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(4096), every)
                return sent, answer
        return sent, b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_request_has_one_deadline_not_one_per_read(
    launcher: ModuleType, comm_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A byte every 0.1 s kept a per-recv() timeout of 0.5 s from ever expiring.
    monkeypatch.setattr(launcher, "COMM_READ_TIMEOUT", 0.5)
    sent, answer = await drip(comm_server.port, seconds=20)
    assert b"timed out" in answer
    assert sent < 100  # cut off long before the 200 bytes of the 20 s drip


async def test_slow_unsigned_clients_never_starve_a_signed_interrupt(
    launcher: ModuleType, comm_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "COMM_READ_TIMEOUT", 3.0)
    received = asyncio.Event()
    loop = asyncio.get_running_loop()
    previous = signal.signal(signal.SIGUSR1, lambda *_: loop.call_soon_threadsafe(received.set))
    drips = [
        asyncio.ensure_future(drip(comm_server.port, seconds=10, every=0.5))
        for _ in range(launcher.COMM_MAX_CONNECTIONS * 2)
    ]
    try:
        await asyncio.sleep(0.5)  # every dripping client holds its connection
        reply = await comm_request(
            "127.0.0.1", comm_server.port, "in-process-key", "signal", signum=signal.SIGUSR1
        )
        assert reply == {"ok": True, "pid": os.getpid()}
        await asyncio.wait_for(received.wait(), TIMEOUT)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        for task in drips:
            task.cancel()
        await asyncio.gather(*drips, return_exceptions=True)


async def ping_when_free(port: int, key: str) -> bool:
    """Ping until a request thread is free again (the idle peers' threads end as their connections close)."""
    for _ in range(200):
        try:
            return (await comm_request("127.0.0.1", port, key, "ping"))["ok"] is True
        except (ConnectionError, ProtocolError):
            await asyncio.sleep(0.05)
    return False
