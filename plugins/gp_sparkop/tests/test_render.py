"""The SparkApplication gp-sparkop renders (pure: no cluster): its shape, and request values as inert data."""

from __future__ import annotations

import logging

import pytest
from gp_sparkop._options import SparkOperatorOptions
from gp_sparkop._render import render

from gp_core import BackendError
from gp_core.launcher import PLACEHOLDER_ARGS

LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
ARGV = ["python3", LAUNCHER, *PLACEHOLDER_ARGS, "--cluster-type", "spark"]
LOG = logging.getLogger("test")


def app_for(env: dict[str, str] | None = None, template: str | None = None, tmp_path=None, **config) -> dict:
    options = SparkOperatorOptions(
        image="img:1", namespace="ns", spark_advertise_address="127.0.0.1", **config
    )
    full_env = {"KERNEL_USERNAME": "alice", "KERNEL_ID": "k1", "GP_LAUNCH_TOKEN": "secret", **(env or {})}
    resource_dir = None
    if template is not None:
        (tmp_path / "scripts").mkdir()
        (tmp_path / "scripts" / "sparkoperator.k8s.io-v1beta2.yaml.j2").write_text(template)
        resource_dir = str(tmp_path)
    resources = render("k1", ARGV, full_env, env or {}, options, resource_dir, "https://127.0.0.1:16443", LOG)
    return resources["app"]


def test_the_application_runs_the_launcher_in_the_driver_pod_gp_k8s_renders():
    app = app_for(executor_instances=2, spark_config_map="spark-files")
    spec = app["spec"]
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and app["kind"] == "SparkApplication"
    assert app["metadata"]["name"] == spec["driver"]["podName"] == "alice-k1"
    assert spec["type"] == "Python" and spec["mainApplicationFile"] == f"local://{LAUNCHER}"
    assert spec["arguments"] == ARGV[2:] and spec["sparkVersion"]
    assert spec["executor"]["instances"] == 2 and spec["sparkConfigMap"] == "spark-files"
    assert (
        spec["driver"]["labels"]["component"] == "kernel"
        and spec["executor"]["labels"]["component"] == "worker"
    )
    driver = spec["driver"]["template"]
    kernel = driver["spec"]["containers"][0]
    assert "command" not in kernel and {"name": "GP_LAUNCH_TOKEN", "value": "secret"} in kernel["env"]
    assert kernel["securityContext"]["allowPrivilegeEscalation"] is False
    executor_env = spec["executor"]["template"]["spec"]["containers"][0]["env"]
    assert all(item["name"] != "GP_LAUNCH_TOKEN" for item in executor_env)
    assert spec["sparkConf"]["spark.kubernetes.driver.master"] == "https://127.0.0.1:16443"


def test_request_values_are_data_wherever_the_template_puts_them(tmp_path):
    value = "x\n---\nkind: Secret\n{{ 7 * 7 }}\n  injected: true"
    template = (
        "apiVersion: {{ kernel_api_version }}\nkind: SparkApplication\n"
        "metadata:\n  name: {{ kernel_app_name }}\n  annotations: {note: {{ kernel_extra }}}\n"
        "spec:\n  type: Python\n  arguments: [{{ kernel_extra }}]\n  driver: {}\n  executor: {}\n"
    )
    app = app_for({"KERNEL_EXTRA": value}, template, tmp_path)
    assert app["metadata"]["annotations"] == {"note": value}
    assert app["spec"]["arguments"] == [value] and "injected" not in app["spec"]


@pytest.mark.parametrize(
    "template, message",
    [
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: {{ kernel_app_name }}}\n", "not sparkoperator"),
        (
            "apiVersion: {{ kernel_api_version }}\nkind: SparkApplication\nmetadata: {name: other}\nspec: {}\n",
            "named",
        ),
        (
            "apiVersion: {{ kernel_api_version }}\nkind: SparkApplication\n"
            "metadata: {name: {{ kernel_app_name }}, namespace: kube-system}\nspec: {}\n",
            "namespace",
        ),
        ("{{ ''.__class__.__mro__ }}", "sandbox|forbids|render"),
    ],
)
def test_templates_that_leave_the_kernels_application_are_refused(tmp_path, template, message):
    with pytest.raises(BackendError, match=message):
        app_for(None, template, tmp_path)


def test_a_config_map_name_from_the_request_must_be_a_name():
    assert app_for({"KERNEL_SPARKAPP_CONFIG_MAP": "my-conf"})["spec"]["sparkConfigMap"] == "my-conf"
    with pytest.raises(BackendError, match="KERNEL_SPARKAPP_CONFIG_MAP"):
        app_for({"KERNEL_SPARKAPP_CONFIG_MAP": "a\nb: c"})


def test_spark_conf_lines_must_be_spark_keys():
    with pytest.raises(BackendError, match="spark_conf line 1"):
        app_for(spark_conf="not a conf")
