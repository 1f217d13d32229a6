"""Start latency of R and Scala kernels, side by side in one run (ratios, not absolute times, are the result).

1. R on the ssh backend (the test sshd): gp's R launcher vs the anchor's (gateway_provisioners 0.5.0's
   ``launch_IRkernel.R`` through its DistributedProvisioner, from its own venv, ``--anchor-python``), runs
   interleaved. Target: gp / anchor <= 1.0x. Also gp vs a bare IRkernel started by jupyter_client's
   LocalProvisioner on this machine (what the protocol costs).
2. Scala: gp's Toree launcher on the local backend vs a bare Apache Toree started by jupyter_client's
   LocalProvisioner with the same spark-submit (the anchor's Scala launcher is a prebuilt jar of its
   own; it is not measured here, see the report).

Start -> first execute_reply, median of N. Run: ``python bench/bench_languages.py [--runs N]
[--anchor-python V/bin/python] [--no-scala]``; ``GP_TEST_SSH_DIR``, ``GP_TEST_SSH_PORT``, ``GP_TEST_PYTHON``
as for the tests; Spark from ``GP_TEST_SPARK_HOME`` (default ``.ci-state/pyspark-3.4.4/pyspark``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GP_RESPONSE_IP", "127.0.0.1")

from _shared import AnchorProcess, free_port, start_to_first_reply  # bench/_shared.py, beside this script

from gp_core.launcher import PLACEHOLDER_ARGS, SCALA_LAUNCHER_PATH
from gp_core.testing import kernel_env, kernel_manager, r_launcher_argv, write_kernelspec

ROOT = Path(__file__).resolve().parent.parent
SPARK_HOME = Path(os.environ.get("GP_TEST_SPARK_HOME") or ROOT / ".ci-state/pyspark-3.4.4/pyspark")
SPARK_OPTS = "--master local[1] --conf spark.ui.enabled=false"


def bare_spec(directory: Path, name: str, argv: list[str], language: str, env: dict[str, str]) -> None:
    spec_dir = directory / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": argv,
        "display_name": name,
        "language": language,
        "env": env,
        "metadata": {"kernel_provisioner": {"provisioner_name": "local-provisioner"}},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


async def timed(specs: Path, name: str, timeout_env: dict[str, str] | None = None) -> float:
    km = kernel_manager(specs, name)
    try:
        return await start_to_first_reply(km, True, env=kernel_env(**(timeout_env or {})))
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


ANCHOR_R_RUNNER = (
    r"""
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
"""
    + "\n"
    + "{helpers}"
    + r"""
results = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
host, prefix = sys.argv[1], Path(sys.argv[2])
done = subprocess.run([str(Path(sys.executable).parent / "jupyter-ssh-spec"), "install", f"--prefix={prefix}",
                       f"--remote-hosts={host}", "--kernel-name=anchor_r", "--language=R"], capture_output=True, text=True)
if done.returncode:
    sys.exit(f"the anchor's jupyter ssh-spec install --language R failed: {done.stderr[-1500:]}")
