"""The kernel lifecycle on a remote host: render the launch, start it, poll it, stop it.

Every SSH call runs in a worker thread (``asyncio.to_thread``); the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

from gp_core import BackendError, Handle, LaunchError, Resources, Rollback, TunnelRoute
from gp_core.spark import submit_args_for_request

from ._command import (
    LaunchRequest,
    find_launcher,
    is_connection_dir,
    kernel_log_path,
    launch_script,
    parse_report,
    poll_script,
    signal_script,
    stop_script,
    uploaded_launcher_path,
)
from ._connections import POOL, CommandResult, SshTarget
from ._options import SshOptions
from ._placement import PLACER

#: Kernels launched by this process that no poll has yet seen running after start-up: a forced stop of
#: one of them is a failed or timed-out launch, whose log is worth keeping.
_starting: set[str] = set()
#: Kernels whose launch failed (they died during start-up): their logs are kept.
_failed: set[str] = set()
#: Extra seconds a stop script may take beyond its own waits (connection, /proc scans).
_STOP_SLACK = 10.0


def target_for(host: str, options: SshOptions, port: int | None = None, user: str | None = None) -> SshTarget:
    connect_timeout = options.connect_timeout
    launch_timeout = getattr(options.parent, "launch_timeout", None)  # the provisioner, when core built us
    if isinstance(launch_timeout, int | float) and launch_timeout > 0:
        connect_timeout = min(connect_timeout, float(launch_timeout))
    return SshTarget(
        host=host,
        port=port or options.ssh_port,
        user=user or options.remote_user,
        key_file=options.ssh_key_file,
        known_hosts_file=options.known_hosts_file,
        host_key_policy=options.host_key_policy,
        connect_timeout=connect_timeout,
        gss_auth=options.gss_auth,
    )


def place(kernel_id: str, options: SshOptions, env: dict[str, str], rollback: Rollback) -> str:
    """Pick the kernel's host and count it there; a launch that fails before its handle exists uncounts it
    (core runs ``rollback``), afterwards ``stop`` does."""
    host = PLACER.place(
        kernel_id,
        options.remote_hosts,
        options.load_balancing_algorithm,
        requested=env.get("KERNEL_REMOTE_HOST") or None,
    )
    rollback.add(functools.partial(PLACER.release, kernel_id), what=f"kernel {kernel_id}'s place on {host}")
    return host


def render(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    options: SshOptions,
    host: str | None,
    request_env: dict[str, str] | None = None,
) -> Resources:
    """The launch script for ``host`` and where its products go (pure: reads the launcher, writes nothing)."""
    if not host:
        raise BackendError(f"Kernel {kernel_id} has no host (resolve_namespace did not place it)")
    env = {**env, "KERNEL_ID": kernel_id}  # poll and stop recognise the kernel by it
    # A Spark kernel: its application named after the kernel, the request's extra options, impersonation.
    env = submit_args_for_request(
        env,
        request_env or {},
        kernel_id,
        impersonate=options.impersonation_enabled,
        allow_request_opts=options.allow_request_spark_opts,
    )
    log_path = kernel_log_path(options.kernel_log_dir, kernel_id)
    launcher_index = find_launcher(cmd)
    upload_path = source = None
    if launcher_index is not None and options.upload_launcher != "never":
        local_launcher = Path(cmd[launcher_index])
        if local_launcher.is_file():
            source = local_launcher.read_text()
            upload_path = uploaded_launcher_path(options.kernel_log_dir, kernel_id)
        elif options.upload_launcher == "always":
            raise BackendError(
                f"upload_launcher is 'always' but the launcher {local_launcher} does not exist on this server"
            )
    working_dir = env.get("KERNEL_WORKING_DIR") if options.mirror_working_dirs else None
    script = launch_script(
        LaunchRequest(
            kernel_id=kernel_id,
            argv=cmd,
            env=env,
            log_path=log_path,
            working_dir=working_dir or None,
            launcher_index=launcher_index,
            upload=options.upload_launcher,
            upload_path=upload_path,
            launcher_source=source,
        )
    )
    return {
        "kernel_id": kernel_id,
        "host": host,
        "port": options.ssh_port,
        "user": options.remote_user,
        "log_path": log_path,
        "upload_path": upload_path,
        "script": script,
    }


async def _run(target: SshTarget, script: str, timeout: float) -> CommandResult:
    """Run ``script`` on its own channel (for scripts that wait, like stopping a kernel)."""
    return await asyncio.to_thread(POOL.run, target, script, timeout)


async def _run_quick(target: SshTarget, script: str, timeout: float, *, idempotent: bool) -> CommandResult:
    """Run a short ``script`` on the shell kept open on the host (see ``ConnectionPool.run_quick``)."""
    return await asyncio.to_thread(POOL.run_quick, target, script, timeout, idempotent=idempotent)


async def launch(
    kernel_id: str, resources: Resources, options: SshOptions, rollback: Rollback, log: logging.Logger
) -> Handle:
    host = resources["host"]
    target = target_for(host, options, resources["port"], resources["user"])
    log.debug("Starting kernel %s on %s", kernel_id, target)

    def start() -> CommandResult:
        return POOL.run_quick(target, resources["script"], options.command_timeout, idempotent=False)

    async def stop_started(result: CommandResult) -> None:
        """Undo a launch command that ran while the launch failed or was cancelled."""
        try:
            handle = _handle_from(result, kernel_id, resources, target)
        except BackendError:
            return  # it started nothing
        await stop(handle, options, restart=False, force=True, log=log)

    result = await rollback.create_in_thread(start, stop_started, what=f"kernel {kernel_id} on {host}")
    handle = _handle_from(result, kernel_id, resources, target)
    _failed.discard(kernel_id)
    _starting.add(kernel_id)
    log.info(
        "Kernel %s started on %s as process group %d (log %s:%s)",
        kernel_id,
        target,
        handle["pid"],
        host,
        handle["log_path"],
    )
    return handle


def _handle_from(result: CommandResult, kernel_id: str, resources: Resources, target: SshTarget) -> Handle:
    values, _ = parse_report(result.stdout)
    pid = values.get("pid", "")
    connection_dir = values.get("conn", "")
    log_dir = resources["log_path"].rpartition("/")[0] or "/"
    if result.exit_status != 0 or not (pid.isascii() and pid.isdigit()):
        reason = result.stderr.strip() or result.stdout.strip() or f"exit status {result.exit_status}"
        raise BackendError(f"Could not start kernel {kernel_id} on host {target.host} ({target}): {reason}")
    return {
        "kernel_id": kernel_id,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "pid": int(pid),
        "pgid": int(pid),  # setsid: the launcher leads its own process group
        "log_path": resources["log_path"],
        "upload_path": resources.get("upload_path"),
        "connection_dir": connection_dir if is_connection_dir(connection_dir, log_dir) else None,
        "ip": target.host,  # core connects to the kernel's ports on this host
    }


async def poll(handle: Handle, options: SshOptions, launching: bool, log: logging.Logger) -> int | None:
    kernel_id = handle["kernel_id"]
    if not launching:
        _starting.discard(kernel_id)
    target = target_for(handle["host"], options, handle["port"], handle["user"])
    script = poll_script(handle["pid"], kernel_id, handle["log_path"] if launching else None)
    # A connection hiccup raises BackendError: not a failed kernel (core retries while launching, and
    # takes the kernel as alive afterwards).
    result = await _run_quick(target, script, options.command_timeout, idempotent=True)
    values, log_tail = parse_report(result.stdout)
    state = values.get("state")
    if state == "running":
        return None
    if state != "gone":
        answer = (result.stderr or result.stdout).strip()[-500:]
        raise BackendError(f"Unexpected answer checking kernel {kernel_id} on {target}: {answer}")
    if launching:
        _failed.add(kernel_id)
        raise LaunchError(
            f"Kernel {kernel_id} exited during start-up on host {handle['host']}. "
            f"Last lines of its log ({handle['host']}:{handle['log_path']}):\n{log_tail.strip() or '(empty)'}"
        )
    return 0


async def signal(handle: Handle, options: SshOptions, signum: int, log: logging.Logger) -> bool:
    """Signal the kernel's process group over SSH (when its launcher no longer answers on its port)."""
    target = target_for(handle["host"], options, handle["port"], handle["user"])
    script = signal_script(handle["pgid"], handle["kernel_id"], signum)
    result = await _run_quick(target, script, options.command_timeout, idempotent=False)
    outcome = parse_report(result.stdout)[0].get("result")
    if outcome is None:
        raise BackendError(
            f"Could not signal kernel {handle['kernel_id']} on {target}: "
            f"{result.stderr.strip() or f'exit status {result.exit_status}'}"
        )
    log.debug("Signal %d to kernel %s on %s: %s", signum, handle["kernel_id"], target, outcome)
    return outcome == "sent"


