"""The Spark flavour's pure parts: what a request's KERNEL_EXTRA_SPARK_OPTS may do, and the spark-submit
command and pod templates gp derives from kernel.json's argv and the rendered kernel pod."""

from __future__ import annotations

import logging

import pytest
from gp_k8s._options import K8sOptions
from gp_k8s._render import render
from gp_k8s._spark import check_request_opts, prepare

from gp_core import BackendError

ARGV = [
    "/opt/spark/bin/spark-submit", "--master", "k8s://https://127.0.0.1:16443", "--deploy-mode", "cluster",
    "local:///usr/local/bin/kernel-launchers/python/launch_ipykernel.py", "--kernel-id", "k1",
    "--spark-context-initialization-mode", "lazy", "--cluster-type", "spark",
]  # fmt: skip
LOG = logging.getLogger("test")


def submit(env: dict[str, str], request_env: dict[str, str] | None = None, **config: object) -> dict:
    options = K8sOptions(spark=True, image="img:1", namespace="spark-ns", **config)
    namespace = {"name": "spark-ns", "mode": "shared", "service_account": "spark"}
    full_env = {"KERNEL_USERNAME": "alice", "KERNEL_ID": "k1", "GP_LAUNCH_TOKEN": "secret", **env}
    resources = render("k1", ARGV, full_env, options, namespace, None, LOG, request_env or {})
    return prepare("k1", ARGV, full_env, request_env or {}, options, resources, LOG)["spark"]


def confs(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, item in enumerate(argv) if item == "--conf"]
    result: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        result[key] = value  # later ones win, as in spark-submit
    return result


def test_gp_confs_come_last_before_the_application_and_name_the_kernel():
    spark = submit({"SPARK_OPTS": "--conf spark.executor.instances=2"})
    argv = spark["argv"]
    app = argv.index(ARGV[5])
    assert argv[app:] == ARGV[5:] and argv[:5] == ARGV[:5]
    settings = confs(argv)
    assert settings["spark.kubernetes.namespace"] == "spark-ns"
    assert settings["spark.app.name"] == settings["spark.kubernetes.driver.pod.name"] == "alice-k1"
    assert settings["spark.kubernetes.driver.label.kernel_id"] == "k1"
    assert settings["spark.kubernetes.executor.label.component"] == "worker"
    assert settings["spark.kubernetes.driver.master"] == "https://127.0.0.1:16443"
    assert settings["spark.executor.instances"] == "2"  # the kernelspec's SPARK_OPTS


def test_the_driver_template_is_the_kernel_pod_and_executors_get_no_launch_secrets():
    spark = submit({})
    driver, executor = spark["driver_template"], spark["executor_template"]
    kernel = driver["spec"]["containers"][0]
    assert "command" not in kernel and driver["spec"]["automountServiceAccountToken"] is True
    assert {"name": "GP_LAUNCH_TOKEN", "value": "secret"} in kernel["env"]
    assert executor["metadata"]["labels"]["component"] == "worker"
    assert all(item["name"] != "GP_LAUNCH_TOKEN" for item in executor["spec"]["containers"][0]["env"])
    assert "GP_LAUNCH_TOKEN" not in " ".join(spark["argv"])  # never on a command line


def test_request_spark_opts_are_argv_data_after_the_kernelspecs_and_before_gps():
    opts = "--conf 'spark.executor.memory=2g' --num-executors 3 --conf 'spark.app.x=$(touch /tmp/pwned)'"
    spark = submit({"KERNEL_EXTRA_SPARK_OPTS": opts}, {"KERNEL_EXTRA_SPARK_OPTS": opts})
    argv = spark["argv"]
    assert "spark.app.x=$(touch /tmp/pwned)" in argv  # one argv item, no shell ever sees it
    assert argv[argv.index("--num-executors") + 1] == "3"
    assert confs(argv)["spark.executor.memory"] == "2g"


@pytest.mark.parametrize(
    "opts, refused",
    [
        ("--master local[2]", "--master"),
        ("--conf spark.kubernetes.namespace=kube-system", "spark.kubernetes.namespace"),
        (
            "--conf spark.kubernetes.driver.podTemplateFile=/etc/passwd",
            "spark.kubernetes.driver.podTemplateFile",
        ),
        ("--conf spark.driver.extraJavaOptions=-Dx", "spark.driver.extraJavaOptions"),
        ("--conf spark.executorEnv.GP_LAUNCH_TOKEN=x", "spark.executorEnv"),
        ("--properties-file /etc/shadow", "--properties-file"),
        ("--py-files /etc/passwd", "--py-files"),
        ("--conf 'x'", "not key=value"),
        ("--conf 'spark.a=1", "cannot be split"),
        ("--num-executors --master", "is not a value"),
        ("--conf", "needs a value"),
    ],
)
def test_request_spark_opts_that_could_move_the_kernel_are_refused(opts, refused):
    with pytest.raises(BackendError, match="KERNEL_EXTRA_SPARK_OPTS") as failure:
        check_request_opts(opts)
    assert refused in str(failure.value)


def test_a_request_may_not_replace_the_kernelspecs_spark_opts():
    with pytest.raises(BackendError, match="SPARK_OPTS refused"):
        submit({"SPARK_OPTS": "--conf spark.a=1"}, {"SPARK_OPTS": "--conf spark.a=1"})


def test_an_argv_without_a_local_application_or_k8s_master_is_refused():
    options = K8sOptions(spark=True, image="img:1")
    namespace = {"name": "default", "mode": "shared", "service_account": "default"}
    env = {"KERNEL_USERNAME": "a"}
    for argv, message in (
        (["spark-submit", "--master", "k8s://https://x:1", "/tmp/launch.py"], "local://"),
        (["spark-submit", "--master", "yarn", "local:///l.py"], "k8s://"),
    ):
        resources = render("k1", argv, env, options, namespace, None, LOG, {})
        with pytest.raises(BackendError, match=message):
            prepare("k1", argv, env, {}, options, resources, LOG)


async def test_a_silent_launcher_in_a_driver_pod_is_not_interrupted_through_the_jvm():
    import signal

    from gp_k8s import hooks

    handle = {"namespace": "ns", "pod": "p", "spark": {"submit_pid": 0, "dir": "/nonexistent"}}
    assert await hooks.send_signal(handle, K8sOptions(), signal.SIGINT, LOG) is False
