"""``jupyter k8s-spec install``: golden kernel.json and pod template; bad input writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from gp_k8s._render import DEFAULT_TEMPLATE

from gp_core.launcher import PLACEHOLDER_ARGS

IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"


@pytest.fixture(autouse=True)
def _no_gp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("GP_")]:
        monkeypatch.delenv(name)


def k8s_spec(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from gp_k8s.specapp import K8sSpecApp; K8sSpecApp.launch_instance()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_console_script_and_backend_are_registered():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["jupyter-k8s-spec"] == "gp_k8s.specapp:K8sSpecApp.launch_instance"
    backends = {ep.name: ep.value for ep in entry_points(group="gp_core.backends")}
    assert backends["k8s"] == "gp_k8s.hooks"


def test_k8s_spec_install_golden(tmp_path):
    result = k8s_spec(
        "install",
        f"--prefix={tmp_path}",
        "--image-name=site/kernel-py:1.2",
        "--executor-image-name=site/spark-executor:1.2",
        "--namespace=kernels",
        "--image-pull-policy=Always",
        "--display-name=Python on k8s",
        "--authorized-users=alice",
        "--port-range=40000..42000",
        "--launch-timeout=45",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/k8s_python"
    assert sorted(str(p.relative_to(spec_dir)) for p in spec_dir.rglob("*")) == [
        "kernel.json",
        "scripts",
        "scripts/kernel-pod.yaml.j2",
    ]
    assert (spec_dir / "scripts/kernel-pod.yaml.j2").read_text() == DEFAULT_TEMPLATE.read_text()
    assert json.loads((spec_dir / "kernel.json").read_text()) == {
        "argv": [
            "python3",
            IMAGE_LAUNCHER,
            *PLACEHOLDER_ARGS,
            "--kernel-class-name",
            "ipykernel.ipkernel.IPythonKernel",
        ],
        "display_name": "Python on k8s",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": True,
            "supported_encryption": ["curve"],  # gp's launcher can encrypt with CurveZMQ
            "kernel_provisioner": {
                "provisioner_name": "gp-remote-provisioner",
                "config": {
                    "backend": "k8s",
                    "launch_timeout": 45.0,
                    "authorized_users": ["alice"],
                    "port_range": "40000..42000",
                    "image": "site/kernel-py:1.2",
                    "executor_image": "site/spark-executor:1.2",
                    "namespace": "kernels",
                    "image_pull_policy": "Always",
                },
            },
        },
    }


def test_k8s_spec_defaults(tmp_path, monkeypatch):
    result = k8s_spec("install", f"--prefix={tmp_path}", "--kernel-name=noimage")
    assert result.returncode == 0, result.stderr
    assert "GP_IMAGE_NAME" in result.stderr
    monkeypatch.setenv("GP_IMAGE_NAME", "env/kernel:3")
    result = k8s_spec("install", f"--prefix={tmp_path}", "--host-network")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/k8s_python/kernel.json").read_text())
    assert spec["display_name"] == "Python on Kubernetes (gp)"
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "backend": "k8s",
        "launch_timeout": 30.0,
        "image": "env/kernel:3",
        "host_network": True,
    }


def test_k8s_spec_refuses_bad_input_and_writes_nothing(tmp_path):
    result = k8s_spec("install", f"--prefix={tmp_path}", "--namespace=Not_A_Namespace")
    assert result.returncode != 0 and "namespace 'Not_A_Namespace' is not a DNS-1123 label" in result.stderr
    result = k8s_spec("install", f"--prefix={tmp_path}", "--image-pull-policy=Sometimes")
    assert result.returncode != 0 and "image_pull_policy" in result.stderr
    assert not (tmp_path / "share").exists()


@pytest.mark.k8s
async def test_an_installed_spec_runs_a_kernel_with_its_own_template(tmp_path, monkeypatch, cluster):
    from gp_core.testing import execute, kernel_manager, start_kernel

    from .conftest import IMAGE, image_present

    assert image_present()
    result = k8s_spec(
        "install",
        f"--prefix={tmp_path}",
        f"--image-name={IMAGE}",
        "--host-network",
        "--image-pull-policy=Never",
    )
    assert result.returncode == 0, result.stderr
    kernels_dir = tmp_path / "share/jupyter/kernels"
    template = kernels_dir / "k8s_python/scripts/kernel-pod.yaml.j2"
    template.write_text(
        template.read_text().replace(
            "  annotations: {{ kernel_annotations }}", "  annotations: {edited-by: operator}"
        )
    )
    monkeypatch.setenv("GP_KUBECONFIG", cluster.kubeconfig)
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_RESPONSE_PORT", "0")
    km = kernel_manager(kernels_dir, "k8s_python")
    await start_kernel(km)
    try:
        [pod] = cluster.pods(f"kernel_id={km.kernel_id}")
        assert pod.metadata.annotations["edited-by"] == "operator"
        output, _ = await execute(km, "print('from the installed spec')")
        assert output.strip() == "from the installed spec"
    finally:
        await km.shutdown_kernel(now=True)
    assert cluster.pods(f"kernel_id={km.kernel_id}") == []


def test_k8s_spec_install_spark(tmp_path):
    result = k8s_spec(
        "install",
        f"--prefix={tmp_path}",
        "--spark",
        "--image-name=site/kernel-spark-py:1",
        "--spark-home=/opt/spark",
        "--spark-master=k8s://https://127.0.0.1:16443",
        "--spark-init-mode=eager",
        "--extra-spark-opts=--conf spark.executor.instances=2",
        "--service-account-name=spark",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/k8s_python_spark"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == [
        "/opt/spark/bin/spark-submit", "--master", "k8s://https://127.0.0.1:16443", "--deploy-mode", "cluster",
        f"local://{IMAGE_LAUNCHER}", *PLACEHOLDER_ARGS, "--kernel-class-name", "ipykernel.ipkernel.IPythonKernel",
        "--spark-context-initialization-mode", "eager", "--cluster-type", "spark",
    ]  # fmt: skip
    assert spec["env"] == {"SPARK_HOME": "/opt/spark", "SPARK_OPTS": "--conf spark.executor.instances=2"}
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config["spark"] is True and config["service_account_name"] == "spark"
    assert (spec_dir / "scripts/kernel-pod.yaml.j2").read_text() == DEFAULT_TEMPLATE.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spark-master=yarn"], "spark-master"),
        (["--spark-master=k8s://https://127.0.0.1:1", "--extra-spark-opts=--conf 'x"], "cannot be split"),
    ],
)
def test_k8s_spec_install_spark_refuses_bad_input(tmp_path, args, message):
    result = k8s_spec("install", f"--prefix={tmp_path}", "--spark", "--image-name=i:1", *args)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "share/jupyter/kernels/k8s_python_spark").exists()
