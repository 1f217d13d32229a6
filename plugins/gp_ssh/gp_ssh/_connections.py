"""A per-process pool of authenticated paramiko clients, and running scripts over them.

Everything here blocks (paramiko is synchronous): callers run it in ``asyncio.to_thread``. One client
per :class:`SshTarget` is kept open with keepalives, so repeated launches, polls and stops on a host
reuse one TCP connection and SSH handshake; each command is a new channel on it. A per-target lock
makes concurrent first uses share one handshake. A client whose transport died is replaced; a command
whose channel cannot be opened on a pooled client is retried once on a fresh connection (nothing ran).

Short scripts (launch, poll) go to one ``sh -s`` kept open per target (:meth:`ConnectionPool.run_quick`):
every new exec channel makes sshd start the user's login shell, which costs ~100 ms with a heavy
``.bashrc``; a script on the kept shell costs a fork. Scripts that wait (stopping a kernel) get their own
channel, so they never hold up the polls of other kernels on that host.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from gp_core import BackendError

log = logging.getLogger("gp_ssh")

#: The SSH password is read from the server's environment at connect time, never from kernel.json.
PASSWORD_ENV = "GP_REMOTE_PWD"
_KEEPALIVE_SECONDS = 30
_SYSTEM_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. Every field is part of the pool key: a kernelspec with another key file
    or host-key policy never borrows a connection that was authenticated differently."""

    host: str
    port: int
    user: str
    key_file: str = ""
    known_hosts_file: str = ""
    host_key_policy: str = "reject"
    connect_timeout: float = 10.0
    gss_auth: bool = False

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class SshConnectionError(BackendError):
    """The host could not be reached or refused the login."""


