"""What the local ``spark-submit`` gets: its options (from the request's ``KERNEL_*`` values, as argv items,
never through a shell), the environment of the application master (in a private properties file), and
the environment of ``bin/run.sh``.

The kernelspec's argv is ``[<spec>/bin/run.sh, <launcher arguments>...]``; the backend runs
``[<spec>/bin/run.sh, <spark-submit options>..., "--", <launcher arguments>...]`` and ``run.sh`` passes
the options on to ``spark-submit`` quoted (see ``gp_yarn/run.sh``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex

from gp_core import BackendError, inherited_server_env

from ._options import YarnOptions

# YARN queue names ("root.gp" or "gp") and node label names.
_QUEUE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_MEMORY = re.compile(r"^[0-9]{1,7}[kmgtKMGT]?\Z")
_COUNT = re.compile(r"^[0-9]{1,4}\Z")

#: KERNEL_EXTRA_SPARK_OPTS may use these spark-submit flags (each takes one value) ...
_VALUE_FLAGS = {
    "--conf": "conf",
    "-c": "conf",
    "--driver-memory": "memory",
    "--executor-memory": "memory",
    "--driver-cores": "count",
    "--executor-cores": "count",
    "--num-executors": "count",
}
#: ... and --conf keys except these: what gp decides (name, master, queue, user), what would make the
#: server's spark-submit read or ship files of the server (keytabs, jars, files, properties), and gp's own
#: application master environment.
_REFUSED_CONF = re.compile(
    r"^spark\.("
    r"app\.name|master|submit\.deployMode|yarn\.queue|yarn\.stagingDir|yarn\.submit\.waitAppCompletion"
    r"|yarn\.(principal|keytab|access\.hadoopFileSystems|config\.(gatewayPath|replacementPath))"
    r"|kerberos\..*|yarn\.kerberos\..*|yarn\.(jars|archive|dist\..*|am\.extraLibraryPath)"
    r"|jars(\..*)?|files|archives|submit\.pyFiles|yarn\.populateHadoopClasspath|driver\.extra(ClassPath|LibraryPath)"
    r"|yarn\.appMasterEnv\.(GP_.*|KERNEL_ID|KERNEL_USERNAME)|proxyUser|redaction\..*"
    r")\Z"
)


def extra_spark_options(text: str) -> list[str]:
    """``KERNEL_EXTRA_SPARK_OPTS``, split like a shell would (quotes honoured, nothing expanded), checked.

    :raises BackendError: Naming the refused item and what is allowed.
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS {text!r} cannot be split: {exc}") from None
    allowed = "allowed: --conf KEY=VALUE, --driver-memory, --executor-memory, --driver-cores, --executor-cores, --num-executors"
    options: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, inline = word.partition("=")
        if flag in _VALUE_FLAGS and (eq or i + 1 < len(words)):
            value = inline if eq else words[i + 1]
            i += 1 if eq else 2
        else:
            raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {word!r} is not allowed ({allowed})")
        kind = _VALUE_FLAGS[flag]
        if kind == "conf":
            key, has_value, _ = value.partition("=")
            if not has_value or not key.startswith("spark.") or any(c.isspace() for c in key):
                raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: --conf {value!r} is not spark.KEY=VALUE")
            if _REFUSED_CONF.match(key):
                raise BackendError(
                    f"KERNEL_EXTRA_SPARK_OPTS: --conf {key} is set by gp or the server, not a request"
                )
        elif not (_MEMORY if kind == "memory" else _COUNT).match(value):
            raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {flag} {value!r} is not a valid {kind}")
        if "\0" in value or "\n" in value:
            raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {flag} value contains a control character")
        options += ["--conf" if kind == "conf" else flag, value]
    return options


