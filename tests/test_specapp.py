"""``jupyter local-spec install``: the common installer options and the kernelspec it writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from traitlets import Unicode

from gp_core import BackendOptions, GenericRemoteProvisioner, InstallSpecApp, InvalidOptionError, hookimpl
from gp_core.plugins import register_backend, unregister_backend
from gp_core.specapp import LocalSpecApp
from gp_core.testing import NullBackend, execute, kernel_manager, start_kernel


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from gp_core.specapp import LocalSpecApp; LocalSpecApp.launch_instance()",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def test_install_writes_a_spec_selecting_the_backend(tmp_path):
    result = _install(
        "install",
        f"--prefix={tmp_path}",
        "--kernel-name=gp_local",
        "--display-name=Local via gp",
        "--authorized-users=alice",
        "--authorized-users=bob",
        "--port-range=40000..42000",
        "--launch-timeout=45",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share/jupyter/kernels/gp_local"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Local via gp"
    assert spec["interrupt_mode"] == "signal"
    assert spec["argv"][1] == "{resource_dir}/scripts/launch_ipykernel.py"
    assert {"{kernel_id}", "{response_address}", "{public_key}", "{port_range}"} <= set(spec["argv"])
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "gp-remote-provisioner",
        "config": {
            "backend": "local",
            "launch_timeout": 45.0,
            "authorized_users": ["alice", "bob"],
            "port_range": "40000..42000",
        },
    }
    assert (spec_dir / "scripts/launch_ipykernel.py").is_file()


def test_empty_user_lists_are_written_as_empty_lists(tmp_path):
    # "--unauthorized-users=" used to write [""] (a user named ""), and [] was dropped as the default.
    result = _install("install", f"--prefix={tmp_path}", "--unauthorized-users=", "--authorized-users=")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/local_python/kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config["unauthorized_users"] == [] and config["authorized_users"] == []


def test_user_lists_not_given_are_left_to_the_server(tmp_path):
    result = _install("install", f"--prefix={tmp_path}", "--unauthorized-users=bob", "--unauthorized-users= ")
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/local_python/kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config["unauthorized_users"] == ["bob"]
    assert "authorized_users" not in config


def test_existing_spec_needs_replace(tmp_path):
    assert _install("install", f"--prefix={tmp_path}").returncode == 0
    again = _install("install", f"--prefix={tmp_path}")
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--replace" in again.stderr
    assert _install("install", f"--prefix={tmp_path}", "--replace").returncode == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--port-range=1..2", "port_range"),
        ("--language=Julia", "not supported"),
        ("--ipykernel-subclass-name=json.JSONDecoder", "not a subclass of IPythonKernel"),
        ("--ipykernel-subclass-name=not a class", "dotted"),
        ("--kernel-name=../escape", "invalid"),
    ],
)
def test_bad_options_are_refused(tmp_path, option, message):
    result = _install("install", f"--prefix={tmp_path}", option)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "share").exists()


def test_no_subcommand_lists_install():
    result = _install()
    assert result.returncode == 1
    assert "install" in result.stdout + result.stderr


async def test_installed_spec_runs_under_jupyter_client(tmp_path):
    app = LocalSpecApp()
    app.initialize(["install", f"--prefix={tmp_path}", "--kernel-name=gp_local"])
    app.subapp.install()
    km = kernel_manager(tmp_path / "share/jupyter/kernels", "gp_local")
    await start_kernel(km)
    try:
        output, _reply = await execute(km, "print(40 + 2)")
        assert output == "42\n"
    finally:
        await km.shutdown_kernel()


class _AsyncSpecOptions(BackendOptions):
    flavour = Unicode("plain", config=True)


class _AsyncSpecBackend(NullBackend):
    """A backend whose install_spec is async and sets a backend option and a core one."""

    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return _AsyncSpecOptions

    @hookimpl
    async def install_spec(self, app: InstallSpecApp, kernel_spec: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        config = kernel_spec["metadata"]["kernel_provisioner"]["config"]
        config.update(flavour=app.flavour, poll_interval=0.25)
        kernel_spec["env"]["SPEC_FROM"] = "async hook"
        return kernel_spec


class _AsyncSpecApp(InstallSpecApp):
    backend_name = "undo-async-spec"
    flavour = Unicode("spicy", config=True)


@pytest.fixture
def async_spec_backend():
    register_backend("undo-async-spec", _AsyncSpecBackend())
    yield
    unregister_backend("undo-async-spec")


def _check_async_spec(spec: dict[str, Any]) -> None:
    assert spec["env"]["SPEC_FROM"] == "async hook"
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "backend": "undo-async-spec",
        "launch_timeout": 30.0,
        "flavour": "spicy",
        "poll_interval": 0.25,  # a core option: not taken for an unknown backend option
    }


def test_async_install_spec_runs_without_an_event_loop(tmp_path, async_spec_backend):
    _check_async_spec(_AsyncSpecApp().build_spec(tmp_path))


async def test_async_install_spec_runs_inside_a_running_event_loop(tmp_path, async_spec_backend):
    _check_async_spec(_AsyncSpecApp().build_spec(tmp_path))


def test_spec_with_an_unknown_option_lists_every_valid_one(tmp_path, async_spec_backend):
    class TypoApp(_AsyncSpecApp):
        def provisioner_config(self) -> dict[str, Any]:
            return {**super().provisioner_config(), "flavor": "typo"}

    with pytest.raises(InvalidOptionError) as info:
        TypoApp().build_spec(tmp_path)
    core = ", ".join(GenericRemoteProvisioner.core_option_names())
    assert str(info.value) == (
        "Unknown option(s) 'flavor' for gp backend 'undo-async-spec' (did you mean 'flavour'?); "
        f"valid options: {core} (core), flavour (undo-async-spec)"
    )


def test_install_time_environment_goes_into_kernel_json(tmp_path, monkeypatch):
    """As the anchor's installers do: GP_LAUNCH_TIMEOUT and GP_PORT_RANGE at install time are written."""
    monkeypatch.setenv("GP_LAUNCH_TIMEOUT", "75")
    monkeypatch.setenv("GP_PORT_RANGE", "40000..42000")
    assert _install("install", f"--prefix={tmp_path}", "--kernel-name=k").returncode == 0
    config = json.loads((tmp_path / "share/jupyter/kernels/k/kernel.json").read_text())["metadata"][
        "kernel_provisioner"
    ]["config"]
    assert config["launch_timeout"] == 75.0
    assert config["port_range"] == "40000..42000"
    # An explicit flag still wins over the environment.
    assert (
        _install(
            "install", f"--prefix={tmp_path}", "--kernel-name=k", "--replace", "--launch-timeout=5"
        ).returncode
        == 0
    )
    config = json.loads((tmp_path / "share/jupyter/kernels/k/kernel.json").read_text())["metadata"][
        "kernel_provisioner"
    ]["config"]
    assert config["launch_timeout"] == 5.0


def test_bad_install_time_environment_fails_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("GP_PORT_RANGE", "1..2")
    result = _install("install", f"--prefix={tmp_path}")
    assert result.returncode == 1
    assert "port_range '1..2'" in result.stderr
    assert not (tmp_path / "share").exists()


def test_single_port_form_means_any_port(tmp_path):
    """The anchor's N..N (range size 0) is "no restriction"; gp writes it as 0..0, which launchers take."""
    assert (
        _install("install", f"--prefix={tmp_path}", "--kernel-name=k", "--port-range=45000..45000").returncode
        == 0
    )
    config = json.loads((tmp_path / "share/jupyter/kernels/k/kernel.json").read_text())["metadata"][
        "kernel_provisioner"
    ]["config"]
    assert "port_range" not in config
    provisioner = GenericRemoteProvisioner(backend="local", port_range="45000..45000")
    assert provisioner.port_range == "0..0"
