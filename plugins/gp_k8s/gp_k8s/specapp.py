"""``jupyter k8s-spec install``: a kernelspec whose kernels run as Kubernetes pods.

Core writes the common kernelspec; the ``install_spec`` hook (:func:`k8s_kernel_spec`) points argv at the
launcher inside the kernel image (built with ``jupyter image-bootstrap install``), records the image options
and puts the pod template, ``scripts/kernel-pod.yaml.j2``, into the spec for operators to edit.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from traitlets import Bool, Unicode, default

from gp_core import env_default
from gp_core.spark import SparkInstallerOptions, spark_aliases, spark_flags, spark_launcher_args
from gp_core.specapp import InstallSpecApp, SpecInstallerApp

#: Where ``jupyter image-bootstrap install`` (default ``--dest``) puts the launcher inside an image.
IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"


class K8sInstallSpecApp(InstallSpecApp, SparkInstallerOptions):
    """Install a kernelspec whose kernel runs in a Kubernetes pod."""

    name = "jupyter-k8s-spec-install"
    description = "Install a kernelspec whose kernel runs in a Kubernetes pod (gp backend 'k8s')."
    backend_name = "k8s"

    image_name = Unicode(
        config=True,
        help="Kernel image (default: env GP_IMAGE_NAME; unset: the server's GP_IMAGE_NAME at launch).",
    )
    executor_image_name = Unicode(
        config=True, help="Image of Spark executors, passed to the kernel as KERNEL_EXECUTOR_IMAGE."
    )
    namespace = Unicode(
        "", config=True, help="Namespace of this kernel's pods (unset: the server's GP_NAMESPACE at launch)."
    )
    image_pull_policy = Unicode("", config=True, help="imagePullPolicy: Always, IfNotPresent or Never.")
    host_network = Bool(False, config=True, help="Run the kernel pods on the node's network (hostNetwork).")
    spark_master = Unicode(
        config=True,
        help="--spark: the spark-submit master, k8s://https://<apiserver>:<port> (default: from "
        "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT where the installer runs).",
    )
    service_account_name = Unicode(
        "",
        config=True,
        help="Service account of the kernel pods (--spark: the driver creates executors as it).",
    )

    aliases = {
        **InstallSpecApp.aliases,
        "image-name": "K8sInstallSpecApp.image_name",
        "executor-image-name": "K8sInstallSpecApp.executor_image_name",
        "namespace": "K8sInstallSpecApp.namespace",
        "image-pull-policy": "K8sInstallSpecApp.image_pull_policy",
        "spark-master": "K8sInstallSpecApp.spark_master",
        "service-account-name": "K8sInstallSpecApp.service_account_name",
        **spark_aliases("K8sInstallSpecApp"),
    }
    flags = {
        **InstallSpecApp.flags,
        **spark_flags(
            "K8sInstallSpecApp",
            "A Spark kernel: spark-submit --deploy-mode cluster, the kernel in the driver pod.",
        ),
        "host-network": ({"K8sInstallSpecApp": {"host_network": True}}, "Run kernel pods with hostNetwork."),
    }

    _image_name_default = default("image_name")(env_default("GP_IMAGE_NAME", ""))
    _executor_default = default("executor_image_name")(env_default("GP_EXECUTOR_IMAGE_NAME", ""))

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"k8s_{self.language.lower()}" + ("_spark" if self.spark else "")

    @default("display_name")
    def _display_name_default(self) -> str:
        return f"{'Spark - ' if self.spark else ''}{self.language.title()} on Kubernetes (gp)"

    @default("spark_master")
    def _spark_master_default(self) -> str:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        return f"k8s://https://{host}:{port}" if host and port else ""

    @default("python")
    def _python_default(self) -> str:
        return "python3"  # the image's python, not this one


class K8sSpecApp(SpecInstallerApp):
    """``jupyter k8s-spec``."""

    name = "jupyter-k8s-spec"
    description = "Install kernelspecs for gp's k8s backend."
    subcommands: dict[str, tuple[Any, str]] = {"install": (K8sInstallSpecApp, K8sInstallSpecApp.description)}


def k8s_kernel_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    """The ``install_spec`` hook: argv runs the image's launcher; the pod template goes into scripts/."""
    from ._render import DEFAULT_TEMPLATE, SPEC_TEMPLATE

    scripts = spec_dir / "scripts"
    shutil.rmtree(scripts, ignore_errors=True)  # core staged a local launcher: the image has its own
    scripts.mkdir()
    shutil.copy2(DEFAULT_TEMPLATE, spec_dir / SPEC_TEMPLATE)
    python = getattr(app, "python", "") or "python3"
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
    if getattr(app, "spark", False):
        if not app.spark_master.startswith("k8s://https://"):
            raise ValueError(
                f"--spark-master {app.spark_master!r} is not k8s://https://<apiserver>:<port> (set "
                "--spark-master, or run the installer with KUBERNETES_SERVICE_HOST/PORT set)"
            )
        kernel_spec["argv"] = [
            f"{app.spark_home}/bin/spark-submit", "--master", app.spark_master, "--deploy-mode", "cluster",
            f"local://{IMAGE_LAUNCHER}", *app.launcher_args(), *spark_launcher_args(app.spark_init_mode),
        ]  # fmt: skip
        kernel_spec.setdefault("env", {})["SPARK_HOME"] = app.spark_home
        if app.extra_spark_opts:
            from gp_core.spark import split_spark_opts

            split_spark_opts(app.extra_spark_opts, "--extra-spark-opts")  # refuse what cannot be split
            kernel_spec["env"]["SPARK_OPTS"] = app.extra_spark_opts
        config["spark"] = True
    else:
        kernel_spec["argv"] = [python, IMAGE_LAUNCHER, *app.launcher_args()]
    if getattr(app, "service_account_name", ""):
        config["service_account_name"] = app.service_account_name
    for option, attribute in (
        ("image", "image_name"),
        ("executor_image", "executor_image_name"),
        ("namespace", "namespace"),
        ("image_pull_policy", "image_pull_policy"),
    ):
        value = getattr(app, attribute, "")
        if value:
            config[option] = value
    if getattr(app, "host_network", False):
        config["host_network"] = True
    if "image" not in config:
        log.warning("No --image-name given: these kernels will run the server's GP_IMAGE_NAME image")
    return kernel_spec
