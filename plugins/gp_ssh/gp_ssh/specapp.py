"""``jupyter ssh-spec install``: a kernelspec whose kernels run on remote hosts over SSH.

Core writes the common kernelspec (argv running gp's launcher, copied into the spec's ``scripts/``);
the ``install_spec`` hook calls :func:`add_ssh_settings` to add the hosts and, for a Spark kernel, the
Spark environment. ``--python`` names the interpreter *on the remote hosts*. The launcher path in argv
is the spec directory's copy; a remote host that lacks that path gets a per-kernel copy at launch time
(``upload_launcher``, default ``if-missing``).
"""

from __future__ import annotations

from typing import Any

from traitlets import List, TraitError, Unicode, default, validate

from gp_core import parse_list
from gp_core.spark import SparkInstallerOptions, pyspark_env, spark_aliases, spark_flags, spark_launcher_args
from gp_core.specapp import InstallSpecApp, SpecInstallerApp


class SshInstallSpecApp(InstallSpecApp, SparkInstallerOptions):
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
    spark_master = Unicode("yarn", config=True, help="Spark master URL of a Spark kernel (--spark).")

    aliases = {
        **InstallSpecApp.aliases,
        "remote-hosts": "SshInstallSpecApp.remote_hosts",
        "spark-master": "SshInstallSpecApp.spark_master",
        **spark_aliases("SshInstallSpecApp"),
    }
    flags = {
        **InstallSpecApp.flags,
        **spark_flags("SshInstallSpecApp", "Install a Spark kernel (client mode on the remote host)."),
    }

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"ssh_{self.language.lower()}" + ("_spark" if self.spark else "")

    @default("display_name")
    def _display_name_default(self) -> str:
        return ("Spark - " if self.spark else "") + f"{self.language.title()} on SSH hosts (gp)"

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
            args += spark_launcher_args(self.spark_init_mode)
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
        # py4j is looked up in a local Spark of the same layout (remote hosts usually mirror it).
        kernel_spec.setdefault("env", {}).update(pyspark_env(spark_home, kernel_spec["argv"][0], submit_args))
    return kernel_spec


class SshSpecApp(SpecInstallerApp):
    """``jupyter ssh-spec``: install kernelspecs for gp's ssh backend."""

    name = "jupyter-ssh-spec"
    description = "Install kernelspecs whose kernels run on remote hosts over SSH (gp backend 'ssh')."
    subcommands = {"install": (SshInstallSpecApp, SshInstallSpecApp.description)}


main = SshSpecApp.launch_instance
