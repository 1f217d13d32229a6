"""What every Spark-flavoured backend shares (ssh's client mode, YARN's cluster mode, Spark on Kubernetes):
the kernel's Spark environment and the installer options for Spark kernels.

Public: ``gp_core.spark``. Backends build on these instead of copying them.
"""

from __future__ import annotations

import os
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
]