def submit_options(
    kernel_id: str, env: dict[str, str], options: YarnOptions, properties_path: str
) -> list[str]:
    """The spark-submit options gp adds for this kernel, each one argv item."""
    opts = ["--name", kernel_id, "--properties-file", properties_path]
    if options.load_spark_defaults:
        opts.append("--load-spark-defaults")
    opts += ["--conf", "spark.yarn.submit.waitAppCompletion=false"]
    if options.staging_dir:
        opts += ["--conf", f"spark.yarn.stagingDir={options.staging_dir}"]
    queue = env.get("KERNEL_QUEUE", "").strip()
    if queue:
        if not _QUEUE.match(queue):
            raise BackendError(
                f"KERNEL_QUEUE {queue!r} is not a YARN queue name (letters, digits, '_', '.', '-')"
            )
        opts += ["--queue", queue]
    label = env.get("KERNEL_NODE_LABEL", "").strip()
    if label:
        if not _LABEL.match(label):
            raise BackendError(
                f"KERNEL_NODE_LABEL {label!r} is not a node label (letters, digits, '_', '.', '-')"
            )
        opts += [
            "--conf",
            f"spark.yarn.am.nodeLabelExpression={label}",
            "--conf",
            f"spark.yarn.executor.nodeLabelExpression={label}",
        ]
    if options.impersonation_enabled:
        user = env.get("KERNEL_USERNAME", "")
        if not _USER.match(user):
            raise BackendError(f"KERNEL_USERNAME {user!r} is not a user name spark-submit can impersonate")
        opts += ["--proxy-user", user]
    extra = env.get("KERNEL_EXTRA_SPARK_OPTS", "").strip()
    if extra:
        opts += extra_spark_options(extra)
    return opts


def am_environment(env: dict[str, str]) -> dict[str, str]:
    """What the application master's container (where gp's launcher runs) gets of the kernel's env: the
    ``KERNEL_*`` values, the launch token, and the python to run."""
    keep = ("GP_LAUNCH_TOKEN", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "JPY_PARENT_PID")
    return {
        name: value
        for name, value in env.items()
        if _ENV_NAME.match(name) and (name.startswith("KERNEL_") or name in keep)
    }


def yarn_env_value(value: str) -> str:
    """``value`` written so a NodeManager's container launch script yields it unchanged.

    A Unix NodeManager writes each environment entry as ``export NAME="<value>"`` into the container's
    launch script (after replacing ``{{`` with ``$``, ``}}`` with nothing and ``<CPS>`` with ``:``), so a
    raw ``$(...)`` in a request's value would run there. The shell's double-quote escapes make ``\\ " $ `
    `` literal, and an empty ``""`` splits the markers the NodeManager would expand.
    """
    escaped = "".join("\\" + char if char in '\\"$`' else char for char in value)
    for marker, split in (("{{", '{""{'), ("}}", '}""}'), ("<CPS>", '<""CPS>')):
        escaped = escaped.replace(marker, split)
    return escaped


def _escape_property(text: str, key: bool) -> str:
    """java.util.Properties escaping (what Spark's --properties-file reader undoes)."""
    out: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "\f":
            out.append("\\f")
        elif char in "=:#!" or (char == " " and (key or index == 0)):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) > 0x7E:
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16(char)))
        else:
            out.append(char)
    return "".join(out)


def _utf16(char: str) -> list[int]:
    data = char.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def properties_text(am_env: dict[str, str]) -> str:
    lines = ["# gp-yarn: the kernel's application master environment (removed with the kernel)"]
    for name, value in sorted(am_env.items()):
        key = f"spark.yarn.appMasterEnv.{name}"
        lines.append(f"{_escape_property(key, True)}={_escape_property(yarn_env_value(value), False)}")
        if name == "PYSPARK_PYTHON":
            lines.append(
                f"{_escape_property('spark.executorEnv.PYSPARK_PYTHON', True)}={_escape_property(value, False)}"
            )
    return "\n".join(lines) + "\n"


def write_private(path: str, text: str) -> None:
    """Write ``text`` to a new file only the server's user can read (it holds the launch token)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def process_env(env: dict[str, str], request_env: dict[str, str]) -> dict[str, str]:
    """``run.sh``'s environment: the server's (minus gp's ``GP_*``), the kernelspec's, and the request's
    ``KERNEL_*`` values. Anything else the request set (``SPARK_OPTS``, ``PATH``, ...) never reaches the
    local spark-submit: it would change what the server runs."""
    kept = {
        name: value
        for name, value in env.items()
        if (name not in request_env or name.startswith("KERNEL_")) and name != "GP_LAUNCH_TOKEN"
    }
    return {**inherited_server_env(), **kept}
