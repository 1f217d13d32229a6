"""``jupyter yarn-spec install``: a kernelspec whose kernels are YARN applications (Spark, cluster mode).

Core writes the common kernelspec (argv running gp's launcher, copied into the spec's ``scripts/``); the
``install_spec`` hook calls :func:`add_yarn_settings`, which adds ``bin/run.sh`` (-> ``spark-submit
--master yarn --deploy-mode cluster``), makes it the argv's program, and writes the Spark environment and
the YARN options. Everything is written out in full: no ``${...}`` placeholder is left for later.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, TraitError, Unicode, default, validate

from gp_core import InvalidOptionError
from gp_core.spark import SPARK_INIT_MODES
from gp_core.specapp import InstallSpecApp, SpecInstallerApp

from ._options import check_endpoint

RUN_SH = Path(__file__).with_name("run.sh")
#: Written into every kernelspec's SPARK_OPTS (see add_yarn_settings).
SPARK_BASE_OPTS = ("--conf", "spark.yarn.appMasterEnv.PYSPARK_PIN_THREAD=false")


class YarnInstallSpecApp(InstallSpecApp):
    """Install a kernelspec whose kernels run as YARN applications (spark-submit --deploy-mode cluster)."""

    name = "jupyter-yarn-spec-install"
    description = "Install a kernelspec whose kernels run as Hadoop YARN applications (gp backend 'yarn')."
    backend_name = "yarn"

    yarn_endpoint = Unicode(
        "",
        config=True,
        help="ResourceManager web app URL (default: the server's GP_YARN_ENDPOINT / HADOOP_CONF_DIR).",
    )
    alt_yarn_endpoint = Unicode("", config=True, help="The other ResourceManager of an HA pair.")
    yarn_endpoint_security_enabled = Bool(
        False, config=True, help="Kerberos/SPNEGO to the RM REST API (needs gp-yarn[kerberos])."
    )
    impersonation_enabled = Bool(False, config=True, help="Submit as the user: spark-submit --proxy-user.")
    python_root = Unicode(config=True, help="Prefix of the python the kernel runs in on the YARN nodes.")
    spark_home = Unicode(config=True, help="SPARK_HOME on the server (default: $SPARK_HOME or /opt/spark).")
    spark_init_mode = Enum(
        list(SPARK_INIT_MODES), "lazy", config=True, help="When the kernel creates its SparkSession."
    )
    extra_spark_opts = Unicode(
        "", config=True, help="More spark-submit options (the kernelspec's SPARK_OPTS)."
    )
    dask = Bool(False, config=True, help="A Dask kernel (dask-yarn): not supported by this version.")
    extra_dask_opts = Unicode("", config=True, help="More dask-yarn submit options (with --dask).")

    aliases = {
        **InstallSpecApp.aliases,
        "yarn-endpoint": "YarnInstallSpecApp.yarn_endpoint",
        "alt-yarn-endpoint": "YarnInstallSpecApp.alt_yarn_endpoint",
        "python-root": "YarnInstallSpecApp.python_root",
        "spark-home": "YarnInstallSpecApp.spark_home",
        "spark-init-mode": "YarnInstallSpecApp.spark_init_mode",
        "extra-spark-opts": "YarnInstallSpecApp.extra_spark_opts",
        "extra-dask-opts": "YarnInstallSpecApp.extra_dask_opts",
    }
    flags = {
        **InstallSpecApp.flags,
        "yarn-endpoint-security-enabled": (
            {"YarnInstallSpecApp": {"yarn_endpoint_security_enabled": True}},
            "Authenticate to the ResourceManager with Kerberos/SPNEGO.",
        ),
        "impersonation-enabled": (
            {"YarnInstallSpecApp": {"impersonation_enabled": True}},
            "Submit each kernel as its user (spark-submit --proxy-user KERNEL_USERNAME).",
        ),
        "dask": ({"YarnInstallSpecApp": {"dask": True}}, "A Dask kernel (not supported by this version)."),
    }

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"yarn_spark_{self.language.lower()}"

    @default("display_name")
    def _display_name_default(self) -> str:
        return f"Spark - {self.language.title()} (YARN cluster mode, gp)"

    @default("python_root")
    def _python_root_default(self) -> str:
        return sys.prefix

    @default("spark_home")
    def _spark_home_default(self) -> str:
        return os.environ.get("SPARK_HOME", "/opt/spark")

    @validate("yarn_endpoint", "alt_yarn_endpoint")
    def _check_endpoint(self, proposal: Any) -> str:
        return check_endpoint(str(proposal["value"]), "--" + proposal["trait"].name.replace("_", "-"))

    @validate("python_root", "spark_home")
    def _check_path(self, proposal: Any) -> str:
        path = str(proposal["value"])
        if not os.path.isabs(path) or any(c in path for c in "\0\n"):
            raise TraitError(
                f"--{proposal['trait'].name.replace('_', '-')} {path!r} must be an absolute path"
            )
        return path

    @validate("extra_spark_opts")
    def _check_spark_opts(self, proposal: Any) -> str:
        text = str(proposal["value"])
        try:
            shlex.split(text)
        except ValueError as exc:
            raise TraitError(f"--extra-spark-opts {text!r} cannot be split into options: {exc}") from None
        if any(c in text for c in "\0\n$`"):
            raise TraitError(
                "--extra-spark-opts may not contain newlines, '$' or '`' (it is not a shell command)"
            )
        if any(any(c.isspace() for c in word) for word in shlex.split(text)):
            raise TraitError(
                "--extra-spark-opts: run.sh splits SPARK_OPTS on whitespace; no item may contain spaces"
            )
        return text

    def launcher_args(self) -> list[str]:
        return [
            *super().launcher_args(),
            "--spark-context-initialization-mode",
            self.spark_init_mode,
            "--cluster-type",
            "spark" if self.spark_init_mode != "none" else "none",
        ]


def add_yarn_settings(app: Any, kernel_spec: dict[str, Any], spec_dir: Path) -> dict[str, Any]:
    """Add ``bin/run.sh``, the Spark environment and the YARN options (the ``install_spec`` hook)."""
    if getattr(app, "dask", False):
        raise InvalidOptionError(
            "--dask: Dask kernels on YARN (dask-yarn) are not supported by this version of gp-yarn; "
            "install a Spark kernel (without --dask)"
        )
    bin_dir = spec_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    run_sh = bin_dir / "run.sh"
    shutil.copy2(RUN_SH, run_sh)
    run_sh.chmod(run_sh.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    # The program is run.sh; the launcher (scripts/launch_ipykernel.py, which run.sh hands to spark-submit)
    # keeps its arguments.
    kernel_spec["argv"] = ["{resource_dir}/bin/run.sh", *kernel_spec["argv"][2:]]
    python_root = getattr(app, "python_root", sys.prefix)
    spark_home = getattr(app, "spark_home", "/opt/spark")
    env = kernel_spec.setdefault("env", {})
    env["SPARK_HOME"] = spark_home
    env["PYSPARK_PYTHON"] = f"{python_root.rstrip('/')}/bin/python"
    # An interrupt cancels the running Spark jobs from a signal handler in the kernel's main thread. With
    # py4j's pinned threads (PySpark's default) that call would queue behind the very job it cancels on
    # the main thread's own JVM connection; unpinned, it takes another connection and the job stops.
    opts = [*SPARK_BASE_OPTS, *shlex.split(getattr(app, "extra_spark_opts", ""))]
    env["SPARK_OPTS"] = " ".join(opts)
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
    for name in ("yarn_endpoint", "alt_yarn_endpoint"):
        if getattr(app, name, ""):
            config[name] = getattr(app, name)
    for name in ("yarn_endpoint_security_enabled", "impersonation_enabled"):
        if getattr(app, name, False):
            config[name] = True
    return kernel_spec


class YarnSpecApp(SpecInstallerApp):
    """``jupyter yarn-spec``: install kernelspecs for gp's yarn backend."""

    name = "jupyter-yarn-spec"
    description = "Install kernelspecs whose kernels run as Hadoop YARN applications (gp backend 'yarn')."
    subcommands = {"install": (YarnInstallSpecApp, YarnInstallSpecApp.description)}


main = YarnSpecApp.launch_instance
