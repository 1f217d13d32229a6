"""``jupyter sparkop-spec install``: a kernelspec whose kernels are Spark Operator SparkApplications.

(A command of its own rather than ``jupyter k8s-spec install --spark --crd``: the kernelspec selects another
backend, with its own options, and gp-k8s must not depend on gp-sparkop.)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from traitlets import Bool, Unicode, default

from gp_core import env_default
from gp_core.spark import spark_launcher_args
from gp_core.specapp import InstallSpecApp, SpecInstallerApp

IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"


class SparkOpInstallSpecApp(InstallSpecApp):
    """Install a kernelspec whose kernel is a SparkApplication run by the Spark Operator."""

    name = "jupyter-sparkop-spec-install"
    description = (
        "Install a kernelspec whose kernel runs as a Spark Operator SparkApplication (gp 'spark-operator')."
    )
    backend_name = "spark-operator"

    image_name = Unicode(config=True, help="Kernel (driver) image (default: env GP_IMAGE_NAME).")
    executor_image_name = Unicode(config=True, help="Executor image (default: the kernel image).")
    namespace = Unicode("", config=True, help="Namespace of the kernels' applications.")
    service_account_name = Unicode("", config=True, help="Service account of the driver pods.")
    spark_init_mode = Unicode(
        "lazy", config=True, help="When the kernel creates its SparkContext: lazy, eager, none."
    )
    host_network = Bool(False, config=True, help="Run the driver and executor pods on the node's network.")

    aliases = {
        **InstallSpecApp.aliases,
        "image-name": "SparkOpInstallSpecApp.image_name",
        "executor-image-name": "SparkOpInstallSpecApp.executor_image_name",
        "namespace": "SparkOpInstallSpecApp.namespace",
        "service-account-name": "SparkOpInstallSpecApp.service_account_name",
        "spark-init-mode": "SparkOpInstallSpecApp.spark_init_mode",
    }
    flags = {
        **InstallSpecApp.flags,
        "host-network": ({"SparkOpInstallSpecApp": {"host_network": True}}, "Run pods with hostNetwork."),
    }

    _image_name_default = default("image_name")(env_default("GP_IMAGE_NAME", ""))

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return "spark_operator_python"

    @default("display_name")
    def _display_name_default(self) -> str:
        return "Spark - Python (Spark Operator, gp)"

    @default("python")
    def _python_default(self) -> str:
        return "python3"


class SparkOpSpecApp(SpecInstallerApp):
    """``jupyter sparkop-spec``."""

    name = "jupyter-sparkop-spec"
    description = "Install kernelspecs for gp's spark-operator backend."
    subcommands: dict[str, tuple[Any, str]] = {
        "install": (SparkOpInstallSpecApp, SparkOpInstallSpecApp.description)
    }


def sparkop_kernel_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    """The ``install_spec`` hook: argv names the launcher in the image with its arguments (the operator
    runs it as the application); both templates go into scripts/ for operators to edit."""
    import gp_k8s

    from ._render import DEFAULT_TEMPLATE

    scripts = spec_dir / "scripts"
    shutil.rmtree(scripts, ignore_errors=True)
    scripts.mkdir()
    shutil.copy2(DEFAULT_TEMPLATE, scripts / DEFAULT_TEMPLATE.name)
    pod_template = Path(gp_k8s.__file__).with_name("kernel-pod.yaml.j2")
    shutil.copy2(pod_template, scripts / "kernel-pod.yaml.j2")
    kernel_spec["argv"] = [
        "python3",
        IMAGE_LAUNCHER,
        *app.launcher_args(),
        *spark_launcher_args(app.spark_init_mode),
    ]
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
    for option, attribute in (
        ("image", "image_name"),
        ("executor_image", "executor_image_name"),
        ("namespace", "namespace"),
        ("service_account_name", "service_account_name"),
    ):
        value = getattr(app, attribute, "")
        if value:
            config[option] = value
    if app.host_network:
        config["host_network"] = True
    return kernel_spec
