"""The connection pool: reuse, concurrent first use, reconnecting, and clear errors for bad hosts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gp_ssh._connections import ConnectionPool, SshConnectionError, SshTarget


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    pool = ConnectionPool()
    yield pool
    pool.close_all()


def target(sshd: dict[str, Any], host: str = "127.0.0.1", **overrides: Any) -> SshTarget:
    values = {
        "host": host,
        "port": sshd["port"],
        "user": "root",
        "key_file": str(sshd["dir"] / "client_key"),
        "known_hosts_file": str(sshd["dir"] / "known_hosts"),
        **overrides,
    }
    return SshTarget(**values)


@pytest.mark.ssh
def test_commands_share_one_connection(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd, "127.0.0.2")
    for word in ("one", "two", "three"):
        result = pool.run(where, f"echo {word}; echo err >&2; exit 3\n", timeout=30)
        assert (result.exit_status, result.stdout, result.stderr) == (3, f"{word}\n", "err\n")
    assert pool.handshakes == 1


@pytest.mark.ssh
def test_connections_send_small_requests_at_once(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    transport = pool.client(target(sshd)).get_transport()
    assert transport is not None
    # Nagle would hold a request's last small packet for the host's delayed ACK (~40 ms).
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.ssh
def test_concurrent_first_use_makes_one_handshake(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd, "127.0.0.3")
    barrier = threading.Barrier(8)
    outputs: list[str] = []

    def run(index: int) -> None:
        barrier.wait()
        outputs.append(pool.run(where, f"echo {index}\n", timeout=60).stdout.strip())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outputs) == [str(i) for i in range(8)]
    assert pool.handshakes == 1


@pytest.mark.ssh
def test_a_dead_connection_is_replaced(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd)
    pool.run(where, "true\n", timeout=30)
    pool.client(where).get_transport().close()  # type: ignore[union-attr]  # as if the host rebooted
    assert pool.run(where, "echo back\n", timeout=30).stdout == "back\n"
    assert pool.handshakes == 2


@pytest.mark.ssh
def test_different_credentials_never_share_a_connection(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    pool.run(target(sshd), "true\n", timeout=30)
    pool.run(target(sshd, host_key_policy="warn"), "true\n", timeout=30)
    assert pool.handshakes == 2


@pytest.mark.ssh
def test_large_output_on_both_streams(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    # More than an SSH window on stderr while stdout is also written: neither stream may stall.
    script = "i=0; while [ $i -lt 4000 ]; do echo 'line of stderr output, padded to be long' >&2; i=$((i+1)); done; echo done\n"
    result = pool.run(target(sshd), script, timeout=60)
    assert result.stdout == "done\n"
    assert result.stderr.count("\n") == 4000


@pytest.mark.ssh
def test_a_slow_command_times_out(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="did not finish within 0.5 s"):
        pool.run(target(sshd), "sleep 5\n", timeout=0.5)


def test_nothing_listening(pool: ConnectionPool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SshConnectionError, match=rf"Cannot connect to root@127\.0\.0\.1:{port}"):
        pool.run(SshTarget("127.0.0.1", port, "root"), "true\n", timeout=5)
    assert pool.handshakes == 0


def test_a_host_that_never_speaks_ssh_times_out(pool: ConnectionPool) -> None:
    with socket.socket() as silent:  # accepts TCP (backlog) but never sends an SSH banner
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        where = SshTarget("127.0.0.1", port, "root", connect_timeout=0.5)
        with pytest.raises(
            SshConnectionError, match=rf"Timed out after 0.5 s connecting to root@127\.0\.0\.1:{port}"
        ):
            pool.run(where, "true\n", timeout=5)


def test_an_unreadable_known_hosts_file_is_reported(pool: ConnectionPool, tmp_path: Any) -> None:
    where = SshTarget("127.0.0.1", 22, "root", known_hosts_file=str(tmp_path / "missing"))
    with pytest.raises(SshConnectionError, match="Cannot read the known_hosts file"):
        pool.run(where, "true\n", timeout=5)


@pytest.mark.ssh
def test_quick_commands_share_one_shell(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd, "127.0.0.2")
    first = pool.run_quick(where, "echo $$; exit 4", timeout=30, idempotent=True)
    assert first.exit_status == 4
    for _ in range(3):  # the same shell ($$ in a subshell is its pid) answers, and `exit` did not end it
        result = pool.run_quick(
            where, "echo $$; echo to-stderr >&2; printf no-newline", timeout=30, idempotent=True
        )
        assert result.stdout.splitlines() == [first.stdout.strip(), "to-stderr", "no-newline"]
    assert pool.handshakes == 1


@pytest.mark.ssh
def test_a_quick_command_cannot_eat_the_next_one(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd)
    assert (
        pool.run_quick(where, "cat; echo read-nothing", timeout=30, idempotent=True).stdout
        == "read-nothing\n"
    )
    assert pool.run_quick(where, "echo still-here", timeout=30, idempotent=True).stdout == "still-here\n"


@pytest.mark.ssh
def test_a_hung_quick_command_times_out_and_the_shell_is_replaced(
    pool: ConnectionPool, sshd: dict[str, Any]
) -> None:
    where = target(sshd)
    with pytest.raises(Exception, match="did not finish within 0.5 s"):
        pool.run_quick(where, "sleep 5", timeout=0.5, idempotent=True)
    assert pool.run_quick(where, "echo fresh", timeout=30, idempotent=True).stdout == "fresh\n"


@pytest.mark.ssh
def test_a_dead_shell_falls_back_to_a_channel(pool: ConnectionPool, sshd: dict[str, Any]) -> None:
    where = target(sshd)
    pool.run_quick(where, "true", timeout=30, idempotent=True)
    shell_pid = pool.run_quick(where, "echo $$", timeout=30, idempotent=True).stdout.strip()
    pool.run(where, f"kill -s KILL {shell_pid}\n", timeout=30)  # the kept shell dies under us
    assert pool.run_quick(where, "echo answered", timeout=30, idempotent=True).stdout == "answered\n"
    assert pool.run_quick(where, "echo again", timeout=30, idempotent=True).stdout == "again\n"
    assert pool.handshakes == 1


@pytest.mark.ssh
def test_a_launch_is_never_run_twice(pool: ConnectionPool, sshd: dict[str, Any], tmp_path: Any) -> None:
    # The shell dies after the script reached it: it may have done its work, so it is not repeated.
    where = target(sshd)
    counter = tmp_path / "runs"
    script = f"echo run >> {counter}; kill -s KILL $$"
    with pytest.raises(Exception, match="connection broke"):
        pool.run_quick(where, script, timeout=30, idempotent=False)
    assert counter.read_text() == "run\n"
    assert pool.run_quick(where, "echo next", timeout=30, idempotent=False).stdout == "next\n"


def test_the_password_comes_from_the_environment_and_is_never_shown(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import paramiko

    secret = "s3cr3t-pa55word"
    monkeypatch.setenv("GP_REMOTE_PWD", secret)
    seen: dict[str, Any] = {}

    def refuse(self: Any, hostname: str, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise paramiko.AuthenticationException("Authentication failed.")

    monkeypatch.setattr(paramiko.SSHClient, "connect", refuse)
    caplog.set_level("DEBUG")
    with pytest.raises(SshConnectionError) as refused:
        pool.run(SshTarget("127.0.0.1", 22, "alice"), "true\n", timeout=5)
    assert seen["password"] == secret
    assert seen["username"] == "alice"
    assert "password from GP_REMOTE_PWD" in str(refused.value)
    assert secret not in str(refused.value)
    assert secret not in caplog.text
