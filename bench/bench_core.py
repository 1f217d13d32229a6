"""Core benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

1. Kernel start latency, start request -> first execute_reply, on gp's ``local`` backend vs jupyter_client's
   own ``LocalProvisioner`` running the same ipykernel; runs are interleaved so machine noise hits both.
   Target: gp within 1.3x.
2. Hook dispatch overhead per call through ``Backend.call`` (pluggy + await) vs calling the function
   directly. Target: under 50 microseconds.

Run: ``python bench/bench_core.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")

from _shared import start_to_first_reply  # bench/_shared.py, beside this script

from gp_core import hookimpl
from gp_core.plugins import register_backend
from gp_core.testing import kernel_env, kernel_manager, write_kernelspec


def _write_local_provisioner_spec(directory: Path) -> None:
    spec_dir = directory / "plain"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "plain",
        "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "local-provisioner"}},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


async def _start_to_first_reply(kernels: Path, name: str) -> float:
    km = kernel_manager(kernels, name)
    try:
        return await start_to_first_reply(km, True, env=kernel_env())  # after wait_for_ready(), as before
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


async def bench_start(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kernels = Path(tmp)
        write_kernelspec(kernels, "gp", backend="local")
        _write_local_provisioner_spec(kernels)
        await _start_to_first_reply(kernels, "gp")  # warm-up: imports, key pair, listener, page cache
        await _start_to_first_reply(kernels, "plain")
        gp, plain = [], []
        for _ in range(runs):
            gp.append(await _start_to_first_reply(kernels, "gp"))
            plain.append(await _start_to_first_reply(kernels, "plain"))
    gp_median, plain_median = statistics.median(gp), statistics.median(plain)
    print(f"start -> first execute_reply, median of {runs} (interleaved)")
    print(f"  jupyter_client LocalProvisioner : {plain_median:.3f} s")
    print(f"  gp local backend                : {gp_median:.3f} s")
    print(f"  ratio gp / LocalProvisioner     : {gp_median / plain_median:.2f}x  (target <= 1.30x)")


class _Noop:
    @hookimpl
    def launch(self, kernel_id):
        return {}

    @hookimpl
    def poll(self, handle):
        return None

    @hookimpl
    def terminate(self, handle):
        return None


async def bench_dispatch(calls: int) -> None:
    backend = register_backend("bench-noop", _Noop())
    plugin = backend.plugin
    kwargs = {"handle": {}, "options": None, "launching": False, "log": None}
    started = time.perf_counter()
    for _ in range(calls):
        await backend.call("poll", **kwargs)
    through_gp = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for _ in range(calls):
        plugin.poll({})
    direct = (time.perf_counter() - started) / calls
    print(f"hook dispatch, mean of {calls} calls")
    print(f"  direct function call            : {direct * 1e6:.2f} us")
    print(f"  Backend.call('poll')            : {through_gp * 1e6:.2f} us")
    print(f"  overhead per hook call          : {(through_gp - direct) * 1e6:.2f} us  (target < 50 us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(bench_dispatch(args.calls))
    asyncio.run(bench_start(args.runs))


if __name__ == "__main__":
    main()
