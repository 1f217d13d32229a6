"""gp kernel launcher for R: run an IRkernel and report its connection info to the gp server.

The protocol is gp's docs/protocol.md (version 2), spoken by gp's own Python launcher code
(``launch_ipykernel.py``, imported from this directory or its parent): R has no X25519/AES-GCM in its base
packages, and one implementation of the payload crypto and the comm port is easier to keep right than two.

How one launch goes:

1. Parse the launcher flags (those of ``launch_ipykernel.py``, plus ``--rscript`` and ``--customAppName``).
2. Reserve the five ZMQ ports by binding them inside ``--port-range``, and bind the communication port.
3. Write IRkernel's connection file (private directory, mode 0600), fork, and in *this* process ``exec``
   ``Rscript launch_IRkernel.R``: the R kernel keeps this process's pid and process group, so every
   signal a backend sends to "the kernel" (SIGINT for interrupts, SIGTERM, SIGKILL) reaches R itself.
   The five reserved ports are released just before the exec; IRkernel binds them again.
4. The forked child (ignores SIGINT) waits until the R process itself listens on all five ports (checked
   in ``/proc``: the listening sockets must be R's, not another process's that took a released port),
   then sends the sealed connection info, and serves the communication port, delivering signals to R.
   It exits when R exits. If R never binds its ports or the server rejects the payload, it terminates R
   with the reason in the kernel's log, so the launch fails fast.

Needs only the standard library and pycryptodomex (through ``launch_ipykernel.py``), Rscript and the R
package IRkernel; never imports gp_core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
for _candidate in (_HERE, _HERE.parent, _HERE.parent / "python"):
    if (_candidate / "launch_ipykernel.py").is_file():
        sys.path.insert(0, str(_candidate))
        break
import launch_ipykernel as gp  # type: ignore[import-not-found]  # noqa: E402  (found next to this file)

R_SCRIPT = "launch_IRkernel.R"
ZMQ_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: How long R may take to load IRkernel and bind its ports before the launch is given up.
R_BIND_TIMEOUT = float(os.environ.get("GP_R_BIND_TIMEOUT", "60"))
PARENT_CHECK_INTERVAL = 0.5


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(R-specific flags, the common launcher flags of ``launch_ipykernel.parse_args``)."""
    parser = argparse.ArgumentParser(prog="launch_irkernel.py", add_help=False)
    parser.add_argument("--rscript", default=os.environ.get("GP_RSCRIPT") or "Rscript")
    parser.add_argument("--customAppName", dest="app_name", default=None)
    own, rest = parser.parse_known_args(argv)
    common = gp.parse_args(rest)
    if own.app_name is None:
        own.app_name = os.environ.get("KERNEL_NAME") or f"gp-kernel-{common.kernel_id}"
    return own, common


def reserve_port(ip: str, port_range: tuple[int, int]) -> socket.socket:
    """A bound (not listening) socket holding a port of the range until R is about to bind it."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if port_range == (0, 0):
            sock.bind((ip, 0))
        else:
            gp.bind_in_range(lambda port: sock.bind((ip, port)), *port_range)
    except BaseException:
        sock.close()
        raise
    return sock


def write_connection_file(directory: str, ip: str, ports: dict[str, int], key: str) -> str:
    info = {
        **ports,
        "ip": ip,
        "key": key,
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": os.environ.get("KERNEL_NAME", ""),
    }
    path = os.path.join(directory, "kernel.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(info, out)
    return path


# --------------------------------------------------------------------------------------------- /proc


def _socket_inodes(pid: int) -> set[str] | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_ports(pid: int) -> set[int] | None:
    """TCP ports ``pid`` itself listens on (from /proc); ``None`` where /proc cannot tell."""
    inodes = _socket_inodes(pid)
    if inodes is None:
        return None
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _connectable(ip: str, port: int) -> bool:
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else "::1" if ip == "::" else ip
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for_r_ports(r_pid: int, ip: str, ports: list[int]) -> None:
    """Return once the R process listens on every one of ``ports``.

    :raises gp.LaunchFailed: R exited, or did not bind them within ``R_BIND_TIMEOUT``.
    """
    deadline = time.monotonic() + R_BIND_TIMEOUT
    delay = 0.02
    while True:
        if os.getppid() != r_pid:
            raise gp.LaunchFailed("the R kernel exited before binding its ports (see its output above)")
        owned = listening_ports(r_pid)
        if owned is not None:
            if owned.issuperset(ports):
                return
        elif all(_connectable(ip, port) for port in ports):  # no /proc: the best check left
            return
        if time.monotonic() > deadline:
            missing = sorted(set(ports) - (owned or set()))
            raise gp.LaunchFailed(
                f"the R kernel did not listen on its ports {missing} within {R_BIND_TIMEOUT:g} s "
                "(another process took one, or IRkernel hangs); see its output above"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# --------------------------------------------------------------------------------------------- reporter


class KernelCommServer(gp.CommServer):
    """The comm port of gp's launcher, delivering signals to the R process instead of its own."""

    def __init__(
        self, sock: socket.socket, key: bytes, kernel_pid: int, signal_map: dict[int, int] | None = None
    ) -> None:
        super().__init__(sock, key, spark=False)
        self.kernel_pid = kernel_pid
        self.signal_map = signal_map or {}

    def _deliver(self, signum: int) -> None:
        signum = self.signal_map.get(signum, signum)  # e.g. Toree: SIGINT -> its --alternate-sigint
        try:
            os.kill(self.kernel_pid, signum)
        except OSError as exc:
            gp.say(f"could not send signal {signum} to the R kernel {self.kernel_pid}: {exc}")


