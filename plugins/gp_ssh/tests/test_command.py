"""The remote shell scripts, run for real with the local ``sh -s`` (what sshd runs them with), no SSH.

These prove the quoting: hostile values reach the kernel's environment byte for byte and never execute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gp_ssh._command import (
    EXIT_NO_INTERPRETER,
    EXIT_NO_LAUNCHER,
    EXIT_NO_WORKING_DIR,
    LaunchRequest,
    check_env,
    find_launcher,
    launch_script,
    parse_report,
    poll_script,
    signal_script,
    stop_script,
)

from gp_core import BackendError

HOSTILE = {
    "KERNEL_SUBST": "$(touch {canary}/subst)",
    "KERNEL_BACKTICK": "`touch {canary}/backtick`",
    "KERNEL_SEMICOLON": "x; touch {canary}/semicolon; echo",
    "KERNEL_QUOTES": "it's a \"quoted\" 'value' \\ with \\\\ backslashes",
    "KERNEL_NEWLINE": "line one\ntouch {canary}/newline\n",
    "KERNEL_DOLLAR": "$HOME ${{HOME}} $0 $$ $! $? $@ $*",
    "KERNEL_GLOB": "* ? [a-z] ~ {{a,b}}",
    "KERNEL_AMP": "a & touch {canary}/amp & b | c > {canary}/redirect",
    "KERNEL_USERNAME": "bob'; touch {canary}/username; echo '",
    "KERNEL_EMPTY": "",
    "KERNEL_UNICODE": "naïve ✓ \t tab",
}

DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), sys.stdout); sys.stdout.write('\\n')"


def run_sh(script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=timeout)


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_exit(pid: int) -> None:
    """Wait (no deadline: pytest-timeout bounds it) until ``pid`` is gone or a zombie."""
    while process_state(pid) not in (None, "Z"):
        time.sleep(0.02)


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids (= process groups) started by a test; SIGKILLed at teardown whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def launch(request: LaunchRequest, started: list[int]) -> int:
    result = run_sh(launch_script(request))
    assert result.returncode == 0, result.stderr
    values, _ = parse_report(result.stdout)
    pid = int(values["pid"])
    started.append(pid)
    return pid


def test_hostile_values_reach_the_kernel_verbatim_and_never_run(tmp_path: Path, started: list[int]) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    env = {name: value.format(canary=canary) for name, value in HOSTILE.items()}
    log = tmp_path / "logs" / "kernel.log"
    kernel_id = str(uuid.uuid4())
    request = LaunchRequest(
        kernel_id, [sys.executable, "-c", DUMP_ENV], {**env, "KERNEL_ID": kernel_id}, str(log)
    )
    pid = launch(request, started)
    wait_exit(pid)
    dumped = json.loads(log.read_text().splitlines()[-1])
    for name, value in env.items():
        assert dumped[name] == value, name
    assert list(canary.iterdir()) == []


def test_argv_is_quoted_too(tmp_path: Path, started: list[int]) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    args = [f"$(touch {canary}/a)", f"; touch {canary}/b", "two words", "'", '"', "\n", "*"]
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    log = tmp_path / "kernel.log"
    pid = launch(
        LaunchRequest("k", [sys.executable, "-c", code, *args], {"KERNEL_ID": "k"}, str(log)), started
    )
    wait_exit(pid)
    assert json.loads(log.read_text().splitlines()[-1]) == args
    assert list(canary.iterdir()) == []


def test_the_kernel_leads_its_own_process_group_and_the_token_is_not_in_argv(
    tmp_path: Path, started: list[int]
) -> None:
    log = tmp_path / "kernel.log"
    env = {"KERNEL_ID": "k", "GP_LAUNCH_TOKEN": "secret-token-value"}
    pid = launch(LaunchRequest("k", ["sleep", "30"], env, str(log)), started)
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    assert b"secret-token-value" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"GP_LAUNCH_TOKEN=secret-token-value" in Path(f"/proc/{pid}/environ").read_bytes()
    assert (log.stat().st_mode & 0o077) == 0  # the log is private to the remote user


def test_a_kernelspec_path_does_not_change_the_tools_the_script_uses(
    tmp_path: Path, started: list[int]
) -> None:
    log = tmp_path / "kernel.log"
    env = {"KERNEL_ID": "k", "PATH": str(tmp_path)}  # no setsid, nohup, mkdir or rm in there
    pid = launch(LaunchRequest("k", [sys.executable, "-c", DUMP_ENV], env, str(log)), started)
    wait_exit(pid)
    assert json.loads(log.read_text().splitlines()[-1])["PATH"] == str(tmp_path)


def test_missing_interpreter_fails_before_anything_is_created(tmp_path: Path) -> None:
    log = tmp_path / "kernel.log"
    result = run_sh(launch_script(LaunchRequest("k", ["/nonexistent/python3", "x.py"], {}, str(log))))
    assert result.returncode == EXIT_NO_INTERPRETER
    assert "/nonexistent/python3 was not found" in result.stderr
    assert not log.exists()


def test_missing_working_dir_is_reported(tmp_path: Path) -> None:
    request = LaunchRequest("k", ["true"], {}, str(tmp_path / "l.log"), working_dir=str(tmp_path / "nope"))
    result = run_sh(launch_script(request))
    assert result.returncode == EXIT_NO_WORKING_DIR
    assert "working directory" in result.stderr


def test_working_dir(tmp_path: Path, started: list[int]) -> None:
    work = tmp_path / "dir with 'quote' and $(x)"
    work.mkdir()
    log = tmp_path / "kernel.log"
    code = "import os; print(os.getcwd())"
    pid = launch(
        LaunchRequest("k", [sys.executable, "-c", code], {}, str(log), working_dir=str(work)), started
    )
    wait_exit(pid)
    assert log.read_text().splitlines()[-1] == str(work)


def test_missing_launcher_is_reported_when_it_cannot_be_uploaded(tmp_path: Path) -> None:
    argv = [sys.executable, str(tmp_path / "missing.py")]
    for upload in ("never", "if-missing"):
        request = LaunchRequest("k", argv, {}, str(tmp_path / "k.log"), launcher_index=1, upload=upload)
        result = run_sh(launch_script(request))
        assert result.returncode == EXIT_NO_LAUNCHER
        assert "missing.py does not exist" in result.stderr


@pytest.mark.parametrize("upload", ["if-missing", "always"])
def test_launcher_upload_copies_it_exactly(tmp_path: Path, started: list[int], upload: str) -> None:
    # A delimiter-like line, expansions and backslashes must all survive the here-document.
    source = (
        "import sys\n"
        "# EOF\n# GP_SSH_LAUNCHER_\n# $HOME `id` $(id) \\n \\\\\n"
        "print('uploaded', sys.argv[0], sys.argv[1:])\n"
    )
    upload_path = tmp_path / "gp-launcher-k.py"
    log = tmp_path / "kernel.log"
    present = tmp_path / "present.py"
    present.write_text("print('the remote copy ran')\n")
    launcher = str(tmp_path / "absent.py") if upload == "if-missing" else str(present)
    request = LaunchRequest(
        "k",
        [sys.executable, launcher, "--arg"],
        {},
        str(log),
        launcher_index=1,
        upload=upload,
        upload_path=str(upload_path),
        launcher_source=source,
    )
    result = run_sh(launch_script(request))
    assert result.returncode == 0, result.stderr
    values, _ = parse_report(result.stdout)
    assert values["uploaded"] == str(upload_path)
    started.append(int(values["pid"]))
    wait_exit(int(values["pid"]))
    assert upload_path.read_text() == source
    assert log.read_text().splitlines()[-1] == f"uploaded {upload_path} ['--arg']"


def test_if_missing_uses_the_launcher_already_there(tmp_path: Path, started: list[int]) -> None:
    present = tmp_path / "present.py"
    present.write_text("print('the remote copy ran')\n")
    log = tmp_path / "kernel.log"
    request = LaunchRequest(
        "k",
        [sys.executable, str(present)],
        {},
        str(log),
        launcher_index=1,
        upload="if-missing",
        upload_path=str(tmp_path / "copy.py"),
        launcher_source="print('uploaded copy ran')\n",
    )
    result = run_sh(launch_script(request))
    values, _ = parse_report(result.stdout)
    assert "uploaded" not in values
    started.append(int(values["pid"]))
    wait_exit(int(values["pid"]))
    assert log.read_text().splitlines()[-1] == "the remote copy ran"


def test_a_planted_symlink_is_not_followed(tmp_path: Path, started: list[int]) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log = tmp_path / "kernel.log"
    log.symlink_to(victim)
    pid = launch(LaunchRequest("k", ["true"], {}, str(log)), started)
    wait_exit(pid)
    assert victim.read_text() == "precious\n"
    assert not log.is_symlink()


def test_a_restart_appends_to_the_log(tmp_path: Path, started: list[int]) -> None:
    log = tmp_path / "kernel.log"
    for word in ("first", "second"):
        wait_exit(launch(LaunchRequest("k", ["echo", word], {}, str(log)), started))
    lines = log.read_text().splitlines()
    assert "first" in lines and "second" in lines


def poll(pid: int, kernel_id: str, log: Path | None = None) -> tuple[str, str]:
    result = run_sh(poll_script(pid, kernel_id, str(log) if log else None))
    values, tail = parse_report(result.stdout)
    return values["state"], tail


def stop(pid: int, kernel_id: str, **kwargs: object) -> str:
    result = run_sh(stop_script(pid, kernel_id, **kwargs))  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    return parse_report(result.stdout)[0]["result"]


SPAWN_CHILD = (
    "import subprocess, time; subprocess.Popen(['sleep', '300']); print('ready', flush=True); time.sleep(300)"
)


def start_with_child(tmp_path: Path, started: list[int], kernel_id: str) -> tuple[int, Path]:
    log = tmp_path / "kernel.log"
    env = {"KERNEL_ID": kernel_id}
    pid = launch(LaunchRequest(kernel_id, [sys.executable, "-c", SPAWN_CHILD], env, str(log)), started)
    while "ready" not in log.read_text():
        time.sleep(0.02)
    return pid, log


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("force", [False, True])
def test_poll_and_stop_reach_the_whole_group(tmp_path: Path, started: list[int], force: bool) -> None:
    kernel_id = str(uuid.uuid4())
    pid, log = start_with_child(tmp_path, started, kernel_id)
    assert len(group_members(pid)) == 2
    assert poll(pid, kernel_id)[0] == "running"
    assert stop(pid, kernel_id, force=force, stop_timeout=5, remove=[str(log)]) == "stopped"
    assert group_members(pid) == []
    assert not log.exists()
    assert poll(pid, kernel_id)[0] == "gone"
    assert stop(pid, kernel_id, force=force, stop_timeout=5) == "gone"  # idempotent


def test_a_stopped_kernel_is_still_terminated(tmp_path: Path, started: list[int]) -> None:
    kernel_id = str(uuid.uuid4())
    pid, _ = start_with_child(tmp_path, started, kernel_id)
    os.killpg(pid, signal.SIGSTOP)
    assert stop(pid, kernel_id, force=False, stop_timeout=5) == "stopped"
    assert group_members(pid) == []


def test_a_kernel_ignoring_sigterm_is_killed(tmp_path: Path, started: list[int]) -> None:
    kernel_id = str(uuid.uuid4())
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"
    log = tmp_path / "kernel.log"
    pid = launch(
        LaunchRequest(kernel_id, [sys.executable, "-c", code], {"KERNEL_ID": kernel_id}, str(log)), started
    )
    while "ready" not in log.read_text():
        time.sleep(0.02)
    assert stop(pid, kernel_id, force=False, stop_timeout=0.3) == "stopped"
    assert group_members(pid) == []


def test_a_reused_pid_is_not_signalled(started: list[int]) -> None:
    # A live process that is not this kernel (its environment lacks the kernel id) is left alone.
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    started.append(other.pid)
    try:
        assert poll(other.pid, "some-kernel-id")[0] == "gone"
        assert stop(other.pid, "some-kernel-id", force=True, stop_timeout=1) == "foreign"
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def send(pid: int, kernel_id: str, signum: int) -> str:
    result = run_sh(signal_script(pid, kernel_id, signum))
    assert result.returncode == 0, result.stderr
    return parse_report(result.stdout)[0]["result"]


COUNT_SIGUSR1 = (
    "import signal, time; got = []; signal.signal(signal.SIGUSR1, lambda *a: got.append(1) or print('usr1', flush=True)); "
    "print('ready', flush=True); time.sleep(300)"
)


def test_signal_reaches_the_kernel_and_is_refused_for_others(tmp_path: Path, started: list[int]) -> None:
    kernel_id = str(uuid.uuid4())
    log = tmp_path / "kernel.log"
    request = LaunchRequest(
        kernel_id, [sys.executable, "-c", COUNT_SIGUSR1], {"KERNEL_ID": kernel_id}, str(log)
    )
    pid = launch(request, started)
    while "ready" not in log.read_text():
        time.sleep(0.02)
    assert send(pid, kernel_id, signal.SIGUSR1) == "sent"
    deadline = time.monotonic() + 10
    while "usr1" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "usr1" in log.read_text()
    assert process_state(pid) not in (None, "Z")  # handled, not killed
    assert send(pid, "another-kernel-id", signal.SIGUSR1) == "foreign"
    assert stop(pid, kernel_id, force=True, stop_timeout=1) == "stopped"
    assert send(pid, kernel_id, signal.SIGINT) == "gone"
    with pytest.raises(ValueError):
        signal_script(pid, kernel_id, 12345)  # not a signal: nothing reaches a shell


def test_poll_of_a_dead_kernel_returns_its_log_tail(tmp_path: Path, started: list[int]) -> None:
    log = tmp_path / "kernel.log"
    code = "import sys; print('x' * 10000); print('boom: the last words', file=sys.stderr); sys.exit(3)"
    pid = launch(LaunchRequest("k", [sys.executable, "-c", code], {"KERNEL_ID": "k"}, str(log)), started)
    wait_exit(pid)
    state, tail = poll(pid, "k", log)
    assert state == "gone"
    assert tail.strip().endswith("boom: the last words")
    assert len(tail) <= 4000


def test_check_env() -> None:
    assert check_env({"KERNEL_X": "1", "GP_REMOTE_PWD": "secret", "_a1": ""}) == {"KERNEL_X": "1", "_a1": ""}
    for bad in ("1X", "A-B", "A B", "A=B", "A;B", "$(x)", "", "Ä"):
        with pytest.raises(BackendError, match="cannot be passed"):
            check_env({bad: "v"})
    with pytest.raises(BackendError, match="NUL"):
        check_env({"KERNEL_X": "a\0b"})


def test_find_launcher() -> None:
    assert find_launcher(["python", "/x/launch_ipykernel.py", "--kernel-id", "k"]) == 1
    assert find_launcher(["/opt/run.sh", "-u", "/x/l.py"]) == 2
    assert find_launcher(["python", "-m", "ipykernel_launcher"]) is None
    assert find_launcher(["python.py"]) is None  # argv[0] is the program, never the launcher


def test_parse_report_ignores_login_noise() -> None:
    values, tail = parse_report("Welcome!\ngp-ssh-pid=12\nnoise\ngp-ssh-log-begin\ngp-ssh-pid=99\nlog line\n")
    assert values == {"pid": "12"}
    assert tail == "gp-ssh-pid=99\nlog line\n"


def test_an_empty_argv_is_refused() -> None:
    with pytest.raises(BackendError, match="empty"):
        launch_script(LaunchRequest("k", [], {}, "/tmp/x.log"))


def test_a_name_ending_in_a_newline_is_refused_before_any_shell_sees_it(tmp_path: Path) -> None:
    # "KERNEL_X\n" passed `^...$` with .match: the export broke in two and the shell ran "=<value>".
    for bad in ("KERNEL_X\n", "KERNEL_X\r\n", "KERNEL_X\n\n"):
        with pytest.raises(BackendError, match="cannot be passed"):
            check_env({bad: "v"})
        request = LaunchRequest(
            "k", [sys.executable, "-c", "pass"], {bad: "; touch pwned"}, str(tmp_path / "l")
        )
        with pytest.raises(BackendError, match="cannot be passed"):
            launch_script(request)
