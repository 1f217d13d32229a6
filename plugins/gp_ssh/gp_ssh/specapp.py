"""``jupyter ssh-spec install``: a kernelspec whose kernels run on remote hosts over SSH.

Core writes the common kernelspec (argv running gp's launcher, copied into the spec's ``scripts/``);
the ``install_spec`` hook calls :func:`add_ssh_settings` to add the hosts and, for a Spark kernel, the
Spark environment. ``--python`` names the interpreter *on the remote hosts*. The launcher path in argv
is the spec directory's copy; a remote host that lacks that path gets a per-kernel copy at launch time
(``upload_launcher``, default ``if-missing``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, List, TraitError, Unicode, default, validate

from gp_core import parse_list
from gp_core.specapp import InstallSpecApp, SpecInstallerApp

SPARK_INIT_MODES = ("lazy", "eager", "none")


class SshInstallSpecApp(InstallSpecApp):
    """Install a kernelspec whose kernels are started on remote hosts over SSH."""

    name = "jupyter-ssh-spec-install"
    description = "Install a kernelspec whose kernels run on remote hosts over SSH (gp backend 'ssh')."
    backend_name = "ssh"

    remote_hosts = List(
        Unicode(),
        config=True,
        help="Host the kernels may run on; repeat the option (or separate with commas) for several. "
        "Default: the server's GP_REMOTE_HOSTS at launch time (else localhost).",
    )
    spark = Bool(False, config=True, help="Install a Spark kernel (client mode on the remote host).")
    spark_master = Unicode("yarn", config=True, help="Spark master URL of a Spark kernel (--spark).")
    spark_home = Unicode(
        config=True, help="SPARK_HOME on the remote hosts (default: $SPARK_HOME or /opt/spark)."
    )
    spark_init_mode = Enum(
        list(SPARK_INIT_MODES), "lazy", config=True, help="When a Spark kernel creates its SparkContext."
    )
    extra_spark_opts = Unicode("", config=True, help="More spark-submit options for a Spark kernel.")

    aliases = {
        **InstallSpecApp.aliases,
        "remote-hosts": "SshInstallSpecApp.remote_hosts",
        "spark-master": "SshInstallSpecApp.spark_master",
        "spark-home": "SshInstallSpecApp.spark_home",
        "spark-init-mode": "SshInstallSpecApp.spark_init_mode",
        "extra-spark-opts": "SshInstallSpecApp.extra_spark_opts",
    }
    flags = {
        **InstallSpecApp.flags,
        "spark": ({"SshInstallSpecApp": {"spark": True}}, "Install a Spark kernel (client mode)."),
    }

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"ssh_{self.language.lower()}" + ("_spark" if self.spark else "")

    @default("display_name")
    def _display_name_default(self) -> str:
        return ("Spark - " if self.spark else "") + f"{self.language.title()} on SSH hosts (gp)"

    @default("spark_home")
    def _spark_home_default(self) -> str:
        return os.environ.get("SPARK_HOME", "/opt/spark")

    @validate("remote_hosts")
    def _split_hosts(self, proposal: Any) -> list[str]:
        hosts: list[str] = []
        for entry in proposal["value"]:
            hosts.extend(parse_list(entry))
        for host in hosts:
            if host.startswith("-") or any(c.isspace() or c in "@/" for c in host):
                raise TraitError(f"--remote-hosts {host!r} is not a host name or address")
        return hosts

    def launcher_args(self) -> list[str]:
        args = super().launcher_args()
        if self.spark:
            args += ["--spark-context-initialization-mode", self.spark_init_mode, "--cluster-type", "spark"]
        return args


def add_ssh_settings(app: Any, kernel_spec: dict[str, Any]) -> dict[str, Any]:
    """Add the ssh options the installer was given to ``kernel_spec`` (the ``install_spec`` hook)."""
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
    hosts = list(getattr(app, "remote_hosts", None) or [])
    if hosts:
        config["remote_hosts"] = hosts
    if getattr(app, "spark", False):
        spark_home = app.spark_home
        submit_args = ["--master", app.spark_master, "--deploy-mode", "client"]
        if app.extra_spark_opts:
            submit_args.append(app.extra_spark_opts)
        kernel_spec.setdefault("env", {}).update(
            {
                "SPARK_HOME": spark_home,
                "PYSPARK_PYTHON": kernel_spec["argv"][0],
                "PYTHONPATH": ":".join([f"{spark_home}/python", *_py4j_paths(spark_home)]),
                # pyspark reads its master and deploy mode from here when the kernel builds its session.
                "PYSPARK_SUBMIT_ARGS": " ".join([*submit_args, "pyspark-shell"]),
            }
        )
    return kernel_spec


def _py4j_paths(spark_home: str) -> list[str]:
    """py4j's zip as found in a local Spark of the same layout (remote hosts usually mirror it)."""
    return sorted(str(path) for path in Path(spark_home, "python", "lib").glob("py4j-*-src.zip"))[-1:]


class SshSpecApp(SpecInstallerApp):
    """``jupyter ssh-spec``: install kernelspecs for gp's ssh backend."""

    name = "jupyter-ssh-spec"
    description = "Install kernelspecs whose kernels run on remote hosts over SSH (gp backend 'ssh')."
    subcommands = {"install": (SshInstallSpecApp, SshInstallSpecApp.description)}


main = SshSpecApp.launch_instance