specs = prefix / "share/jupyter/kernels"
spec_file = specs / "anchor_r" / "kernel.json"
spec = json.loads(spec_file.read_text())
spec["metadata"]["kernel_provisioner"]["config"]["launch_timeout"] = 90
spec.setdefault("env", {})["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
spec_file.write_text(json.dumps(spec))

async def main():
    while await asyncio.to_thread(sys.stdin.readline):
        km = AsyncKernelManager(kernel_name="anchor_r", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
        latency = await start_to_first_reply(km, True, env={**os.environ, "KERNEL_USERNAME": "gp-bench"})
        await km.shutdown_kernel(now=True)
        print(json.dumps([latency]), file=results, flush=True)

asyncio.run(main())
"""
)


def start_anchor(anchor_python: str, host: str, work: Path, ssh_dir: Path, port: int) -> AnchorProcess:
    from _shared import RUNNER_HELPERS_SOURCE

    home = work / "anchor-home"  # the anchor logs in with ~/.ssh keys only
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(ssh_dir / "client_key", home / ".ssh" / "id_ed25519")
    shutil.copy(ssh_dir / "known_hosts", home / ".ssh" / "known_hosts")
    env = {
        **os.environ,
        "HOME": str(home),
        "GP_SSH_PORT": str(port),
        "GP_REMOTE_USER": "root",
        "GP_RESPONSE_IP": "127.0.0.1",
        "GP_RESPONSE_PORT": str(free_port()),
        "GP_KERNEL_LOG_DIR": str(work),
    }
    script = ANCHOR_R_RUNNER.replace("{helpers}", RUNNER_HELPERS_SOURCE)
    return AnchorProcess(anchor_python, script, [host, str(work / "anchor-prefix")], env, work / "anchor.log")


def report(title: str, rows: dict[str, list[float]], ratios: list[tuple[str, str, str]]) -> None:
    print(title)
    medians = {name: statistics.median(values) for name, values in rows.items() if values}
    for name, median in medians.items():
        print(f"  {name:<40}: {median:.3f} s  (n={len(rows[name])})")
    for label, top, bottom in ratios:
        if top in medians and bottom in medians:
            print(f"  {label:<40}: {medians[top] / medians[bottom]:.2f}x")


async def bench_r(runs: int, host: str, anchor_python: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="gp-bench-lang-"))
    ssh_dir = Path(os.environ.get("GP_TEST_SSH_DIR", ROOT / ".ci-state" / "ssh"))
    port = int(os.environ.get("GP_TEST_SSH_PORT", "22222"))
    python = os.environ.get("GP_TEST_PYTHON") or sys.executable
    config = {
        "remote_hosts": [host],
        "ssh_port": port,
        "remote_user": "root",
        "ssh_key_file": str(ssh_dir / "client_key"),
        "known_hosts_file": str(ssh_dir / "known_hosts"),
        "kernel_log_dir": str(work / "logs"),
        "launch_timeout": 90,
    }
    specs = work / "specs"
    os.environ["GP_REMOTE_HOSTS"] = host
    write_kernelspec(specs, "gp_r", backend="ssh", argv=r_launcher_argv(python), config=config, language="R")
    rscript = shutil.which("Rscript") or "Rscript"
    bare_spec(specs, "bare_r", [rscript, "-e", "IRkernel::main()", "{connection_file}"], "R", {})
    anchor = start_anchor(anchor_python, host, work, ssh_dir, port) if anchor_python else None
    rows: dict[str, list[float]] = {
        "gp R launcher (ssh)": [],
        "anchor R launcher (ssh)": [],
        "bare IRkernel": [],
    }
    anchor_error = None
    try:
        await timed(specs, "gp_r")  # warm-up
        await timed(specs, "bare_r")
        if anchor:
            try:
                await anchor.start()
            except Exception as exc:
                anchor_error, anchor = exc, None
        for _ in range(runs):
            rows["gp R launcher (ssh)"].append(await timed(specs, "gp_r"))
            rows["bare IRkernel"].append(await timed(specs, "bare_r"))
            if anchor:
                rows["anchor R launcher (ssh)"].append((await anchor.start())[0])
    finally:
        if anchor:
            anchor.close()
    report(
        f"R: start -> first execute_reply, median of {runs} (interleaved)",
        rows,
        [
            ("ratio gp / anchor (target <= 1.0x)", "gp R launcher (ssh)", "anchor R launcher (ssh)"),
            ("ratio gp / bare IRkernel", "gp R launcher (ssh)", "bare IRkernel"),
        ],
    )
    if anchor_error is not None:
        print(f"  anchor row not measured: {str(anchor_error)[-1500:]}")
    elif not anchor_python:
        print("  anchor row not measured: pass --anchor-python V/bin/python (gateway_provisioners 0.5.0)")


async def bench_scala(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="gp-bench-scala-"))
    specs = work / "specs"
    env = {"SPARK_HOME": str(SPARK_HOME), "SPARK_OPTS": SPARK_OPTS}
    write_kernelspec(
        specs,
        "gp_scala",
        backend="local",
        argv=[sys.executable, str(SCALA_LAUNCHER_PATH), *PLACEHOLDER_ARGS],
        env=env,
        config={"launch_timeout": 120},
        language="scala",
    )
    sys.path.insert(0, str(SCALA_LAUNCHER_PATH.parent))
    from launch_toree import find_toree_jar  # type: ignore[import-not-found]

    jar = find_toree_jar()
    bare_argv = [
        str(SPARK_HOME / "bin/spark-submit"),
        *SPARK_OPTS.split(),
        "--class",
        "org.apache.toree.Main",
    ]
    bare_spec(specs, "bare_scala", [*bare_argv, str(jar), "--profile", "{connection_file}"], "scala", env)
    rows: dict[str, list[float]] = {"gp Toree launcher (local)": [], "bare Toree (LocalProvisioner)": []}
    await timed(specs, "gp_scala")  # warm-up
    for _ in range(runs):
        rows["gp Toree launcher (local)"].append(await timed(specs, "gp_scala"))
        rows["bare Toree (LocalProvisioner)"].append(await timed(specs, "bare_scala"))
    report(
        f"Scala: start -> first execute_reply, median of {runs} (interleaved)",
        rows,
        [("ratio gp / bare Toree", "gp Toree launcher (local)", "bare Toree (LocalProvisioner)")],
    )
    print("  anchor row not measured: its Scala launcher is a prebuilt toree-launcher jar (see the report)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--anchor-python", default=None)
    parser.add_argument("--no-scala", action="store_true")
    args = parser.parse_args()
    asyncio.run(bench_r(args.runs, args.host, args.anchor_python))
    if not args.no_scala:
        asyncio.run(bench_scala(args.runs))


if __name__ == "__main__":
    main()
