"""The ssh backend's options: defaults, GP_* variables, validation, and what selecting it imports."""

from __future__ import annotations

import getpass
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from gp_core import InvalidOptionError, get_backend

ENV_VARS = (
    "GP_REMOTE_HOSTS",
    "GP_LOAD_BALANCING_ALGORITHM",
    "GP_REMOTE_USER",
    "GP_SSH_PORT",
    "GP_SSH_KEY_FILE",
    "GP_SSH_KNOWN_HOSTS",
    "GP_SSH_HOST_KEY_POLICY",
    "GP_SSH_CONNECT_TIMEOUT",
    "GP_SSH_COMMAND_TIMEOUT",
    "GP_KERNEL_LOG_DIR",
    "GP_SSH_KEEP_KERNEL_LOGS",
    "GP_SSH_UPLOAD_LAUNCHER",
    "GP_MIRROR_WORKING_DIRS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def options(**values: object):  # type: ignore[no-untyped-def]
    return get_backend("ssh").make_options(values)


def test_registered_under_ssh() -> None:
    backends = {ep.name: ep.value for ep in entry_points(group="gp_core.backends")}
    assert backends["ssh"] == "gp_ssh.hooks"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["jupyter-ssh-spec"] == "gp_ssh.specapp:SshSpecApp.launch_instance"


def test_defaults() -> None:
    assert options().to_dict() == {
        "remote_hosts": ["localhost"],
        "load_balancing_algorithm": "round-robin",
        "remote_user": getpass.getuser(),
        "ssh_port": 22,
        "ssh_key_file": "",
        "known_hosts_file": "",
        "host_key_policy": "reject",
        "connect_timeout": 10.0,
        "command_timeout": 20.0,
        "stop_timeout": 5.0,
        "kernel_log_dir": "/tmp",
        "keep_kernel_logs": False,
        "upload_launcher": "if-missing",
        "mirror_working_dirs": False,
        "impersonation_enabled": False,
        "allow_request_spark_opts": True,
        "gss_auth": False,
    }


def test_env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_REMOTE_HOSTS", "node1, node2,,10.0.0.3")
    monkeypatch.setenv("GP_LOAD_BALANCING_ALGORITHM", "least-connection")
    monkeypatch.setenv("GP_REMOTE_USER", "jovyan")
    monkeypatch.setenv("GP_SSH_PORT", "2222")
    monkeypatch.setenv("GP_SSH_KEY_FILE", "/keys/id")
    monkeypatch.setenv("GP_SSH_HOST_KEY_POLICY", "auto-add")
    monkeypatch.setenv("GP_KERNEL_LOG_DIR", "/var/log/kernels/")
    monkeypatch.setenv("GP_SSH_KEEP_KERNEL_LOGS", "false")
    monkeypatch.setenv("GP_MIRROR_WORKING_DIRS", "yes")
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "true")
    monkeypatch.setenv("GP_REMOTE_GSS_SSH", "1")
    values = options().to_dict()
    assert values["impersonation_enabled"] is True and values["gss_auth"] is True
    assert values["remote_hosts"] == ["node1", "node2", "10.0.0.3"]
    assert values["load_balancing_algorithm"] == "least-connection"
    assert values["remote_user"] == "jovyan"
    assert values["ssh_port"] == 2222
    assert values["ssh_key_file"] == "/keys/id"
    assert values["host_key_policy"] == "auto-add"
    assert values["kernel_log_dir"] == "/var/log/kernels"
    assert values["keep_kernel_logs"] is False  # "false" is False (the anchor's bool("false") was True)
    assert values["mirror_working_dirs"] is True


def test_kernel_json_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_REMOTE_HOSTS", "env-host,spec-host")
    monkeypatch.setenv("GP_SSH_PORT", "2222")
    values = options(remote_hosts=["spec-host"], ssh_port=22).to_dict()
    assert values["remote_hosts"] == ["spec-host"]
    assert values["ssh_port"] == 22


def test_kernel_json_cannot_add_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    # remote_hosts is an allow policy: a kernelspec cannot send kernels (and the server's SSH key) elsewhere.
    with pytest.raises(
        InvalidOptionError, match=r"'remote_hosts' .*\['localhost'\] \(from its default\): 'evil' not allowed"
    ):
        options(remote_hosts=["evil"])
    monkeypatch.setenv("GP_REMOTE_HOSTS", "node1,node2")
    assert options(remote_hosts=["node2"]).remote_hosts == ["node2"]
    with pytest.raises(InvalidOptionError, match=r"env GP_REMOTE_HOSTS='node1,node2'\): 'node3' not allowed"):
        options(remote_hosts=["node1,node3"])  # one entry, two hosts: checked after splitting


def test_kernel_json_may_only_make_the_host_key_policy_stricter(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidOptionError, match=r"'host_key_policy' .*'auto-add'.*may only lower"):
        options(host_key_policy="auto-add")
    monkeypatch.setenv("GP_SSH_HOST_KEY_POLICY", "auto-add")
    assert options(host_key_policy="warn").host_key_policy == "warn"
    assert options(host_key_policy="reject").host_key_policy == "reject"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GP_LOAD_BALANCING_ALGORITHM", "random", "load_balancing_algorithm"),
        ("GP_SSH_PORT", "ssh", "not an integer"),
        ("GP_SSH_PORT", "70000", "not a TCP port"),
        ("GP_SSH_HOST_KEY_POLICY", "trust-everyone", "host_key_policy"),
        ("GP_REMOTE_HOSTS", "-oProxyCommand=evil", "not a host name"),
        ("GP_REMOTE_HOSTS", " , ", "at least one host"),
        ("GP_KERNEL_LOG_DIR", "relative/dir", "absolute path"),
        ("GP_SSH_CONNECT_TIMEOUT", "0", "positive"),
        ("GP_SSH_KEEP_KERNEL_LOGS", "maybe", "not a boolean"),
    ],
)
def test_bad_env_values_are_refused_up_front(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidOptionError, match=message):
        options()


@pytest.mark.parametrize(
    "values",
    [
        {"remote_hosts": ["user@host"]},
        {"remote_hosts": ["host:22"]},
        {"remote_hosts": []},
        {"remote_user": "-oProxyCommand=x"},
        {"remote_user": "a b"},
        {"ssh_port": 0},
        {"upload_launcher": "sometimes"},
        {"stop_timeout": -1},
    ],
)
def test_bad_kernel_json_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(InvalidOptionError):
        options(**values)


def test_ipv6_literal_hosts_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_REMOTE_HOSTS", "::1,fe80::2")
    assert options().remote_hosts == ["::1", "fe80::2"]
    assert options(remote_hosts=["fe80::2"]).remote_hosts == ["fe80::2"]


def test_the_password_is_not_an_option() -> None:
    for name in ("password", "remote_password", "remote_pwd"):
        with pytest.raises(InvalidOptionError, match="Unknown option"):
            options(**{name: "secret"})


def test_selecting_ssh_imports_neither_docker_nor_kubernetes() -> None:
    code = (
        "import sys; from gp_core import get_backend; get_backend('ssh'); "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('docker', 'kubernetes', 'gp_docker', 'gp_k8s')]; "
        "assert 'paramiko' in sys.modules; print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
