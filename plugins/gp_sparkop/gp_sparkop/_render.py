"""Render a kernel's SparkApplication (pure: creates nothing).

The driver's pod is gp-k8s's kernel pod (the kernelspec's ``scripts/kernel-pod.yaml.j2``, rendered, checked
and completed by gp-k8s: env, labels, security context, volumes, hostNetwork), handed to the operator as the
driver's and executors' pod templates; the SparkApplication itself comes from
``scripts/<group>-<version>.yaml.j2`` rendered the same injection-proof way (gp_k8s.render_template).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import gp_k8s

from gp_core import BackendError, Resources

from ._options import SparkOperatorOptions

DEFAULT_TEMPLATE = Path(__file__).with_name("sparkoperator.k8s.io-v1beta2.yaml.j2")


def template_path(options: SparkOperatorOptions, resource_dir: str | None) -> Path:
    """``app_template`` (relative to the kernelspec), else ``scripts/<group>-<version>.yaml.j2`` in the
    kernelspec, else gp-sparkop's own."""
    if options.app_template:
        path = Path(options.app_template)
        if not path.is_absolute():
            if not resource_dir:
                raise BackendError(
                    f"app_template {options.app_template!r} is relative, but the kernelspec has no directory"
                )
            path = Path(resource_dir) / path
        if not path.is_file():
            raise BackendError(f"app_template {str(path)!r} does not exist")
        return path
    own = f"scripts/{options.crd_group}-{options.crd_version}.yaml.j2"
    if resource_dir and (Path(resource_dir) / own).is_file():
        return Path(resource_dir) / own
    return DEFAULT_TEMPLATE


def _launcher_arguments(cmd: list[str]) -> list[str]:
    """The launcher's arguments from kernel.json's argv (``python3 <launcher> ARGS...``)."""
    for index, item in enumerate(cmd):
        if item.endswith(".py"):
            return list(cmd[index + 1 :])
    raise BackendError("spark-operator: kernel.json's argv must run the launcher: python3 <launcher>.py ARGS")


def _spark_conf(options: SparkOperatorOptions, master: str) -> dict[str, str]:
    conf: dict[str, str] = {}
    for number, line in enumerate(options.spark_conf.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"spark\.[A-Za-z0-9._-]+", key.strip()):
            raise BackendError(f"spark_conf line {number} {line!r} is not spark.key=value")
        conf[key.strip()] = value.strip()
    conf.update({"spark.ui.enabled": "false", "spark.kubernetes.executor.deleteOnTermination": "true"})
    if master:
        conf["spark.kubernetes.driver.master"] = master
    if options.spark_advertise_address:
        conf["spark.kubernetes.driverEnv.GP_SPARK_ADVERTISE_ADDRESS"] = options.spark_advertise_address
        conf["spark.executorEnv.GP_SPARK_ADVERTISE_ADDRESS"] = options.spark_advertise_address
    return conf


def render(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str] | None,
    options: SparkOperatorOptions,
    resource_dir: str | None,
    master: str,
    log: logging.Logger,
) -> Resources:
    """Everything ``launch`` creates: ``{"namespace": {...}, "app": <SparkApplication>}`` (blocking: reads
    the templates)."""
    kernel = gp_k8s.render_pod(kernel_id, cmd, env, options, resource_dir, log, request_env)
    if kernel["objects"]:
        raise BackendError("spark-operator: the pod template may render only the Pod")
    pod = kernel["pod"]
    namespace = kernel["namespace"]
    driver, executor = gp_k8s.spark_pod_templates(pod)
    name = pod["metadata"]["name"]
    container = next(c for c in pod["spec"]["containers"] if c.get("name") == "kernel")
    labels = dict(pod["metadata"]["labels"])
    executor_labels = {**labels, "component": "worker"}
    for template in (driver, executor):
        template["metadata"].pop("name", None)
        template["metadata"].pop("namespace", None)
    api_version = f"{options.crd_group}/{options.crd_version}"
    variables: dict[str, Any] = {
        key.lower(): value for key, value in env.items() if key.startswith("KERNEL_")
    }
    variables.update(
        kernel_app_name=name,
        kernel_namespace=namespace["name"],
        kernel_api_version=api_version,
        kernel_labels=labels,
        executor_labels=executor_labels,
        kernel_image=container["image"],
        kernel_executor_image=options.executor_image or container["image"],
        kernel_service_account_name=namespace["service_account"] or options.service_account_name,
        image_pull_policy=options.image_pull_policy,
        spark_version=options.spark_version,
        main_application_file=options.main_application_file,
        kernel_arguments=_launcher_arguments(cmd),
        driver_cores=options.driver_cores,
        driver_memory=options.driver_memory,
        executor_cores=options.executor_cores,
        executor_memory=options.executor_memory,
        executor_instances=options.executor_instances,
        spark_config_map=options.spark_config_map or gp_k8s_requested_config_map(env, request_env),
        spark_conf=_spark_conf(options, master),
        driver_pod_template=driver,
        executor_pod_template=executor,
        kernel_volumes=list(pod["spec"].get("volumes") or []),
    )
    path = template_path(options, resource_dir)
    documents = [doc for doc in gp_k8s.render_template(path, variables) if doc is not None]
    where = f"SparkApplication template {path}"
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise BackendError(f"{where}: must render exactly one SparkApplication")
    app = documents[0]
    if app.get("kind") != "SparkApplication" or app.get("apiVersion") != api_version:
        raise BackendError(
            f"{where}: rendered {app.get('apiVersion')}/{app.get('kind')}, not {api_version}/SparkApplication"
        )
    metadata = app.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("name") != name:
        raise BackendError(f"{where}: the application must be named {{{{ kernel_app_name }}}} ({name!r})")
    if metadata.get("namespace") not in (None, namespace["name"]):
        raise BackendError(f"{where}: names namespace {metadata.get('namespace')!r}, not the kernel's")
    metadata["namespace"] = namespace["name"]
    metadata["labels"] = {**{str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}, **labels}
    spec = app.get("spec")
    if not isinstance(spec, dict):
        raise BackendError(f"{where}: has no spec mapping")
    driver_spec = spec.setdefault("driver", {})
    driver_spec["labels"] = {**(driver_spec.get("labels") or {}), **labels}
    driver_spec["podName"] = name  # the pod gp-k8s's status watch tracks
    executor_spec = spec.setdefault("executor", {})
    executor_spec["labels"] = {**(executor_spec.get("labels") or {}), **executor_labels}
    return {"namespace": namespace, "app": app, "pod": name}


def gp_k8s_requested_config_map(env: dict[str, str], request_env: dict[str, str] | None) -> str:
    """The anchor's KERNEL_SPARKAPP_CONFIG_MAP: honoured only as a DNS-1123 name."""
    value = (request_env if request_env is not None else env).get("KERNEL_SPARKAPP_CONFIG_MAP", "").strip()
    if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
        raise BackendError(f"KERNEL_SPARKAPP_CONFIG_MAP={value!r} is not a ConfigMap name")
    return value
