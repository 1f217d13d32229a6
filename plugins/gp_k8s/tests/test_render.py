"""Rendering is pure and injection-proof: request values are data wherever a template puts them."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from gp_k8s._names import kernel_name
from gp_k8s._namespaces import plan
from gp_k8s._options import K8sOptions, parse_quantity
from gp_k8s._render import render
from traitlets.config import Config, Configurable

from gp_core import BackendError, InvalidOptionError

LOG = logging.getLogger("test")
KERNEL_ID = "2f0d6a44-8f5f-4bbc-bb7c-6a1c0b1f6a1e"
CMD = ["python3", "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py", "--kernel-id", KERNEL_ID]


@pytest.fixture(autouse=True)
def _no_gp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith(("GP_", "KERNEL_"))]:
        monkeypatch.delenv(name)


def options(server: dict[str, Any] | None = None, **values: Any) -> K8sOptions:
    """Options as the server configures them (``server``: c.K8sOptions.*) plus kernel.json ``values``.

    Without ``server``, ``values`` stand for the server's own settings (policies are the server's to set).
    """
    if server is None:
        return K8sOptions.from_config("k8s", {"image": "gp/kernel-py:test", **values}, policy=False)
    config = Config()
    for name, value in server.items():
        setattr(config.K8sOptions, name, value)
    return K8sOptions.from_config(
        "k8s", {"image": "gp/kernel-py:test", **values}, parent=Configurable(config=config)
    )


def rendered(env=None, request=None, resource_dir=None, server=None, **values):
    opts = options(server, **values)
    env = {"KERNEL_USERNAME": "alice", "KERNEL_ID": KERNEL_ID, **(env or {})}
    request = {**(request or {})}
    env.update(request)
    where = plan(KERNEL_ID, env, opts, request)
    namespace = {"name": where.name, "mode": where.mode, "service_account": where.service_account}
    return render(KERNEL_ID, CMD, env, opts, namespace, resource_dir, LOG, request)


def container_env(resources) -> dict[str, str]:
    return {item["name"]: item["value"] for item in resources["pod"]["spec"]["containers"][0]["env"]}


HOSTILE = [
    "x\nkind: Secret",
    "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}",
    "{{ 7 * 7 }}",
    "{% for x in range(3) %}boom{% endfor %}",
    '"; privileged: true; "',
    "x, runAsUser: 0}",
    "*alias",
    "!!python/object/apply:os.system ['id']",
    "\u2028line\u2029separators\x85",
    "a" * 5000,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_reach_the_pod_env_unchanged_and_change_nothing_else(value):
    plain = rendered()
    hostile = rendered(request={"KERNEL_EXTRA": value, "KERNEL_WHATEVER_USER_WANTS": value})
    assert container_env(hostile)["KERNEL_EXTRA"] == value
    assert container_env(hostile)["KERNEL_WHATEVER_USER_WANTS"] == value
    assert hostile["objects"] == []
    pod = hostile["pod"]
    assert pod["kind"] == "Pod"
    without_env = {k: v for k, v in pod["spec"]["containers"][0].items() if k != "env"}
    assert without_env == {k: v for k, v in plain["pod"]["spec"]["containers"][0].items() if k != "env"}
    assert pod["spec"]["securityContext"] == plain["pod"]["spec"]["securityContext"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_in_a_template_anywhere_stay_data(tmp_path: Path, value):
    # A careless template puts request values straight into keys, flow mappings and the middle of strings.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "kernel-pod.yaml.j2").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ kernel_pod_name }}\n"
        "  annotations: {note: x-{{ kernel_extra }}, other: {{ kernel_extra }}}\n"
        "  labels:\n    user-{{ kernel_extra }}: y\n"
        "spec:\n  containers:\n  - name: kernel\n    image: {{ kernel_image }}\n"
        "    command: {{ kernel_command }}\n    args: [--x={{ kernel_extra }}]\n"
    )
    resources = rendered(request={"KERNEL_EXTRA": value}, resource_dir=str(tmp_path))
    pod = resources["pod"]
    assert resources["objects"] == []
    assert pod["metadata"]["annotations"]["note"] == f"x-{value}"
    assert pod["metadata"]["annotations"]["other"] == value
    assert f"user-{value}" in pod["metadata"]["labels"]
    assert pod["spec"]["containers"][0]["args"] == [f"--x={value}"]
    assert pod["spec"]["containers"][0]["image"] == "gp/kernel-py:test"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "privileged" not in str(pod["spec"]["containers"][0]["securityContext"])


def test_every_kernel_value_reaches_the_env_without_a_template_edit(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "kernel-pod.yaml.j2").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: '{{ kernel_pod_name }}'}\n"
        "spec:\n  containers:\n  - name: kernel\n    image: {{ kernel_image }}\n"
        "    env: [{name: HOME, value: /tmp}, {name: RESPONSE_ADDRESS, value: evil:1}]\n"
    )
    env = rendered(
        request={"KERNEL_SPARK_OPTS": "--conf a=b", "KERNEL_FOO": "bar"}, resource_dir=str(tmp_path)
    )
    values = container_env(env)
    assert values["KERNEL_SPARK_OPTS"] == "--conf a=b" and values["KERNEL_FOO"] == "bar"
    assert values["HOME"] == "/tmp"  # the template's own entries stay
    assert "RESPONSE_ADDRESS" not in values or values["RESPONSE_ADDRESS"] != "evil:1"  # protocol: gp's


def test_the_template_cannot_escape_the_sandbox(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "kernel-pod.yaml.j2").write_text(
        "{{ kernel_command.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(BackendError, match="sandbox forbids|unsafe|failed to render"):
        rendered(resource_dir=str(tmp_path))


def test_only_allowed_kinds_and_namespaces(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    template = tmp_path / "scripts" / "kernel-pod.yaml.j2"
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: '{{ kernel_pod_name }}'}\nspec: {containers: [{name: kernel, image: x}]}\n"
    template.write_text(pod + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n")
    with pytest.raises(BackendError, match="kind 'Secret' refused"):
        rendered(resource_dir=str(tmp_path))
    resources = rendered(resource_dir=str(tmp_path), allowed_kinds=["Secret"])
    [secret] = resources["objects"]
    assert secret["metadata"]["labels"]["kernel_id"] == KERNEL_ID
    assert secret["metadata"]["namespace"] == "default"
    template.write_text(pod + "---\napiVersion: v1\nkind: ClusterRoleBinding\nmetadata: {name: s}\n")
    with pytest.raises(BackendError, match="ClusterRoleBinding"):
        rendered(resource_dir=str(tmp_path), allowed_kinds=["Secret"])
    template.write_text(pod.replace("metadata: {", "metadata: {namespace: kube-system, "))
    with pytest.raises(BackendError, match="kube-system"):
        rendered(resource_dir=str(tmp_path))
    with pytest.raises(InvalidOptionError, match="ClusterRole"):
        options(allowed_kinds=["ClusterRole"])


@pytest.mark.parametrize("uid", ["0", "00", " 0", "+0", "-0", "0\n"])
def test_uid_zero_in_any_spelling_is_refused(uid):
    with pytest.raises(BackendError, match="KERNEL_UID.*refused"):
        rendered(env={"KERNEL_UID": uid})


@pytest.mark.parametrize("uid", ["1e3", "0x10", "١٢٣", "", "99999999999"])
def test_non_numeric_uids_are_refused(uid):
    if uid == "":
        assert rendered(env={"KERNEL_UID": uid})["pod"]["spec"]["securityContext"]["runAsUser"] == 1000
        return
    with pytest.raises(BackendError, match="KERNEL_UID"):
        rendered(env={"KERNEL_UID": uid})


def test_restricted_pod_security_defaults():
    pod = rendered(env={"KERNEL_UID": "1234", "KERNEL_GID": "1234"})["pod"]
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1234 and spec["securityContext"]["runAsGroup"] == 1234
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = spec["containers"][0]["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert spec["automountServiceAccountToken"] is False  # shared mode, by default
    assert pod["metadata"]["labels"] == {"kernel_id": KERNEL_ID, "component": "kernel", "app": "gp"}


def test_a_privileged_template_is_refused(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "kernel-pod.yaml.j2").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: '{{ kernel_pod_name }}'}\n"
        "spec: {containers: [{name: kernel, image: x, securityContext: {privileged: true}}]}\n"
    )
    with pytest.raises(BackendError, match="privileges"):
        rendered(resource_dir=str(tmp_path))


@pytest.mark.parametrize(
    "username",
    [
        "alice",
        "Alice.Smith",
        "dr. ünïcode",
        "李小龙",
        "x" * 300,
        "-._-",
        "a" * 62 + "é",
        "../../etc",
        "UPPER_case",
    ],
)
def test_names_are_dns_labels_unique_per_kernel(username):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    name = kernel_name(username, first)
    assert len(name) <= 63 and name == name.lower()
    assert __import__("re").fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert name.endswith(first) and kernel_name(username, second) != name
    pod = rendered(env={"KERNEL_USERNAME": username})["pod"]
    assert pod["metadata"]["annotations"]["gp/kernel-username"] == username


def test_odd_kernel_ids_still_give_unique_names():
    names = {kernel_name("bob", kernel_id) for kernel_id in ("A.B", "a-b", "a_b", "x" * 80, "x" * 81)}
    assert len(names) == 5 and all(len(n) <= 63 for n in names)


def test_resources_defaults_and_caps():
    resources = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    caps = {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    pod = rendered(resources=resources, max_resources=caps)["pod"]
    assert pod["spec"]["containers"][0]["resources"] == resources
    asked = rendered(
        request={"KERNEL_CPUS": "1500m", "KERNEL_MEMORY_LIMIT": "2Gi", "KERNEL_GPUS_LIMIT": "1"},
        resources=resources,
        max_resources=caps,
    )["pod"]["spec"]["containers"][0]["resources"]
    assert asked == {
        "requests": {"cpu": "1500m", "memory": "256Mi"},
        "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    with pytest.raises(BackendError, match="at most 2 of cpu"):
        rendered(request={"KERNEL_CPUS": "3"}, max_resources=caps)
    with pytest.raises(BackendError, match="does not let requests choose memory"):
        rendered(request={"KERNEL_MEMORY": "1Gi"})
    with pytest.raises(BackendError, match="not a Kubernetes quantity"):
        rendered(request={"KERNEL_CPUS": "1; rm -rf /"}, max_resources=caps)
    assert parse_quantity("1.5Gi", "x") == 1.5 * 2**30 and parse_quantity("500m", "x") == 0.5


def test_image_requests_need_an_allow_list():
    with pytest.raises(BackendError, match="does not let requests choose the image"):
        rendered(request={"KERNEL_IMAGE": "evil/image:latest"})
    pod = rendered(request={"KERNEL_IMAGE": "gp/kernel-r:1"}, allowed_images=["gp/kernel-*"])["pod"]
    assert pod["spec"]["containers"][0]["image"] == "gp/kernel-r:1"
    with pytest.raises(BackendError, match="not an image reference"):
        rendered(request={"KERNEL_IMAGE": "gp/kernel-\nx"}, allowed_images=["gp/kernel-*"])


def test_volumes_are_checked_against_the_allowed_types():
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": "team-data"}}
    mount = {"name": "data", "mountPath": "/data"}
    pod = rendered(volumes=[volume], volume_mounts=[mount], allowed_claims=["team-*"])["pod"]
    assert pod["spec"]["volumes"] == [volume] and pod["spec"]["containers"][0]["volumeMounts"] == [mount]
    with pytest.raises(BackendError, match="claim 'other' refused"):
        rendered(
            volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "other"}}],
            allowed_claims=["team-*"],
        )
    host = {"name": "root", "hostPath": {"path": "/"}}
    with pytest.raises(BackendError, match="hostPath"):
        rendered(volumes=[host])
    assert rendered(volumes=[host], allow_host_path=True)["pod"]["spec"]["volumes"] == [host]


def test_options_accepted_by_the_render():
    pod = rendered(
        node_selector={"kubernetes.io/os": "linux"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priority_class_name="kernels",
        image_pull_secrets=["registry-cred"],
        extra_labels={"team": "data"},
        extra_annotations={"sidecar.istio.io/inject": "false"},
        image_pull_policy="Always",
    )["pod"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "gpu" and spec["priorityClassName"] == "kernels"
    assert spec["imagePullSecrets"] == [{"name": "registry-cred"}]
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    with pytest.raises(InvalidOptionError, match="extra_labels"):
        options(extra_labels={"bad key!": "x"})


def test_env_defaults_use_the_anchor_names(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GP_NAMESPACE", "kernels")
    monkeypatch.setenv("GP_SHARED_NAMESPACE", "false")
    monkeypatch.setenv("GP_KERNEL_CLUSTER_ROLE", "edit")
    monkeypatch.setenv("GP_IMAGE_NAME", "img:1")
    opts = K8sOptions.from_config("k8s", {})
    assert (opts.namespace, opts.shared_namespace, opts.kernel_cluster_role, opts.image) == (
        "kernels",
        False,
        "edit",
        "img:1",
    )
    monkeypatch.setenv("GP_NAMESPACE", "Not A Namespace")
    with pytest.raises(InvalidOptionError, match="GP_NAMESPACE"):
        K8sOptions.from_config("k8s", {})


def test_importing_the_backend_does_not_decide_the_cluster_configuration(tmp_path: Path):
    # In a fresh interpreter (this one's modules are shared with the other tests): no cluster, no kubeconfig,
    # and importing and loading the backend still works; nothing is configured until a kernel starts.
    import subprocess
    import sys

    code = (
        "from gp_core import get_backend; backend = get_backend('k8s'); "
        "import sys; print('kubernetes' in sys.modules, backend.options_class.__name__)"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "K8sOptions"]  # the kubernetes client is not even imported


def test_kernel_json_cannot_take_a_prohibited_id_off_the_servers_list():
    opts = options({}, prohibited_uids=["5"], prohibited_gids=[])
    assert opts.prohibited_uids == ["0", "5"] and opts.prohibited_gids == ["0"]
    with pytest.raises(BackendError, match="KERNEL_UID='0' refused"):
        rendered(env={"KERNEL_UID": "0"}, server={"run_as_non_root": False}, prohibited_uids=[])
