"""``jupyter k8s-spec install``: a kernelspec whose kernels run as Kubernetes pods.

Core writes the common kernelspec; the ``install_spec`` hook (:func:`k8s_kernel_spec`) points argv at the
launcher inside the kernel image (built with ``jupyter image-bootstrap install``), records the image options
and puts the pod template, ``scripts/kernel-pod.yaml.j2``, into the spec for operators to edit.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from traitlets import Bool, Unicode, default

from gp_core import env_default
from gp_core.specapp import InstallSpecApp, SpecInstallerApp

#: Where ``jupyter image-bootstrap install`` (default ``--dest``) puts the launcher inside an image.
IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"


class K8sInstallSpecApp(InstallSpecApp):
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

    aliases = {
        **InstallSpecApp.aliases,
        "image-name": "K8sInstallSpecApp.image_name",
        "executor-image-name": "K8sInstallSpecApp.executor_image_name",
        "namespace": "K8sInstallSpecApp.namespace",
        "image-pull-policy": "K8sInstallSpecApp.image_pull_policy",
    }
    flags = {
        **InstallSpecApp.flags,
        "host-network": ({"K8sInstallSpecApp": {"host_network": True}}, "Run kernel pods with hostNetwork."),
    }

    _image_name_default = default("image_name")(env_default("GP_IMAGE_NAME", ""))
    _executor_default = default("executor_image_name")(env_default("GP_EXECUTOR_IMAGE_NAME", ""))

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"k8s_{self.language.lower()}"

    @default("display_name")
    def _display_name_default(self) -> str:
        return f"{self.language.title()} on Kubernetes (gp)"

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
    kernel_spec["argv"] = [python, IMAGE_LAUNCHER, *app.launcher_args()]
    config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
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