def run_reporter(
    args: argparse.Namespace,
    r_pid: int,
    comm_sock: socket.socket,
    info: dict[str, Any],
    signal_map: dict[int, int] | None = None,
) -> int:
    """The forked child's life: report once R is ready, serve the comm port while R lives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for R, also when sent to the group
    try:
        wait_for_r_ports(r_pid, str(info["ip"]), [int(info[name]) for name in ZMQ_PORT_NAMES])
        comm = KernelCommServer(comm_sock, str(info["key"]).encode("utf-8"), r_pid, signal_map)
        comm.start()
        getpgid = getattr(os, "getpgid", None)
        payload = {
            "kernel_id": args.kernel_id,
            "launch_token": args.launch_token,
            **{name: info[name] for name in ZMQ_PORT_NAMES},
            "comm_port": comm.port,
            "ip": info["ip"],
            "key": info["key"],
            "transport": "tcp",
            "signature_scheme": "hmac-sha256",
            "kernel_name": os.environ.get("KERNEL_NAME", ""),
            "pid": r_pid,
            "pgid": getpgid(r_pid) if getpgid else None,
        }
        gp.send_payload(args.response_address, gp.seal_payload(args.public_key, args.kernel_id, payload))
    except gp.LaunchFailed as exc:
        gp.say(str(exc))
        if os.getppid() == r_pid:
            os.kill(r_pid, signal.SIGTERM)
        return 1
    server_pid = _server_pid()
    while os.getppid() == r_pid:  # reparented: R is gone, and with it the kernel
        if server_pid is not None and not _pid_exists(server_pid):
            # JPY_PARENT_PID: a local kernel dies with its server, as ipykernel's parent poller makes it.
            gp.say(f"the server process {server_pid} is gone: stopping the R kernel")
            os.kill(r_pid, signal.SIGTERM)
            server_pid = None
        time.sleep(PARENT_CHECK_INTERVAL)
    return 0


def _server_pid() -> int | None:
    text = os.environ.get("JPY_PARENT_PID", "")
    return int(text) if text.isdigit() and int(text) > 1 else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    own, args = parse_args(sys.argv[1:] if argv is None else argv)
    rscript = shutil.which(own.rscript)
    if rscript is None:
        gp.say(f"cannot find Rscript ({own.rscript!r}): install R and IRkernel, or pass --rscript")
        return 1
    r_launcher = _HERE / R_SCRIPT
    if not r_launcher.is_file():
        gp.say(f"{r_launcher} is missing: install the R launcher with jupyter image-bootstrap")
        return 1

    def r_argv(connection_file: str) -> list[str]:
        return [
            rscript,
            str(r_launcher),
            connection_file,
            args.spark_context_initialization_mode,
            own.app_name,
        ]

    return exec_kernel(args, r_argv)


def exec_kernel(
    args: argparse.Namespace,
    kernel_argv: Callable[[str], list[str]],
    signal_map: dict[int, int] | None = None,
) -> int:
    """Reserve the ports, write the connection file, fork the reporter, and exec ``kernel_argv(file)`` here
    (returns only when that fails). Shared by the R and the Scala (Toree) launchers."""
    os.environ.pop("GP_LAUNCH_TOKEN", None)  # one-shot, and no business of the kernel's subprocesses
    ip = args.ip
    try:
        reserved = [reserve_port(ip, args.port_range) for _ in ZMQ_PORT_NAMES]
        comm_sock = gp.bind_comm_socket(ip, args.port_range)
    except gp.LaunchFailed as exc:
        gp.say(str(exc))
        return 1
    ports = {name: sock.getsockname()[1] for name, sock in zip(ZMQ_PORT_NAMES, reserved, strict=True)}
    key = str(uuid.uuid4())
    connection_dir = tempfile.mkdtemp(prefix="gp-kernel-", dir=os.environ.get("GP_CONNECTION_DIR") or None)
    connection_file = write_connection_file(connection_dir, ip, ports, key)
    argv = kernel_argv(connection_file)
    kernel_pid = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the reporter and comm port
        for sock in reserved:
            sock.close()
        code = 1
        try:
            code = run_reporter(args, kernel_pid, comm_sock, {**ports, "ip": ip, "key": key}, signal_map)
        finally:
            shutil.rmtree(connection_dir, ignore_errors=True)
            os._exit(code)
    for sock in (*reserved, comm_sock):
        sock.close()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        gp.say(f"cannot run {argv[0]}: {exc}")
        os.kill(child, signal.SIGTERM)
        return 1
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
