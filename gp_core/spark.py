"""What every Spark-flavoured backend shares (ssh's client mode, YARN's cluster mode, Spark on Kubernetes):
the kernel's Spark environment and the installer options for Spark kernels.

Public: ``gp_core.spark``. Backends build on these instead of copying them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, HasTraits, Unicode, default

#: When a Spark kernel's launcher creates its SparkContext (launcher ``--spark-context-initialization-mode``).
SPARK_INIT_MODES = ("lazy", "eager", "none")


def py4j_paths(spark_home: str) -> list[str]:
    """py4j's zip in ``spark_home/python/lib`` (the newest, as a one-item list; empty when absent)."""
    return sorted(str(path) for path in Path(spark_home, "python", "lib").glob("py4j-*-src.zip"))[-1:]


def pyspark_env(spark_home: str, python: str, submit_args: Sequence[str]) -> dict[str, str]:
    """The environment a PySpark kernel needs: ``SPARK_HOME``, ``PYSPARK_PYTHON``, a ``PYTHONPATH`` with
    pyspark and py4j, and ``PYSPARK_SUBMIT_ARGS`` (master, deploy mode, extra options), which pyspark reads
    when the kernel builds its session."""
    return {
        "SPARK_HOME": spark_home,
        "PYSPARK_PYTHON": python,
        "PYTHONPATH": ":".join([f"{spark_home}/python", *py4j_paths(spark_home)]),
        "PYSPARK_SUBMIT_ARGS": " ".join([*submit_args, "pyspark-shell"]),
    }


def spark_launcher_args(init_mode: str) -> list[str]:
    """The launcher arguments of a Spark kernel (its SparkContext mode; SIGINT cancels Spark jobs)."""
    if init_mode not in SPARK_INIT_MODES:
        raise ValueError(f"Spark init mode {init_mode!r} is not one of {', '.join(SPARK_INIT_MODES)}")
    return ["--spark-context-initialization-mode", init_mode, "--cluster-type", "spark"]


def split_spark_opts(text: str, source: str = "extra Spark options") -> list[str]:
    """Split spark-submit options given as one string (``--conf a=b --num-executors 2``) into argv items,
    shell-style but never through a shell. :raises ValueError: naming ``source`` on unbalanced quotes."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"{source} {text!r} cannot be split into options: {exc}") from None


#: A user name spark-submit may impersonate (--proxy-user): letters, digits, '.', '_', '-', '@' (realms).
_PROXY_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}")
SUBMIT_ARGS_VAR = "PYSPARK_SUBMIT_ARGS"
EXTRA_SPARK_OPTS_VAR = "KERNEL_EXTRA_SPARK_OPTS"


def submit_args_for_request(
    env: dict[str, str],
    request_env: dict[str, str],
    kernel_id: str,
    *,
    impersonate: bool = False,
    allow_request_opts: bool = True,
) -> dict[str, str]:
    """A Spark kernel's environment for one launch: its ``PYSPARK_SUBMIT_ARGS`` (from the kernelspec) gets
    the application named after the kernel (``--name <kernel_id>``, unless the spec names one), the
    request's ``KERNEL_EXTRA_SPARK_OPTS`` and, with ``impersonate``, ``--proxy-user <KERNEL_USERNAME>``.
    A kernel without ``PYSPARK_SUBMIT_ARGS`` (not a Spark kernel) is returned as is.

    :raises gp_core.InvalidOptionError: Unsplittable or refused extra options, or a user name spark-submit
        cannot impersonate; the message names the variable.
    """
    from .errors import InvalidOptionError

    text = env.get(SUBMIT_ARGS_VAR)
    if text is None:
        return env
    try:
        args = split_spark_opts(text, SUBMIT_ARGS_VAR)
        extra_text = request_env.get(EXTRA_SPARK_OPTS_VAR, "")
        extra = split_spark_opts(extra_text, EXTRA_SPARK_OPTS_VAR) if extra_text else []
    except ValueError as exc:
        raise InvalidOptionError(str(exc)) from None
    if extra and not allow_request_opts:
        raise InvalidOptionError(
            f"{EXTRA_SPARK_OPTS_VAR} is not allowed by this server (allow_request_spark_opts)"
        )
    if extra and extra[0] != "--" and not extra[0].startswith("-"):
        raise InvalidOptionError(
            f"{EXTRA_SPARK_OPTS_VAR} {extra_text!r} must be spark-submit options (--...)"
        )
    if "--proxy-user" in extra:
        raise InvalidOptionError(
            f"{EXTRA_SPARK_OPTS_VAR} may not set --proxy-user (impersonation is the server's)"
        )
    shell = args[-1:] == ["pyspark-shell"]
    head = args[:-1] if shell else args
    if "--name" not in head and not any(a.startswith("spark.app.name=") for a in head):
        head += ["--name", kernel_id]
    if impersonate:
        user = env.get("KERNEL_USERNAME", "")
        if not _PROXY_USER.fullmatch(user):
            raise InvalidOptionError(
                f"KERNEL_USERNAME {user!r} cannot be impersonated by spark-submit --proxy-user"
            )
        head += ["--proxy-user", user]
    return {**env, SUBMIT_ARGS_VAR: shlex.join([*head, *extra, *(["pyspark-shell"] if shell else [])])}


class SparkInstallerOptions(HasTraits):
    """Installer options of a Spark kernel, for a ``jupyter <backend>-spec install`` app to inherit.

    Use with :func:`spark_aliases` and :func:`spark_flags` for the command-line names.
    """

    spark = Bool(False, config=True, help="Install a Spark kernel.")
    spark_home = Unicode(
        config=True, help="SPARK_HOME where the kernel runs (default: $SPARK_HOME or /opt/spark)."
    )
    spark_init_mode = Enum(
        list(SPARK_INIT_MODES), "lazy", config=True, help="When a Spark kernel creates its SparkContext."
    )
    extra_spark_opts = Unicode("", config=True, help="More spark-submit options for a Spark kernel.")

    @default("spark_home")
    def _spark_home_default(self) -> str:
        return os.environ.get("SPARK_HOME", "/opt/spark")


def spark_aliases(app_class: str) -> dict[str, str]:
    """Command-line aliases of :class:`SparkInstallerOptions` for the installer class named ``app_class``."""
    return {
        "spark-home": f"{app_class}.spark_home",
        "spark-init-mode": f"{app_class}.spark_init_mode",
        "extra-spark-opts": f"{app_class}.extra_spark_opts",
    }


def spark_flags(app_class: str, help: str = "Install a Spark kernel.") -> dict[str, Any]:
    return {"spark": ({app_class: {"spark": True}}, help)}


__all__ = [
    "SPARK_INIT_MODES",
    "SparkInstallerOptions",
    "py4j_paths",
    "pyspark_env",
    "spark_aliases",
    "spark_flags",
    "spark_launcher_args",
    "split_spark_opts",
    "submit_args_for_request",
]
