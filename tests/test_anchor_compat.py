"""Clear errors for Gateway Provisioners leftovers: its provisioner names in a kernelspec, and its
classes in the server config."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from traitlets.config import Config, Configurable

from gp_core import GenericRemoteProvisioner, InvalidOptionError, _anchor, _anchor_compat
from gp_core._anchor_venv import anchor_jupyter, anchor_venv
from gp_core.testing import kernel_env, kernel_manager

GROUP = "jupyter_client.kernel_provisioners"


def test_every_anchor_provisioner_name_is_registered() -> None:
    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for name in _anchor.PROVISIONERS:
        assert registered.get(name, "").startswith("gp_core._anchor_compat:"), name


@pytest.fixture(scope="module")
def anchor_docker_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("anchor")
    done = anchor_jupyter("docker-spec", "install", "--image-name=my/kernel:1", f"--prefix={prefix}")
    assert done.returncode == 0, done.stderr
    return prefix / "share" / "jupyter" / "kernels"


async def test_starting_an_anchor_kernelspec_says_how_to_convert_it(anchor_docker_spec: Path) -> None:
    """gp installed, gateway_provisioners not: the launch fails at once, naming the conversion."""
    assert _anchor_compat._anchor_class("gateway_provisioners.docker_swarm:DockerProvisioner") is None
    km = kernel_manager(anchor_docker_spec, "docker_python")
    with pytest.raises(InvalidOptionError) as caught:
        await km.start_kernel(env=kernel_env())
    message = str(caught.value)
    spec_dir = anchor_docker_spec / "docker_python"
    assert "'docker-provisioner' from Gateway Provisioners, which is not installed" in message
    assert f"gp migrate {spec_dir} --in-place" in message
    assert "backend 'docker'" in message and "gp-remote-provisioner" in message
    assert not km.has_kernel


@pytest.mark.parametrize("name", sorted(_anchor.PROVISIONERS))
def test_each_name_has_a_message(name: str) -> None:
    cls = next(ep for ep in entry_points(group=GROUP, name=name)).load()
    with pytest.raises(InvalidOptionError, match=name) as caught:
        cls(kernel_id="k", kernel_spec=None, parent=None)
    anchor = _anchor.PROVISIONERS[name]
    if anchor.backend:
        assert f"backend {anchor.backend!r}" in str(caught.value)
        assert "gp migrate" in str(caught.value)
    else:
        assert "no gp equivalent" in str(caught.value)


def test_with_gateway_provisioners_installed_its_own_provisioner_is_built(
    anchor_docker_spec: Path, tmp_path: Path
) -> None:
    """Whichever entry point jupyter_client picks for a duplicate name, the anchor's kernels keep working."""
    site = next((anchor_venv() / "lib").glob("python3*/site-packages"))
    for module in ("gateway_provisioners", "overrides", "pexpect", "ptyprocess"):
        (tmp_path / module).symlink_to(site / module)
    script = f"""
from jupyter_client.kernelspec import KernelSpecManager
from gp_core._anchor_compat import DockerProvisioner
spec = KernelSpecManager(kernel_dirs=[{str(anchor_docker_spec)!r}]).get_kernel_spec("docker_python")
provisioner = DockerProvisioner(kernel_id="k", kernel_spec=spec, parent=None, image_name="my/kernel:1")
print(type(provisioner).__module__, type(provisioner).__name__, provisioner.image_name)
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTEST_CURRENT_TEST": "x"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gateway_provisioners.docker_swarm", "DockerProvisioner", "my/kernel:1"]


# ------------------------------------------------------------------------------------------ server config


@pytest.fixture
def fresh_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_anchor_compat, "_reported", False)


def _provisioner(config: Config) -> GenericRemoteProvisioner:
    return GenericRemoteProvisioner(parent=Configurable(config=config), backend="local")


def test_anchor_config_is_reported_once_with_gp_names(
    fresh_report: None, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(
        {
            "DockerProvisioner": {"image_name": "my/kernel:1"},
            "DistributedProvisioner": {"remote_hosts": ["h1"]},
            "RemoteProvisionerConfigMixin": {"launch_timeout": 60},
            "ResponseManager": {"response_port": 1},
            "ServerApp": {"ip": "0.0.0.0"},
        }
    )
    with caplog.at_level(logging.WARNING):
        _provisioner(config)
        _provisioner(config)
    reports = [r for r in caplog.records if "Gateway Provisioners settings that gp ignores" in r.getMessage()]
    assert len(reports) == 1
    text = reports[0].getMessage()
    assert "c.DockerProvisioner.image_name: not read by gp; it is c.DockerOptions.image" in text
    assert "c.DistributedProvisioner.remote_hosts: not read by gp; it is c.SshOptions.remote_hosts" in text
    assert (
        "c.RemoteProvisionerConfigMixin.launch_timeout: not read by gp; it is c.GenericRemoteProvisioner.launch_timeout"
        in text
    )
    assert "c.ResponseManager.response_port: not read by gp" in text
    assert "ServerApp" not in text
    assert "gp migrate --config" in text


def test_a_config_without_anchor_classes_reports_nothing(
    fresh_report: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _provisioner(Config({"GenericRemoteProvisioner": {"launch_timeout": 9}}))
    assert not [r for r in caplog.records if "Gateway Provisioners" in r.getMessage()]


def test_the_report_names_the_file_setting_it(fresh_report: None, tmp_path: Path) -> None:
    """End to end: a jupyter_server_config.py with anchor settings, loaded as jupyter loads it."""
    from traitlets.config.loader import PyFileConfigLoader

    (tmp_path / "jupyter_server_config.py").write_text('c.DockerSwarmProvisioner.image_name = "x"\n')
    config = PyFileConfigLoader("jupyter_server_config.py", str(tmp_path)).load_config()
    notes = _anchor_compat.anchor_config_notes(config)
    assert notes == ["c.DockerSwarmProvisioner.image_name: not read by gp; it is c.DockerSwarmOptions.image"]


def test_the_anchor_tables_name_real_gp_options() -> None:
    """Every gp name the converter and the start-up report use exists in the installed backends."""
    from gp_core.plugins import get_backend, installed_backends

    core = set(GenericRemoteProvisioner.core_option_names())
    assert set(_anchor.CORE_TRAITS) <= core
    checked = 0
    for anchor in _anchor.PROVISIONERS.values():
        if anchor.backend is None or anchor.backend not in installed_backends():
            continue
        options = get_backend(anchor.backend).options_class
        assert options is not None
        if anchor.options_section is not None:
            assert options.__name__ == anchor.options_section
        for gp_option in _anchor.BACKEND_TRAITS[anchor.backend].values():
            assert gp_option in options.option_names(), (anchor.backend, gp_option)
            checked += 1
    assert checked >= 4  # docker, docker-swarm and ssh are installed here


def test_migration_guide_covers_every_anchor_name() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text()
    names = [
        *_anchor.PROVISIONERS,
        *(p.config_class for p in _anchor.PROVISIONERS.values()),
        *_anchor.SHARED_CONFIG_CLASSES,
        *(trait for traits in _anchor.BACKEND_TRAITS.values() for trait in traits),
        *(name for name in _anchor.ENV_CHANGES if name != "EG_*"),
    ]
    missing = sorted({name for name in names if f"`{name}`" not in guide and f"`c.{name}" not in guide})
    assert not missing, f"docs/migration.md does not mention: {missing}"
