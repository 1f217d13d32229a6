"""The ``example`` backend: the launcher as a local process in a per-user sandbox directory."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

from traitlets import Unicode, default

from gp_core import BackendError, BackendOptions, LaunchError, env_default, hookimpl, inherited_server_env

_processes: dict[int, asyncio.subprocess.Process] = {}


class ExampleOptions(BackendOptions):
    sandbox_root = Unicode(
        config=True, help="Directory holding the per-user sandboxes (env GP_EXAMPLE_ROOT)."
    )
    greeting = Unicode("hello", config=True, help="Exported to the kernel as EXAMPLE_GREETING.")

    _sandbox_root_default = default("sandbox_root")(env_default("GP_EXAMPLE_ROOT", "/tmp/gp-example"))


@hookimpl
def declare_options() -> type[BackendOptions]:
    return ExampleOptions


@hookimpl
def resolve_namespace(env: dict[str, str]) -> str:
    user = re.sub(r"[^a-z0-9-]+", "-", env["KERNEL_USERNAME"].lower()).strip("-") or "anonymous"
    return f"sandbox-{user}"


@hookimpl
def render_resources(
    cmd: list[str], env: dict[str, str], options: ExampleOptions, namespace: str
) -> dict[str, Any]:
    return {
        "argv": cmd,
        "env": {
            **inherited_server_env(),  # never the server's GP_* configuration (it may hold secrets)
            **env,
            "EXAMPLE_GREETING": options.greeting,
            "GP_KERNEL_IP": "127.0.0.1",
        },
        "cwd": str(Path(options.sandbox_root) / namespace),
    }


@hookimpl
async def launch(resources: dict[str, Any]) -> dict[str, Any]:
    os.makedirs(resources["cwd"], exist_ok=True)
    try:
        process = await asyncio.create_subprocess_exec(
            *resources["argv"], env=resources["env"], cwd=resources["cwd"], start_new_session=True
        )
    except OSError as exc:
        raise BackendError(f"example backend could not start {resources['argv'][0]!r}: {exc}") from exc
    _processes[process.pid] = process
    return {"pid": process.pid, "sandbox": resources["cwd"], "ip": "127.0.0.1"}


@hookimpl
def poll(handle: dict[str, Any], launching: bool) -> int | None:
    process = _processes.get(handle["pid"])
    status = process.returncode if process else 0
    if status is not None and launching:
        raise LaunchError(f"example kernel exited with status {status} while starting")
    return status


@hookimpl
async def terminate(handle: dict[str, Any], force: bool) -> None:
    process = _processes.pop(handle["pid"], None)
    if process is None or process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
