"""gp kernel launcher for Scala: run Apache Toree through spark-submit and report it to the gp server.

The same design as the R launcher (``launch_irkernel.py``, whose ``exec_kernel`` this uses, found next to
this file): the five ZMQ ports are reserved inside ``--port-range``, Toree's connection file (its
``--profile``) is written, a forked reporter waits until the JVM itself listens on the ports and sends the
sealed payload, and this process ``exec``s ``spark-submit``, which ``exec``s the JVM: the kernel keeps the
pid the backend knows. Toree is started with ``--alternate-sigint USR2``, so the comm port turns an
interrupt (SIGINT) into SIGUSR2, which Toree takes as "interrupt the running cell".

Flags: those of ``launch_ipykernel.py`` plus ``--spark-submit`` (default ``$SPARK_HOME/bin/spark-submit``),
``--toree-jar`` (default env ``GP_TOREE_JAR``, else the jar of the installed ``toree`` package, PyPI
apache-toree) and ``--customAppName`` (default: the kernel id). Env ``SPARK_OPTS`` adds spark-submit
options (e.g. ``--master yarn``), ``TOREE_OPTS`` Toree options, as Toree's own ``run.sh`` reads them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _candidate in (_HERE, _HERE.parent / "r"):
    if (_candidate / "launch_irkernel.py").is_file():
        sys.path.insert(0, str(_candidate))
        break
import launch_irkernel as forked  # type: ignore[import-not-found]  # noqa: E402  (next to this file)

gp = forked.gp  # launch_ipykernel: the payload crypto and the comm port


def find_toree_jar() -> str | None:
    explicit = os.environ.get("GP_TOREE_JAR")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("toree")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        jars = sorted(Path(location, "lib").glob("toree-assembly-*.jar"))
        if jars:
            return str(jars[-1])
    return None


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="launch_toree.py", add_help=False)
    parser.add_argument("--spark-submit", default=None)
    parser.add_argument("--toree-jar", default=None)
    parser.add_argument("--customAppName", dest="app_name", default=None)
    own, rest = parser.parse_known_args(argv)
    common = gp.parse_args(rest)
    if own.spark_submit is None:
        spark_home = os.environ.get("SPARK_HOME", "")
        own.spark_submit = os.path.join(spark_home, "bin", "spark-submit") if spark_home else "spark-submit"
    own.toree_jar = own.toree_jar or find_toree_jar()
    own.app_name = own.app_name or common.kernel_id
    return own, common


def toree_argv(
    own: argparse.Namespace, args: argparse.Namespace, spark_submit: str, profile: str
) -> list[str]:
    mode = args.spark_context_initialization_mode
    context = ["--nosparkcontext"] if mode == "none" else ["--spark-context-initialization-mode", mode]
    return [
        spark_submit,
        "--name",
        own.app_name,
        *shlex.split(os.environ.get("SPARK_OPTS", "")),
        "--class",
        "org.apache.toree.Main",
        own.toree_jar,
        "--profile",
        profile,
        "--alternate-sigint",
        "USR2",
        *context,
        *shlex.split(os.environ.get("TOREE_OPTS", "")),
    ]


def main(argv: list[str] | None = None) -> int:
    try:
        own, args = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:  # SPARK_OPTS / TOREE_OPTS with unbalanced quotes
        gp.say(str(exc))
        return 1
    spark_submit = forked.shutil.which(own.spark_submit)
    if spark_submit is None:
        gp.say(f"cannot find spark-submit ({own.spark_submit!r}): set SPARK_HOME, or pass --spark-submit")
        return 1
    if not own.toree_jar or not Path(own.toree_jar).is_file():
        gp.say(
            "cannot find Toree's assembly jar: pip install apache-toree, or set GP_TOREE_JAR / --toree-jar"
        )
        return 1
    try:
        shlex.split(os.environ.get("SPARK_OPTS", "")), shlex.split(os.environ.get("TOREE_OPTS", ""))
    except ValueError as exc:
        gp.say(f"SPARK_OPTS / TOREE_OPTS cannot be split into options: {exc}")
        return 1
    return int(
        forked.exec_kernel(
            args,
            lambda profile: toree_argv(own, args, spark_submit, profile),
            signal_map={signal.SIGINT: signal.SIGUSR2},
        )
    )


if __name__ == "__main__":
    sys.exit(main())
