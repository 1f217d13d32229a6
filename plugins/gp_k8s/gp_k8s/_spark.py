"""The ``k8s`` backend's Spark flavour (option ``spark``): kernel.json's argv runs ``spark-submit --master
k8s://... --deploy-mode cluster`` on the server with gp's launcher as the application, and the kernel lives
in the Spark driver pod.

gp renders the pod template as for any kernel and hands it to Spark as the driver's pod template (the
kernel's env, labels, security context, hostNetwork, volumes); the executors get the same pod minus the
launch protocol's variables, labelled ``component=worker``. Spark names the driver pod after the kernel
(``spark.kubernetes.driver.pod.name``), so the shared status watch of kernel pods tracks it like any kernel
pod; the executors, the driver's Service and ConfigMaps are owned by the driver pod and go with it.

Request data (``KERNEL_EXTRA_SPARK_OPTS``) is split into argv items without a shell and may only use the
options and ``--conf`` keys that cannot move the kernel elsewhere; gp's own ``--conf`` values come last, so
nothing before them can override them.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gp_core import BackendError, Handle, LaunchError, Resources, file_tail, process_status, start_process
from gp_core.spark import split_spark_opts

from . import _kube
from ._config import ClusterRef
from ._options import K8sOptions
from ._render import PROTOCOL_ENV, requested

#: Options a request's KERNEL_EXTRA_SPARK_OPTS may use (each takes one value).
REQUEST_OPTIONS = frozenset(
    {
        "--conf",
        "--num-executors",
        "--executor-memory",
        "--executor-cores",
        "--driver-memory",
        "--driver-cores",
        "--total-executor-cores",
    }
)
#: ``--conf`` keys a request may not set: where and as whom the kernel runs, and how it reports back.
_PROTECTED_CONF = re.compile(
    r"spark\.(master|submit\..*|app\.name|driver\.(host|bindAddress|port|extraJavaOptions|extraClassPath)"
    r"|executor\.(extraJavaOptions|extraClassPath)|blockManager\.port|kubernetes\..*|files|jars|py[Ff]iles"
    r"|archives|.*\.(pod)?[tT]emplate.*|executorEnv\..*|yarn\..*|ui\..*)"
)
#: ``spark.kubernetes.*`` keys a request may set anyway (the executors' shape).
_ALLOWED_K8S_CONF = frozenset(
    {
        "spark.kubernetes.executor.request.cores",
        "spark.kubernetes.executor.limit.cores",
        "spark.kubernetes.driver.request.cores",
        "spark.kubernetes.driver.limit.cores",
        "spark.kubernetes.memoryOverheadFactor",
        "spark.kubernetes.allocation.batch.size",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The label of executor pods (the status watch selects ``component=kernel``: drivers only).
EXECUTOR_COMPONENT = "worker"
#: The server variables spark-submit needs (the kernel's request values are no business of it).
_SUBMIT_ENV = ("PATH", "HOME", "LANG", "JAVA_HOME", "SPARK_HOME", "SPARK_CONF_DIR", "TMPDIR", "USER")

_processes: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def check_request_opts(text: str) -> list[str]:
    """``KERNEL_EXTRA_SPARK_OPTS`` as argv items, refused when it uses an option or key it may not."""
    try:
        items = split_spark_opts(text, "KERNEL_EXTRA_SPARK_OPTS")
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    allowed = ", ".join(sorted(REQUEST_OPTIONS))
    index = 0
    while index < len(items):
        option = items[index]
        name, has_value, inline = option.partition("=")
        if name not in REQUEST_OPTIONS:
            raise BackendError(
                f"KERNEL_EXTRA_SPARK_OPTS: option {option!r} refused; a request may use {allowed}"
            )
        if has_value:
            value = inline
            index += 1
        else:
            if index + 1 >= len(items):
                raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {name} needs a value")
            value = items[index + 1]
            index += 2
        if name == "--conf":
            key = value.partition("=")[0].strip()
            if not value.partition("=")[1] or not re.fullmatch(r"spark\.[A-Za-z0-9._-]+", key):
                raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: --conf {value!r} is not key=value")
            if _PROTECTED_CONF.fullmatch(key) and key not in _ALLOWED_K8S_CONF:
                raise BackendError(
                    f"KERNEL_EXTRA_SPARK_OPTS: --conf {key} refused: gp sets where and how the kernel runs "
                    "(spark.master, spark.submit.*, spark.kubernetes.*, ports, files, templates, executor env)"
                )
        elif value.startswith("-"):
            raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {name} {value!r} is not a value")
        if _CONTROL.search(value):
            raise BackendError(f"KERNEL_EXTRA_SPARK_OPTS: {name} {value!r} contains control characters")
    return items


def _app_index(cmd: list[str]) -> int:
    """Where the application (the launcher, a ``local://`` file in the image) is in the submit argv."""
    for index, item in enumerate(cmd):
        if item.startswith("local://"):
            return index
    raise BackendError(
        "spark: kernel.json's argv must run spark-submit with the launcher inside the image as the "
        "application (a local:// path, e.g. local:///usr/local/bin/kernel-launchers/python/launch_ipykernel.py)"
    )


def _master(cmd: list[str]) -> str:
    for index, item in enumerate(cmd):
        if item == "--master" and index + 1 < len(cmd):
            master = cmd[index + 1]
        elif item.startswith("--master="):
            master = item.split("=", 1)[1]
        else:
            continue
        if not master.startswith("k8s://"):
            raise BackendError(f"spark: --master {master!r} is not a k8s:// master URL")
        return master
    raise BackendError("spark: kernel.json's argv has no --master k8s://https://<apiserver>")


#: The server's Spark and Java settings: they describe the server's host, never the image's.
HOST_ONLY_ENV = frozenset(
    {"SPARK_HOME", "SPARK_OPTS", "SPARK_CONF_DIR", "JAVA_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
     "PYSPARK_SUBMIT_ARGS", "PYTHONPATH", "KUBECONFIG", "PATH", "HOME"}
)  # fmt: skip


def pod_templates(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spark's driver and executor pod templates from a rendered kernel pod: the driver is the pod without
    its command (the image's entrypoint runs Spark's driver), with its service account token (it creates
    its executors) and without the server's Spark/Java variables; the executors are labelled
    ``component=worker`` and get none of the launch protocol's variables."""
    driver = copy.deepcopy(pod)
    for container in driver["spec"]["containers"]:
        container["env"] = [
            item for item in container.get("env") or [] if item.get("name") not in HOST_ONLY_ENV
        ]
        if container.get("name") == "kernel":
            container.pop("command", None)
            container.pop("args", None)
    driver["spec"]["automountServiceAccountToken"] = True
    driver["spec"]["restartPolicy"] = "Never"
    executor = copy.deepcopy(driver)
    executor["metadata"].pop("name", None)
    executor["metadata"]["labels"]["component"] = EXECUTOR_COMPONENT
    protocol = set(PROTOCOL_ENV)
    for container in executor["spec"]["containers"]:
        container["env"] = [item for item in container.get("env") or [] if item.get("name") not in protocol]
    return driver, executor


def prepare(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str] | None,
    options: K8sOptions,
    resources: Resources,
    log: logging.Logger,
) -> Resources:
    """Turn the rendered kernel pod into Spark's driver and executor pod templates, and the kernel's argv
    into the spark-submit command gp runs (pure: creates nothing)."""
    pod = resources["pod"]
    namespace = resources["namespace"]["name"]
    pod_name = pod["metadata"]["name"]
    if resources["objects"]:
        raise BackendError("spark: the pod template may render only the Pod (Spark creates the rest)")
    image = next(c for c in pod["spec"]["containers"] if c.get("name") == "kernel")["image"]
    pod, executor = pod_templates(pod)

    app = _app_index(cmd)
    master = _master(cmd[:app])
    extra: list[str] = []
    spark_opts = env.get("SPARK_OPTS", "")
    if request_env is not None and "SPARK_OPTS" in request_env:
        raise BackendError(
            "SPARK_OPTS refused: it is the kernelspec's; a request uses KERNEL_EXTRA_SPARK_OPTS"
        )
    if spark_opts:
        try:
            extra += split_spark_opts(spark_opts, "the kernelspec's SPARK_OPTS")
        except ValueError as exc:
            raise BackendError(str(exc)) from None
    asked = requested(env, "KERNEL_EXTRA_SPARK_OPTS", request_env)
    if asked:
        extra += check_request_opts(asked)

    work_dir = str(Path(tempfile.gettempdir()) / f"gp-spark-{pod_name}")
    executor_image = options.executor_image or image
    labels = pod["metadata"]["labels"]
    confs = {
        "spark.app.name": pod_name,
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.driver.pod.name": pod_name,
        "spark.kubernetes.driver.master": master.removeprefix("k8s://"),
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.executor.container.image": executor_image,
        "spark.kubernetes.container.image.pullPolicy": options.image_pull_policy,
        "spark.kubernetes.authenticate.driver.serviceAccountName": resources["namespace"]["service_account"]
        or options.service_account_name,
        "spark.kubernetes.driver.podTemplateFile": f"{work_dir}/driver-pod.json",
        "spark.kubernetes.driver.podTemplateContainerName": "kernel",
        "spark.kubernetes.executor.podTemplateFile": f"{work_dir}/executor-pod.json",
        "spark.kubernetes.executor.podTemplateContainerName": "kernel",
        "spark.kubernetes.submission.waitAppCompletion": "false",
        "spark.kubernetes.executor.deleteOnTermination": "true",
        "spark.ui.enabled": "false",
        "spark.submit.deployMode": "cluster",
    }
    for key, value in labels.items():
        confs[f"spark.kubernetes.driver.label.{key}"] = value
        confs[f"spark.kubernetes.executor.label.{key}"] = EXECUTOR_COMPONENT if key == "component" else value
    if options.spark_advertise_address:
        # e.g. hostNetwork pods on a single-node test cluster, where the node's address must not be used
        confs["spark.kubernetes.driverEnv.GP_SPARK_ADVERTISE_ADDRESS"] = options.spark_advertise_address
        confs["spark.executorEnv.GP_SPARK_ADVERTISE_ADDRESS"] = options.spark_advertise_address
    enforced = [item for key, value in confs.items() for item in ("--conf", f"{key}={value}")]
    argv = [*cmd[:app], *extra, *enforced, *cmd[app:]]

    submit_env = {name: env[name] for name in _SUBMIT_ENV if env.get(name)}
    if options.kubeconfig:
        submit_env["KUBECONFIG"] = options.kubeconfig
    resources["spark"] = {
        "argv": argv,
        "env": submit_env,
        "dir": work_dir,
        "kernel_id": kernel_id,
        "driver_template": pod,
        "executor_template": executor,
    }
    return resources


def submit(ref: ClusterRef, resources: Resources, log: logging.Logger) -> Handle:
    """Write the pod templates and start spark-submit (blocking); returns the kernel's handle."""
    import json

    spark = resources["spark"]
    work_dir = Path(spark["dir"])
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(mode=0o700)
    for name in ("driver", "executor"):
        path = work_dir / f"{name}-pod.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(spark[f"{name}_template"], out)
    log_path = work_dir / "spark-submit.log"
    process = start_process(spark["argv"], spark["env"], log_path, cwd=str(work_dir))
    with _lock:
        _processes[process.pid] = process
    namespace = resources["namespace"]
    pod = resources["pod"]["metadata"]["name"]
    from ._pods import created_at

    created_at[_kube.pod_key(namespace["name"], pod)] = time.monotonic()
    return {
        "namespace": namespace["name"],
        "namespace_mode": namespace["mode"],
        "pod": pod,
        "objects": [],
        "uid": "",
        "kernel_id": spark["kernel_id"],
        "spark": {"submit_pid": process.pid, "dir": str(work_dir)},
    }


def submission_state(handle: Handle) -> int | None:
    """spark-submit's exit status, None while it runs (or unknown: not this process's child)."""
    pid = int(handle["spark"].get("submit_pid") or 0)
    if not pid:
        return 0
    with _lock:
        process = _processes.get(pid)
    if process is None:
        return None if _pid_alive(pid) else 0
    return process_status(pid, process)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def submission_failure(handle: Handle, code: int) -> LaunchError:
    log_path = Path(handle["spark"]["dir"]) / "spark-submit.log"
    tail = file_tail(log_path)
    try:
        text = log_path.read_text(errors="replace")[-200_000:]
    except OSError:
        text = ""
    # A JVM's failure ends in a long stack trace: name its cause first.
    causes = [line.strip() for line in text.splitlines() if _CAUSE.search(line)]
    reason = f"{causes[0][:1000]}\n" if causes else ""
    return LaunchError(
        f"spark-submit of kernel pod {handle['namespace']}/{handle['pod']} failed (exit code {code}) before "
        f"the driver pod existed: {reason}log tail:\n{tail}"
    )


_CAUSE = re.compile(r"(Exception in thread|^Error: |^\S*(Exception|Error): )")


def stop_submission(handle: Handle) -> None:
    """Stop a spark-submit still running (blocking)."""
    pid = int(handle["spark"].get("submit_pid") or 0)
    if not pid:
        return
    with _lock:
        process = _processes.pop(pid, None)
    if process is not None:
        if process.poll() is None:
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
            process.wait(10)
    handle["spark"]["submit_pid"] = 0


def remove_executors(ref: ClusterRef, handle: Handle, timeout: float) -> None:
    """Delete the kernel's executor pods (the driver owns them; do not wait for the garbage collector)."""
    from ._names import kernel_id_label

    labels = {"component": EXECUTOR_COMPONENT}
    kernel_id = handle.get("kernel_id")
    if not kernel_id:
        return
    labels["kernel_id"] = kernel_id_label(kernel_id)
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    _kube.delete_pods(ref, handle["namespace"], selector)
    _kube.wait_gone(
        lambda: bool(_kube.list_pod_names(ref, handle["namespace"], selector)),
        timeout,
        f"Executor pods of {handle['namespace']}/{handle['pod']}",
    )


def clean_up_files(handle: Handle) -> None:
    shutil.rmtree(handle["spark"].get("dir") or "/nonexistent", ignore_errors=True)


async def poll(
    ref: ClusterRef, handle: Handle, status: _kube.PodStatus | None, launching: bool
) -> int | None:
    """The driver pod's status; before it exists, spark-submit's (a failed submission fails the launch
    at once, with its log)."""
    import asyncio

    from . import _pods

    if status is not None and not handle.get("uid") and status.uid:
        handle["uid"] = status.uid  # the driver pod Spark made: the handle grows with it
        handle["driver_pod"] = handle["pod"]
    if status is None and not handle.get("uid"):
        code = await asyncio.to_thread(submission_state, handle)
        if code is None:
            return None  # still submitting
        if code != 0:
            if launching:
                raise submission_failure(handle, code)
            return code
        if launching:
            return None  # submitted: the watch shows the driver pod on one of the next polls
    return await _pods.poll(ref, handle, status, launching)


def remove_kernel(
    ref: ClusterRef, handle: Handle, options: K8sOptions, restart: bool, force: bool, log: logging.Logger
) -> None:
    """Stop the submission, delete the driver pod (its executors, Service and ConfigMaps with it), wait
    until they are gone (blocking)."""
    from . import _pods

    stop_submission(handle)
    try:
        _pods.remove_kernel(ref, handle, options, restart, force, log)
        remove_executors(ref, handle, options.delete_timeout)
    finally:
        clean_up_files(handle)