async def stop(handle: Handle, options: SshOptions, restart: bool, force: bool, log: logging.Logger) -> None:
    """Stop the kernel's process group over SSH and remove its files (see ``keep_kernel_logs``)."""
    kernel_id = handle["kernel_id"]
    failed_start = kernel_id in _failed or (force and kernel_id in _starting)
    keep_log = options.keep_kernel_logs or restart or failed_start
    remove = [handle["upload_path"]] if handle.get("upload_path") else []
    if not keep_log:
        remove.append(handle["log_path"])
    target = target_for(handle["host"], options, handle["port"], handle["user"])
    remove_dirs = [handle["connection_dir"]] if handle.get("connection_dir") else []
    script = stop_script(
        handle["pgid"],
        kernel_id,
        force=force,
        stop_timeout=options.stop_timeout,
        remove=remove,
        remove_dirs=remove_dirs,
    )
    try:
        result = await _run(target, script, options.command_timeout + options.stop_timeout + _STOP_SLACK)
    finally:
        # Released even when the host cannot be reached: a kernel we cannot see must not block its host
        # in least-connection forever.
        PLACER.release(kernel_id)
        _starting.discard(kernel_id)
        _failed.discard(kernel_id)
    values, _ = parse_report(result.stdout)
    outcome = values.get("result")
    if outcome is None:
        raise BackendError(
            f"Could not stop kernel {kernel_id} on {target}: "
            f"{result.stderr.strip() or f'exit status {result.exit_status}'}"
        )
    if outcome == "alive":
        raise BackendError(
            f"Kernel {kernel_id} (process group {handle['pgid']}) on host {handle['host']} survived SIGKILL"
        )
    if outcome == "foreign":
        log.warning(
            "Kernel %s is gone from %s; its pid %d now belongs to another process, which was left alone",
            kernel_id,
            handle["host"],
            handle["pid"],
        )
    if failed_start and not options.keep_kernel_logs:
        log.info(
            "Kept the log of kernel %s, whose launch failed: %s:%s",
            kernel_id,
            handle["host"],
            handle["log_path"],
        )
    log.debug("Kernel %s on %s: %s", kernel_id, target, outcome)


def tunnel_route(handle: Handle, options: SshOptions) -> TunnelRoute:
    """Tunnel through the pooled SSH connection to the kernel's host (the one that launched it)."""
    return route_through(target_for(handle["host"], options, handle["port"], handle["user"]))


def route_through(target: SshTarget, kernel_ip: str | None = None) -> TunnelRoute:
    """A :class:`gp_core.TunnelRoute` of ``direct-tcpip`` channels on the pooled connection to ``target``."""

    def open_channel(remote: tuple[str, int], keepalive: float) -> Any:
        transport = POOL.client(target).get_transport()
        if transport is None:
            raise BackendError(f"The SSH connection to {target} is closed")
        transport.set_keepalive(max(1, round(keepalive)))
        try:
            return transport.open_channel(
                "direct-tcpip", remote, ("127.0.0.1", 0), timeout=target.connect_timeout
            )
        except Exception as exc:  # paramiko's ChannelException, SSHException, EOFError ...
            raise BackendError(f"{target} refused to forward to {remote[0]}:{remote[1]}: {exc}") from exc

    return TunnelRoute(open_channel, f"ssh {target}", kernel_ip)
