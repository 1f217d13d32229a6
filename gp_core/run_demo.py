"""``gp run`` (and ``python -m gp_core``): start a kernel through GenericRemoteProvisioner, run code,
print its output, shut it down.

Uses the embedded ``local`` backend by default (no cluster needed); ``--backend`` and ``--config`` select
another installed backend and its options, e.g.
``gp run --backend docker --config '{"image": "gp/kernel-py:test", "network": "host"}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command

DEFAULT_CODE = "import os, socket\nprint(f'hello from pid {os.getpid()} on {socket.gethostname()}')\n6 * 7"


async def demo(
    backend: str,
    config: dict[str, object],
    code: str,
    argv: list[str] | None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start one kernel, run ``code``, shut it down; return what happened (``say`` reports progress)."""
    from .testing import execute, kernel_manager, start_kernel, write_kernelspec

    with tempfile.TemporaryDirectory() as kernels:
        write_kernelspec(kernels, "gp-demo", backend=backend, config=config, argv=argv)
        km = kernel_manager(kernels, "gp-demo")
        started = time.perf_counter()
        await start_kernel(km)
        result: dict[str, Any] = {"kernel_id": km.kernel_id, "backend": backend}
        try:
            output, reply = await execute(km, code)
            result.update(
                status=reply["status"], seconds=round(time.perf_counter() - started, 3), output=output
            )
            say(
                f"[gp] kernel {km.kernel_id} on backend {backend!r}: {reply['status']} after {result['seconds']:.2f} s"
            )
            say(output[:-1] if output.endswith("\n") else output)
            return result
        finally:
            await km.shutdown_kernel()
            result["alive_after_shutdown"] = await km.is_alive()
            say(f"[gp] kernel shut down; alive: {result['alive_after_shutdown']}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", help="installed gp backend to use (default: local)")
    parser.add_argument("--config", default="{}", help="backend options as a JSON object")
    parser.add_argument("--argv", help="kernel.json argv as a JSON list (default: gp's local launcher)")
    parser.add_argument("--code", default=DEFAULT_CODE, help="code to run on the kernel")


def run(args: argparse.Namespace) -> tuple[int, Any]:
    # The demo's kernel is local unless told otherwise: keep the response listener on loopback.
    os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
    try:
        config = json.loads(args.config)
        argv = json.loads(args.argv) if args.argv else None
    except json.JSONDecodeError as exc:
        return EXIT_USAGE, {"error": f"--config/--argv must be JSON: {exc}"}
    say = (lambda _text: None) if getattr(args, "json", False) else print
    try:
        result = asyncio.run(demo(args.backend, config, args.code, argv, say))
    except (PermissionError, LookupError, ValueError, RuntimeError, TimeoutError) as exc:
        return EXIT_FAILED, {"error": str(exc)}
    return (EXIT_OK if result.get("status") == "ok" else EXIT_FAILED), result


def _render(result: Any) -> str:
    return f"[gp] error: {result['error']}" if isinstance(result, dict) and "error" in result else ""


COMMAND = Command(
    name="run",
    help="start a kernel on a backend, run code, print its output, shut it down",
    description=__doc__.strip().splitlines()[0] if __doc__ else "",
    add_arguments=add_arguments,
    run=run,
    render=_render,
)
