"""Options of the ``spark-operator`` backend: gp-k8s's options (namespaces, image, pod settings, policies:
``c.K8sOptions`` applies here too) plus the SparkApplication's."""

from __future__ import annotations

import re
from typing import Any

from gp_k8s import K8sOptions
from traitlets import Float, Int, TraitError, Unicode, default, validate

from gp_core import env_default

#: Where ``jupyter image-bootstrap install`` puts the launcher inside an image.
IMAGE_LAUNCHER = "local:///usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_MEMORY = re.compile(r"[0-9]+[kmgtKMGT]?")


class SparkOperatorOptions(K8sOptions):
    """Options of the ``spark-operator`` backend (and every option of gp-k8s)."""

    request_variables = {
        **getattr(K8sOptions, "request_variables", {}),
        "KERNEL_SPARKAPP_CONFIG_MAP": "spec.sparkConfigMap of this kernel's SparkApplication when "
        "spark_config_map is unset (a ConfigMap name).",
    }

    crd_group = Unicode(
        "sparkoperator.k8s.io", config=True, help="API group of the SparkApplication custom resource."
    )
    crd_version = Unicode("v1beta2", config=True, help="API version of the SparkApplication custom resource.")
    crd_plural = Unicode("sparkapplications", config=True, help="Plural name of the custom resource.")
    app_template = Unicode(
        config=True,
        help="SparkApplication template, relative to the kernelspec's directory or absolute (default "
        "scripts/<group>-<version>.yaml.j2, else gp-sparkop's own).",
    )
    spark_version = Unicode("3.4.4", config=True, help="spec.sparkVersion of the SparkApplication.")
    main_application_file = Unicode(
        IMAGE_LAUNCHER, config=True, help="spec.mainApplicationFile: gp's launcher inside the image."
    )
    driver_cores = Int(1, config=True, help="spec.driver.cores.")
    driver_memory = Unicode("1g", config=True, help="spec.driver.memory (e.g. 512m, 1g).")
    executor_cores = Int(1, config=True, help="spec.executor.cores.")
    executor_memory = Unicode("1g", config=True, help="spec.executor.memory (e.g. 512m, 1g).")
    executor_instances = Int(1, config=True, help="spec.executor.instances.")
    spark_config_map = Unicode(
        config=True, help="spec.sparkConfigMap: a ConfigMap with Spark configuration files (optional)."
    )
    spark_conf = Unicode(
        "", config=True, help="More spark configuration for spec.sparkConf, as 'key=value' lines."
    )
    unknown_timeout = Float(
        30.0,
        config=True,
        help="Seconds an application may stay in the operator's UNKNOWN state during start-up before the "
        "launch fails.",
    )

    _config_map_default = default("spark_config_map")(env_default("GP_SPARK_CONFIG_MAP", ""))

    @validate("crd_group", "crd_plural", "spark_config_map")
    def _check_name(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value and not _NAME.fullmatch(value):
            raise TraitError(f"{proposal['trait'].name} {value!r} is not a DNS-1123 name")
        return value

    @validate("crd_version")
    def _check_version(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not re.fullmatch(r"v[0-9]+((alpha|beta)[0-9]+)?", value):
            raise TraitError(f"crd_version {value!r} is not an API version like v1beta2")
        return value

    @validate("driver_memory", "executor_memory")
    def _check_memory(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not _MEMORY.fullmatch(value):
            raise TraitError(f"{proposal['trait'].name} {value!r} is not a Spark memory size like 512m or 1g")
        return value

    @validate("driver_cores", "executor_cores", "executor_instances")
    def _check_count(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 1024:  # the operator's CRD refuses 0
            raise TraitError(f"{proposal['trait'].name} must be within 1..1024, not {value}")
        return value
