"""The POSIX shell scripts run on remote hosts: launch a kernel, poll it, stop it.

Every script is sent on the stdin of ``sh -s`` rather than as the command line, so the kernel's
environment (its launch token included) never appears in ``ps`` on a shared host, and the user's
login shell (bash, zsh, fish...) does not matter. Every value that comes from a kernelspec or a request
is passed through :func:`shlex.quote`; environment variable names are checked against the POSIX
grammar. A script reports back on stdout with ``gp-ssh-<name>=<value>`` lines (a noisy login shell may
print other lines first) and fails with one of the ``EXIT_*`` statuses and a message on stderr.

The kernel runs as ``setsid nohup <argv>``: it leads a new session and process group, so stopping it
signals the whole group (whatever the kernel spawned too), and closing the SSH channel does not hang
it up. Liveness checks read ``/proc`` where it exists, because a kernel reparented to an init that does
not reap leaves a zombie that ``kill -0`` still reports as alive, and because the kernel's recorded pid
must still be *this* kernel (its environment holds ``KERNEL_ID``) before anything is signalled.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gp_core import BackendError, is_env_name

from ._options import SshOptions

#: Script exit statuses (sh uses 1-2 and 126-127 for its own errors).
EXIT_NO_WORKING_DIR = 95
EXIT_NO_LOG = 96
EXIT_NO_LAUNCHER = 97
EXIT_NO_INTERPRETER = 98
EXIT_NO_TOOL = 99

#: Never sent to a remote host, whatever put it in the kernel's environment.
SECRET_ENV = frozenset(SshOptions.secret_env)
#: Bytes of the kernel log shown when a launch fails.
LOG_TAIL_BYTES = 4000

_MARKER = re.compile(r"gp-ssh-([a-z-]+)=(.*)")
_LOG_BEGIN = "gp-ssh-log-begin"

q = shlex.quote

# Shell helpers shared by the poll and stop scripts. `gp_state PID` prints the process state letter
# (R, S, T, Z...), '?' when only kill -0 can tell, nothing when it does not exist. `gp_ours` is true
# when PID's environment holds this kernel's id (or cannot be read: then trust the recorded pid).
# `gp_group_alive` is true while a non-zombie process remains in group $gp_pid.
_HELPERS = r"""
gp_state() {
    if [ -r "/proc/$1/stat" ]; then
        gp_s=
        { read -r gp_s < "/proc/$1/stat"; } 2>/dev/null || return 0
        gp_s=${gp_s##*') '}
        echo "${gp_s%% *}"
    elif kill -s 0 -- "$1" 2>/dev/null; then
        echo '?'
    fi
}
gp_ours() {
    [ -r "/proc/$gp_pid/environ" ] || return 0
    tr '\0' '\n' < "/proc/$gp_pid/environ" 2>/dev/null | grep -qxF -- "$gp_mark"
}
gp_running() {
    case $(gp_state "$gp_pid") in
        '' | Z) return 1 ;;
    esac
    gp_ours
}
gp_group_alive() {
    if [ -d /proc/self ]; then
        for gp_f in /proc/[0-9]*/stat; do
            { read -r gp_s < "$gp_f"; } 2>/dev/null || continue
            gp_s=${gp_s##*') '}
            set -- $gp_s
            [ "$3" = "$gp_pid" ] && [ "$1" != Z ] && return 0
        done
        return 1
    fi
    kill -s 0 -- "-$gp_pid" 2>/dev/null
}
gp_wait_group() {
    gp_i=0
    while gp_group_alive && [ "$gp_i" -lt "$1" ]; do
        sleep 0.1 2>/dev/null || sleep 1
        gp_i=$((gp_i + 1))
    done
}
"""


def kernel_log_path(log_dir: str, kernel_id: str) -> str:
    return f"{log_dir.rstrip('/')}/gp-kernel-{kernel_id}.log"


def uploaded_launcher_path(log_dir: str, kernel_id: str) -> str:
    return f"{log_dir.rstrip('/')}/gp-launcher-{kernel_id}.py"


def connection_dir_template(log_dir: str) -> str:
    """``mktemp -d`` template of the launcher's connection directory (the stop script removes it)."""
    return f"{log_dir.rstrip('/') or ''}/gp-connection-XXXXXXXXXX"


def is_connection_dir(path: str, log_dir: str) -> bool:
    """Whether ``path`` (reported by a launch script) is one :func:`connection_dir_template` makes."""
    prefix = connection_dir_template(log_dir).removesuffix("XXXXXXXXXX")
    suffix = path.removeprefix(prefix)
    return path.startswith(prefix) and len(suffix) == 10 and suffix.isascii() and suffix.isalnum()


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment to export remotely: names checked, secrets dropped.

    :raises BackendError: On a name that is not a shell variable name or a value with a NUL character.
    """
    checked: dict[str, str] = {}
    for name, value in env.items():
        if name in SECRET_ENV:
            continue
        if not is_env_name(name):
            raise BackendError(
                f"Environment variable name {name!r} cannot be passed to a remote kernel; names are "
                "letters, digits and '_', not starting with a digit"
            )
        if "\0" in value:
            raise BackendError(f"Environment variable {name} contains a NUL character")
        checked[name] = value
    return checked


def find_launcher(argv: Sequence[str]) -> int | None:
    """Index of the launcher script in a kernelspec argv: its first ``.py`` argument after the program."""
    for index, arg in enumerate(argv[1:], start=1):
        if arg.endswith(".py") and not arg.startswith("-"):
            return index
    return None


@dataclass(frozen=True)
class LaunchRequest:
    """Everything the launch script needs; ``launcher_source`` is the launcher's text to upload."""

    kernel_id: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: str
    working_dir: str | None = None
    launcher_index: int | None = None
    upload: str = "never"
    upload_path: str | None = None
    launcher_source: str | None = None


def launch_script(request: LaunchRequest) -> str:
    """The script that starts the kernel in the background and prints ``gp-ssh-pid=<pid>``."""
    if not request.argv:
        raise BackendError("The kernelspec argv is empty: nothing to run on the remote host")
    env = check_env(request.env)
    argv = [q(arg) for arg in request.argv]
    program = request.argv[0]
    log_dir = request.log_path.rpartition("/")[0] or "/"
    lines = [
        'gp_fail() { echo "gp-ssh: $2" >&2; exit "$1"; }',
        f"gp_setsid=$(command -v setsid) || gp_fail {EXIT_NO_TOOL} 'setsid (util-linux) is not installed'",
        f"gp_nohup=$(command -v nohup) || gp_fail {EXIT_NO_TOOL} 'nohup (coreutils) is not installed'",
    ]
    if request.working_dir:
        message = f"cannot change to the working directory {request.working_dir}"
        lines.append(f"cd -- {q(request.working_dir)} || gp_fail {EXIT_NO_WORKING_DIR} {q(message)}")
    # The kernel's environment is exported only in the subshells that need it, so a PATH from the
    # kernelspec cannot change which tools this script runs.
    lines.append("gp_env() {")
    lines.extend(f"    export {name}={q(value)}" for name, value in env.items())
    lines.append("    :")
    lines.append("}")
    missing = f"{program} was not found (the kernelspec's argv[0]; install it or fix the kernelspec)"
    lines.append(
        f"(gp_env; command -v -- {q(program)} >/dev/null 2>&1) || gp_fail {EXIT_NO_INTERPRETER} {q(missing)}"
    )
    lines.append(f"mkdir -p -- {q(log_dir)} || gp_fail {EXIT_NO_LOG} {q(f'cannot create {log_dir}')}")
    if request.launcher_index is not None:
        argv[request.launcher_index] = '"$gp_launcher"'
        lines.extend(_launcher_lines(request))
    log = q(request.log_path)
    # A log kept from an earlier start of this kernel id is appended to; anything else at that path is
    # replaced by a file created exclusively (set -C), so a planted symlink cannot redirect the log.
    no_log = f"cannot create the kernel log {request.log_path}"
    lines += [
        f"if [ -f {log} ] && [ ! -h {log} ] && [ -O {log} ]; then :; else",
        f"    rm -f -- {log}",
        f"    (umask 077 && set -C && : > {log}) 2>/dev/null || gp_fail {EXIT_NO_LOG} {q(no_log)}",
        "fi",
        # The launcher's connection directory (it holds the kernel's key) goes into one the stop script
        # removes: a kernel killed by a signal never runs the launcher's own clean-up.
        f"gp_conn=$(umask 077 && mktemp -d {q(connection_dir_template(log_dir))}) "
        f"|| gp_fail {EXIT_NO_LOG} {q(f'cannot create a connection directory in {log_dir}')}",
        'echo "gp-ssh-conn=$gp_conn"',
        f"echo {q(f'--- gp-ssh: starting kernel {request.kernel_id}')} >> {log}",
        f'(gp_env; export GP_CONNECTION_DIR="$gp_conn"; exec "$gp_setsid" "$gp_nohup" {" ".join(argv)})'
        f" >> {log} 2>&1 < /dev/null &",
        "gp_pid=$!",
        # Report the pid only once it leads its own group (setsid has run), so a stop that follows at
        # once signals the right group. Gives up when the process died first, or after ~2 s.
        "gp_i=0",
        'while [ -d /proc/self ] && [ "$gp_i" -lt 200 ]; do',
        '    { read -r gp_s < "/proc/$gp_pid/stat"; } 2>/dev/null || break',
        "    gp_s=${gp_s##*') '}",
        "    set -- $gp_s",
        '    [ "$3" = "$gp_pid" ] || [ "$1" = Z ] && break',
        "    sleep 0.01 2>/dev/null || break",
        "    gp_i=$((gp_i + 1))",
        "done",
        'echo "gp-ssh-pid=$gp_pid"',
    ]
    return "\n".join(lines) + "\n"


def _launcher_lines(request: LaunchRequest) -> list[str]:
    assert request.launcher_index is not None
    launcher = request.argv[request.launcher_index]
    lines = [f"gp_launcher={q(launcher)}"]
    if request.upload == "never":
        missing = f"the launcher {launcher} does not exist (upload_launcher is 'never')"
        return [*lines, f'[ -f "$gp_launcher" ] || gp_fail {EXIT_NO_LAUNCHER} {q(missing)}']
    if request.launcher_source is None or request.upload_path is None:
        missing = f"the launcher {launcher} does not exist, and the server has no copy of it to upload"
        return [*lines, f'[ -f "$gp_launcher" ] || gp_fail {EXIT_NO_LAUNCHER} {q(missing)}']
    source = (
        request.launcher_source if request.launcher_source.endswith("\n") else request.launcher_source + "\n"
    )
    # A here-document delimiter cannot occur in the text it ends: derive it from the text's hash.
    delimiter = "GP_SSH_LAUNCHER_" + hashlib.sha256(source.encode()).hexdigest()[:24]
    upload = q(request.upload_path)
    cannot = f"cannot write the launcher copy {request.upload_path}"
    condition = "true" if request.upload == "always" else '[ ! -f "$gp_launcher" ]'
    return [
        *lines,
        f"if {condition}; then",
        f"    gp_launcher={upload}",
        f"    rm -f -- {upload}",
        f"    (umask 077 && set -C && cat > {upload}) <<'{delimiter}' || gp_fail {EXIT_NO_LAUNCHER} {q(cannot)}",
        source + delimiter,
        '    echo "gp-ssh-uploaded=$gp_launcher"',
        "fi",
    ]


def poll_script(pid: int, kernel_id: str, log_path: str | None = None) -> str:
    """Prints ``gp-ssh-state=running|gone``; when gone and ``log_path`` is given, the log's tail after it."""
    lines = [
        f"gp_pid={int(pid)}",
        f"gp_mark={q('KERNEL_ID=' + kernel_id)}",
        _HELPERS,
        "if gp_running; then echo gp-ssh-state=running; exit 0; fi",
        "echo gp-ssh-state=gone",
    ]
    if log_path:
        lines += [f"echo {_LOG_BEGIN}", f"tail -c {LOG_TAIL_BYTES} -- {q(log_path)} 2>/dev/null || :"]
    return "\n".join(lines) + "\n"


def _unless_foreign(pid: int, kernel_id: str) -> list[str]:
    """Script lines opening an ``if``: report ``foreign`` when ``pid`` now runs something else than the
    kernel (nothing may be signalled then); the caller adds its ``elif``/``else`` branches and ``fi``."""
    return [
        f"gp_pid={int(pid)}",
        f"gp_mark={q('KERNEL_ID=' + kernel_id)}",
        _HELPERS,
        'gp_leader=$(gp_state "$gp_pid")',
        'if [ -n "$gp_leader" ] && [ "$gp_leader" != Z ] && ! gp_ours; then',
        "    echo gp-ssh-result=foreign",
    ]


def signal_script(pid: int, kernel_id: str, signum: int) -> str:
    """Send ``signum`` to the kernel's process group; prints ``gp-ssh-result=sent|gone|foreign``.

    The group, as jupyter_client's local provisioner does: an interrupt reaches what the kernel runs too.
    POSIX ``kill -s`` takes the signal's name; a number that is no signal raises ``ValueError`` here.
    """
    name = signal.Signals(signum).name.removeprefix("SIG")
    lines = [
        *_unless_foreign(pid, kernel_id),
        "elif gp_group_alive && kill -s " + name + ' -- "-$gp_pid" 2>/dev/null; then',
        "    echo gp-ssh-result=sent",
        "else",
        "    echo gp-ssh-result=gone",  # a zombie group takes a kill without complaint: checked first
        "fi",
    ]
    return "\n".join(lines) + "\n"


def stop_script(
    pid: int,
    kernel_id: str,
    *,
    force: bool,
    stop_timeout: float,
    remove: Sequence[str] = (),
    remove_dirs: Sequence[str] = (),
) -> str:
    """Stop the kernel's process group and print ``gp-ssh-result=...``, then remove the ``remove`` files
    and the ``remove_dirs`` directories (with their contents).

    Results: ``gone`` (nothing was left to stop), ``stopped``, ``alive`` (it survived SIGKILL: e.g. in
    uninterruptible sleep) or ``foreign`` (the recorded pid is now another process: nothing signalled).
    A stopped (SIGSTOP) kernel is sent SIGCONT after SIGTERM, so it can act on the SIGTERM.
    """
    steps = max(1, round(stop_timeout * 10))
    lines = [
        *_unless_foreign(pid, kernel_id),
        "elif ! gp_group_alive; then",
        "    echo gp-ssh-result=gone",
        "else",
    ]
    if force:
        lines.append('    kill -s KILL -- "-$gp_pid" 2>/dev/null')
    else:
        lines += [
            '    kill -s TERM -- "-$gp_pid" 2>/dev/null',
            '    kill -s CONT -- "-$gp_pid" 2>/dev/null',
            f"    gp_wait_group {steps}",
            '    gp_group_alive && kill -s KILL -- "-$gp_pid" 2>/dev/null',
        ]
    lines += [
        "    gp_wait_group 50",
        "    if gp_group_alive; then echo gp-ssh-result=alive; else echo gp-ssh-result=stopped; fi",
        "fi",
    ]
    if remove:
        lines.append("rm -f -- " + " ".join(q(path) for path in remove))
    if remove_dirs:
        lines.append("rm -rf -- " + " ".join(q(path) for path in remove_dirs))
    return "\n".join(lines) + "\n"


def parse_report(stdout: str) -> tuple[dict[str, str], str]:
    """Split a script's stdout into its ``gp-ssh-*`` values and the log text that follows the markers."""
    values: dict[str, str] = {}
    head, _, log = stdout.partition(_LOG_BEGIN + "\n")
    for line in head.splitlines():
        match = _MARKER.fullmatch(line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values, log