class ConnectionPool:
    """Authenticated clients by target; thread-safe."""

    def __init__(self) -> None:
        self._clients: dict[SshTarget, paramiko.SSHClient] = {}
        self._target_locks: dict[SshTarget, threading.Lock] = {}
        self._shells: dict[SshTarget, _Shell] = {}
        self._lock = threading.Lock()
        #: Handshakes made so far (tests and benchmarks check that connections are reused).
        self.handshakes = 0

    def client(self, target: SshTarget) -> paramiko.SSHClient:
        """A live, authenticated client for ``target``: the pooled one, or a new connection."""
        with self._lock:
            target_lock = self._target_locks.setdefault(target, threading.Lock())
        with target_lock:
            client = self._clients.get(target)
            if client is not None and _is_alive(client):
                return client
            if client is not None:
                log.debug("SSH connection to %s is gone; reconnecting", target)
                self._drop(target, client)
            client = _connect(target)
            with self._lock:
                self.handshakes += 1
                self._clients[target] = client
            return client

    def discard(self, target: SshTarget, client: paramiko.SSHClient) -> None:
        """Close ``client`` and forget it, unless the pool already holds a newer one."""
        with self._lock:
            if self._clients.get(target) is client:
                del self._clients[target]
        client.close()

    def _drop(self, target: SshTarget, client: paramiko.SSHClient) -> None:
        with self._lock:
            self._clients.pop(target, None)
        client.close()

    def close_all(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._shells.clear()
        for client in clients:
            client.close()

    def run(self, target: SshTarget, script: str, timeout: float) -> CommandResult:
        """Run ``script`` with ``sh -s`` on the target and return its exit status and output.

        :raises SshConnectionError: When the host cannot be reached or refuses the login.
        :raises BackendError: When the command does not finish within ``timeout`` seconds.
        """
        client = self.client(target)
        try:
            channel = _open_channel(client, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug(
                "Could not open a channel on the pooled connection to %s (%s); reconnecting", target, exc
            )
            self.discard(target, client)
            client = self.client(target)
            try:
                channel = _open_channel(client, timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc2:
                self.discard(target, client)
                raise SshConnectionError(f"SSH connection to {target} failed: {exc2}") from exc2
        try:
            return _exec(channel, script, timeout, target)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.discard(target, client)  # a connection that failed mid-command is not trusted again
            raise BackendError(f"Remote command on {target} failed: {exc}") from exc
        finally:
            channel.close()

    def run_quick(self, target: SshTarget, script: str, timeout: float, *, idempotent: bool) -> CommandResult:
        """Like :meth:`run` with stderr merged into stdout, on a shell kept open on the target.

        For short scripts that do not read stdin (launch, poll); scripts on one target run one at a time.
        Falls back to :meth:`run` when the shell cannot be used; once a script was sent, only an
        ``idempotent`` one is run again (a launch that may have started a kernel is not).
        """
        client = self.client(target)
        with self._lock:
            target_lock = self._target_locks.setdefault(target, threading.Lock())
        with target_lock:
            shell = self._shells.get(target)
            if shell is None or shell.client is not client or shell.broken:
                try:
                    shell = self._shells[target] = _Shell(client, timeout)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    log.debug("Cannot open a shell on %s (%s); using a channel per command", target, exc)
                    return self.run(target, script, timeout)
        try:
            return shell.run(script, timeout, target)
        except _NotSent as exc:
            log.debug("The shell on %s is gone (%s); using a channel per command", target, exc.__cause__)
            return self.run(target, script, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if idempotent:
                log.debug("The shell on %s failed (%s); using a channel per command", target, exc)
                return self.run(target, script, timeout)
            raise BackendError(f"Remote command on {target} failed: the connection broke ({exc})") from exc


class _NotSent(Exception):
    """The kept shell was unusable before the script reached it: running it elsewhere is safe."""


class _Shell:
    """One ``sh -s`` kept running on a host; scripts are fed to it one at a time, each in a subshell."""

    def __init__(self, client: paramiko.SSHClient, timeout: float) -> None:
        self.client = client
        self.broken = False
        self._lock = threading.Lock()
        self._channel = _open_channel(client, timeout)
        self._channel.exec_command("sh -s")

    def run(self, script: str, timeout: float, target: SshTarget) -> CommandResult:
        with self._lock:
            try:
                if self.broken or self._channel.closed or self._channel.eof_received:
                    raise EOFError("the remote shell exited")
                end = f"gp-ssh-end-{secrets.token_hex(8)}"
                # stdin from /dev/null: a command reading stdin would otherwise eat the scripts that follow.
                wrapped = f"(\n{script}\n) < /dev/null 2>&1\nprintf '\\n%s %s\\n' {end} \"$?\"\n"
                self._channel.sendall(wrapped.encode())
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._close()
                raise _NotSent() from exc
            try:
                return self._read_until(end, timeout, target)
            except BaseException:
                self._close()  # unknown state (half-read output, a hung command): never reused
                raise

    def _close(self) -> None:
        self.broken = True
        self._channel.close()

    def _read_until(self, end: str, timeout: float, target: SshTarget) -> CommandResult:
        finished = re.compile(rb"\n" + end.encode() + rb" (\d+)\n")
        output = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            match = finished.search(output)
            if match:
                while self._channel.recv_stderr_ready():  # the shell's own complaints: not ours to keep
                    self._channel.recv_stderr(65536)
                return CommandResult(
                    int(match.group(1)), output[: match.start()].decode(errors="replace"), ""
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"Remote command on {target} did not finish within {timeout:g} s")
            self._channel.settimeout(remaining)
            try:
                chunk = self._channel.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError("the remote shell exited")
            output += chunk


def _is_alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active() and transport.is_authenticated()


def _open_channel(client: paramiko.SSHClient, timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("transport is closed")
    return transport.open_session(timeout=timeout)


def _exec(channel: paramiko.Channel, script: str, timeout: float, target: SshTarget) -> CommandResult:
    deadline = time.monotonic() + timeout
    channel.settimeout(timeout)
    channel.exec_command("sh -s")
    channel.sendall(script.encode())
    channel.shutdown_write()
    stdout, stderr = bytearray(), bytearray()
    # Drain stdout and stderr together: a remote that fills one while we block on the other would stall.
    while True:
        while channel.recv_ready():
            stdout += channel.recv(65536)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        # The exit status is not subject to flow control and may overtake output still held back by the
        # channel window; EOF (or close) comes only after all output, so wait for both.
        finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendError(f"Remote command on {target} did not finish within {timeout:g} s")
        select.select([channel], [], [], min(remaining, 0.05))
    return CommandResult(
        channel.recv_exit_status(), stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


def _connect(target: SshTarget) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    started = time.monotonic()
    try:
        _load_host_keys(client, target)
        client.set_missing_host_key_policy(_policy(target.host_key_policy))
        key_file = os.path.expanduser(target.key_file) if target.key_file else None
        timeout = target.connect_timeout
        gss = {}
        if target.gss_auth:
            check_gss_support()
            # Kerberos: the ticket of the server's user, delegated so the kernel can reach HDFS/YARN.
            gss = {"gss_auth": True, "gss_kex": True, "gss_deleg_creds": True, "gss_host": target.host}
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            password=os.environ.get(PASSWORD_ENV) or None,
            key_filename=key_file,
            # An explicit key is the only identity offered (like IdentitiesOnly): predictable, and a
            # refused key is reported as such instead of after trying every key in ~/.ssh.
            look_for_keys=key_file is None,
            allow_agent=key_file is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            **gss,
        )
    except BaseException as exc:
        client.close()
        if isinstance(exc, Exception):
            timed_out = time.monotonic() - started >= target.connect_timeout
            raise _connect_error(target, exc, timed_out) from exc
        raise
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(_KEEPALIVE_SECONDS)
        # Small requests answered at once: without this, Nagle holds a request's last packet until the
        # host ACKs the one before, which its delayed ACK puts off ~40 ms.
        with contextlib.suppress(OSError, AttributeError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def check_gss_support() -> None:
    """:raises SshConnectionError: This paramiko cannot authenticate with GSS-API (Kerberos)."""
    import inspect

    if "gss_auth" in inspect.signature(paramiko.SSHClient.connect).parameters and getattr(
        paramiko, "GSS_AUTH_AVAILABLE", False
    ):
        return
    raise SshConnectionError(
        f"GSS-API authentication (gss_auth, env GP_REMOTE_GSS_SSH) is not available: paramiko "
        f"{paramiko.__version__} has no GSS-API support (paramiko 5.0 removed it; it needs paramiko < 5 "
        "with python-gssapi installed)"
    )


def _load_host_keys(client: paramiko.SSHClient, target: SshTarget) -> None:
    if target.known_hosts_file:
        path = Path(target.known_hosts_file).expanduser()
        try:
            client.load_system_host_keys(str(path))  # "system" keys are read, never written back
        except OSError as exc:
            raise SshConnectionError(f"Cannot read the known_hosts file {path}: {exc}") from exc
        return
    for name in _SYSTEM_KNOWN_HOSTS:
        path = Path(name).expanduser()
        if path.is_file():
            try:
                client.load_system_host_keys(str(path))
            except OSError as exc:
                log.warning("Cannot read known_hosts file %s: %s", path, exc)


def _policy(name: str) -> paramiko.MissingHostKeyPolicy:
    if name == "auto-add":
        return paramiko.AutoAddPolicy()
    if name == "warn":
        return paramiko.WarningPolicy()
    return paramiko.RejectPolicy()


def _connect_error(target: SshTarget, exc: Exception, timed_out: bool = False) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return SshConnectionError(
            f"The host key of {target.host}:{target.port} does not match the known one: refusing to connect "
            "(if the host was reinstalled, update the known_hosts file)"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        how = f"key file {target.key_file}" if target.key_file else "the ssh agent and ~/.ssh keys"
        if os.environ.get(PASSWORD_ENV):
            how += f" and the password from {PASSWORD_ENV}"
        return SshConnectionError(f"SSH login to {target} was refused (tried {how}): {exc}")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        where = target.known_hosts_file or " or ".join(_SYSTEM_KNOWN_HOSTS)
        return SshConnectionError(
            f"The host key of {target.host}:{target.port} is unknown: add it to {where} (ssh-keyscan), "
            "or set host_key_policy (GP_SSH_HOST_KEY_POLICY) to warn or auto-add"
        )
    # paramiko gives up on a silent server with odd messages ("No existing session", "Error reading SSH
    # protocol banner"): whatever it says, running out of time is the story.
    if timed_out or isinstance(exc, TimeoutError | socket.timeout):
        return SshConnectionError(
            f"Timed out after {target.connect_timeout:g} s connecting to {target} (connect_timeout)"
        )
    if isinstance(exc, OSError):
        return SshConnectionError(f"Cannot connect to {target}: {exc.strerror or exc}")
    return SshConnectionError(f"SSH connection to {target} failed: {exc}")


#: The server process's pool.
POOL = ConnectionPool()
atexit.register(POOL.close_all)
