"""What the benchmarks share: how start latency is measured, and driving gateway_provisioners 0.5.0 (the
anchor) from its own venv, interleaved with gp's runs.

:func:`start_to_first_reply` is the one start measurement of every row (gp's, a bare kernel's, the
anchor's: its source is sent to the anchor's runner). A benchmark starts one long-lived runner script in the anchor's venv; each request line written to its
stdin makes it start (and stop) one kernel and answer with one JSON line of figures, so the anchor's runs
interleave with gp's and the machine's noise hits both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


async def first_reply(client: Any, wait_for_ready: bool) -> dict[str, Any]:
    """The content of the first ``execute_reply`` of a just-started kernel's client.

    By default the ``execute_request`` goes out at once: ZMQ holds it until the kernel reads its shell
    socket, so the figure is the kernel's real readiness. ``wait_for_ready()`` first adds a fixed ~0.2 s
    in every case (after the ``kernel_info`` reply it waits for IOPub to fall quiet).
    """
    if wait_for_ready:
        await client.wait_for_ready(timeout=60)
    msg_id = client.execute("1")
    while True:
        reply = await client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return dict(reply["content"])


async def shut_down(client: Any) -> None:
    """Ask a bare kernel to shut down and wait for its reply.

    Right after :func:`first_reply` the control channel may still be connecting; closing the channels
    before the request went out would drop it, and the kernel would never exit.
    """
    msg_id = client.shutdown()
    while True:
        reply = await client.control_channel.get_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return


async def start_to_first_reply(km: Any, wait_for_ready: bool, **start: Any) -> float:
    """Seconds from ``km.start_kernel(**start)`` to its first ``execute_reply`` (see :func:`first_reply`)."""
    started = time.perf_counter()
    await km.start_kernel(**start)
    client = km.client()
    client.start_channels()
    try:
        reply = await first_reply(client, wait_for_ready)
    finally:
        client.stop_channels()
    assert reply["status"] == "ok", reply
    return time.perf_counter() - started


#: The measuring functions' source, for the runner scripts that run in the anchor's venv.
RUNNER_HELPERS_SOURCE = "import time\nfrom typing import Any\n\n" + "\n\n".join(
    inspect.getsource(function) for function in (first_reply, start_to_first_reply)
)


def free_port() -> int:
    """A free port on 127.0.0.1 (the anchor cannot advertise a response port it let the OS pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AnchorProcess:
    """``python -c script *args`` in the anchor's venv, asked for one kernel's figures at a time."""

    def __init__(
        self, python: str, script: str, args: Sequence[str], env: Mapping[str, str], log: Path
    ) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [python, "-c", script, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=dict(env),
        )  # fmt: skip

    def _once(self) -> tuple[float, ...]:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write("run\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # reported below, with its log
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the anchor runner died; the end of {self.log}:\n{self.log.read_text()[-3000:]}"
            )
        return tuple(json.loads(line))

    async def start(self) -> tuple[float, ...]:
        """Start and stop one anchor kernel; its figures, as the runner script reports them."""
        return await asyncio.to_thread(self._once)

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):  # it died: start() has said why
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
