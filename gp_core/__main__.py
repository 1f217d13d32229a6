"""``python -m gp_core``: start a kernel through GenericRemoteProvisioner, run code, print the output, shut down.

Uses the embedded ``local`` backend by default (no cluster needed); ``--backend`` and ``--config`` select
another installed backend and its options, e.g.
``python -m gp_core --backend docker --config '{"image": "gp/kernel-py:test", "network": "host"}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

DEFAULT_CODE = "import os, socket\nprint(f'hello from pid {os.getpid()} on {socket.gethostname()}')\n6 * 7"


async def demo(backend: str, config: dict[str, object], code: str, argv: list[str] | None) -> int:
    from .testing import execute, kernel_manager, start_kernel, write_kernelspec

    with tempfile.TemporaryDirectory() as kernels:
        write_kernelspec(kernels, "gp-demo", backend=backend, config=config, argv=argv)
        km = kernel_manager(kernels, "gp-demo")
        started = time.perf_counter()
        await start_kernel(km)
        try:
            output, reply = await execute(km, code)
            elapsed = time.perf_counter() - started
            print(
                f"[gp] kernel {km.kernel_id} on backend {backend!r}: {reply['status']} after {elapsed:.2f} s"
            )
            print(output, end="" if output.endswith("\n") else "\n")
            return 0 if reply["status"] == "ok" else 1
        finally:
            await km.shutdown_kernel()
            print(f"[gp] kernel shut down; alive: {await km.is_alive()}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gp_core", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local", help="installed gp backend to use (default: local)")
    parser.add_argument("--config", default="{}", help="backend options as a JSON object")
    parser.add_argument("--argv", help="kernel.json argv as a JSON list (default: gp's local launcher)")
    parser.add_argument("--code", default=DEFAULT_CODE, help="code to run on the kernel")
    args = parser.parse_args()
    # The demo's kernel is local unless told otherwise: keep the response listener on loopback.
    os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")
    try:
        config = json.loads(args.config)
        argv = json.loads(args.argv) if args.argv else None
    except json.JSONDecodeError as exc:
        parser.error(f"--config/--argv must be JSON: {exc}")
    try:
        return asyncio.run(demo(args.backend, config, args.code, argv))
    except (PermissionError, LookupError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"[gp] error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
