"""``gp migrate`` on kernelspecs written by the real gateway_provisioners 0.5.0 installers, and on server
config files holding its documented options; the ``gp`` command's registry, help and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from gp_core import _anchor
from gp_core._anchor_venv import anchor_jupyter
from gp_core.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, commands, main, register_command
from gp_core.migrate import policy_requirements, validate_kernelspec
from gp_core.plugins import get_backend, installed_backends

#: (kernel name, the anchor installer's arguments)
ANCHOR_SPECS = [
    ("docker_python", ["docker-spec", "install", "--image-name=my/kernel:1"]),
    ("swarm_python", ["docker-spec", "install", "--swarm", "--image-name=my/kernel:1", "--port-range=40000..41000"]),
    ("ssh_python", ["ssh-spec", "install", "--remote-hosts=h1", "--remote-hosts=h2", "--authorized-users=alice",
                    "--launch-timeout=60"]),
    ("ssh_spark", ["ssh-spec", "install", "--spark", "--spark-master=spark://m:7077"]),
    ("k8s_python", ["k8s-spec", "install"]),
    ("k8s_spark", ["k8s-spec", "install", "--spark"]),
    ("k8s_crd", ["k8s-spec", "install", "--spark", "--crd"]),
    ("yarn_spark", ["yarn-spec", "install"]),
    ("yarn_dask", ["yarn-spec", "install", "--dask"]),
    ("yarn_endpoint", ["yarn-spec", "install", "--yarn-endpoint=http://rm:8088/ws/v1/cluster"]),
]  # fmt: skip
EXPECTED_BACKEND = {
    "docker_python": "docker",
    "swarm_python": "docker-swarm",
    "ssh_python": "ssh",
    "ssh_spark": "ssh",
    "k8s_python": "k8s",
    "k8s_spark": "k8s",
    "k8s_crd": "spark-operator",
    "yarn_spark": "yarn",
    "yarn_dask": "yarn",
    "yarn_endpoint": "yarn",
}


@pytest.fixture(scope="module")
def anchor_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every installer variant of gateway_provisioners 0.5.0, run from its own venv into one prefix."""
    prefix = tmp_path_factory.mktemp("anchor")
    for name, args in ANCHOR_SPECS:
        done = anchor_jupyter(*args, f"--kernel-name={name}", f"--prefix={prefix}")
        assert done.returncode == 0, done.stderr
    kernels = prefix / "share" / "jupyter" / "kernels"
    assert sorted(p.name for p in kernels.iterdir()) == sorted(name for name, _ in ANCHOR_SPECS)
    return kernels


def gp(*args: str) -> tuple[int, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gp_core.cli", *args], capture_output=True, text=True, env=_clean_env()
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GP_")} | {"GP_RESPONSE_IP": "127.0.0.1"}


def test_every_anchor_installer_variant_converts(anchor_kernels: Path, tmp_path: Path) -> None:
    code, report = gp("migrate", str(anchor_kernels), "--output", str(tmp_path), "--json")
    assert code == EXIT_OK, report
    results = {Path(spec["source"]).name: spec for spec in report["kernelspecs"]}
    assert set(results) == set(EXPECTED_BACKEND)
    installed = set(installed_backends())
    for name, spec in results.items():
        assert spec["status"] == "converted", spec
        assert spec["backend"] == EXPECTED_BACKEND[name]
        written = json.loads((tmp_path / name / "kernel.json").read_text())
        provisioner = written["metadata"]["kernel_provisioner"]
        assert provisioner["provisioner_name"] == "gp-remote-provisioner"
        assert provisioner["config"]["backend"] == EXPECTED_BACKEND[name]
        assert "{transport_encryption}" not in written["argv"]
        assert not any("${" in arg for arg in written["argv"]), written[
            "argv"
        ]  # the anchor's template left-overs
        if spec["backend"] in installed:
            # The converted spec passes gp's option validation: every key known, every value valid.
            assert spec["validated"], spec
            # ... given a server that allows what the spec's policy values name (gp's floor).
            validate_kernelspec(written, tmp_path / name, Config(policy_requirements(written)))
            backend_keys = set(provisioner["config"]) - set(_core_options())
            assert backend_keys <= set(get_backend(spec["backend"]).options_class.option_names())
        else:
            assert not spec["validated"]
            assert any("not installed" in note["detail"] for note in spec["not_carried"]), spec
    docker = json.loads((tmp_path / "docker_python" / "kernel.json").read_text())
    assert docker["argv"][:2] == ["python3", _anchor.GP_IMAGE_LAUNCHER]
    assert docker["metadata"]["kernel_provisioner"]["config"] == {
        "backend": "docker",
        "image": "my/kernel:1",
        "launch_timeout": 30.0,
    }
    swarm = json.loads((tmp_path / "swarm_python" / "kernel.json").read_text())["metadata"][
        "kernel_provisioner"
    ]
    assert swarm["config"]["port_range"] == "40000..41000"
    ssh = json.loads((tmp_path / "ssh_python" / "kernel.json").read_text())["metadata"]["kernel_provisioner"]
    assert ssh["config"] == {
        "backend": "ssh",
        "authorized_users": ["alice"],
        "launch_timeout": 60.0,
        "remote_hosts": ["h1", "h2"],
    }
    assert (tmp_path / "ssh_python" / "scripts" / "launch_ipykernel.py").read_bytes() == _gp_launcher()
    spark_env = json.loads((tmp_path / "ssh_spark" / "kernel.json").read_text())["env"]
    assert spark_env["PYSPARK_SUBMIT_ARGS"].startswith("--master spark://m:7077 --deploy-mode client")
    # What the user must rebuild: every image-based kernel names its image.
    assert "my/kernel:1" in results["docker_python"]["rebuild"][0]["what"]
    assert "image-bootstrap install" in results["docker_python"]["rebuild"][0]["detail"]
    assert any("transport" in n["what"] for n in results["docker_python"]["not_carried"])
    assert results["docker_python"]["equivalent_command"].startswith("jupyter docker-spec install")
    assert any("--yarn-endpoint bug" in n["detail"] for n in results["yarn_endpoint"]["changed"])
    # The anchor took any per-kernel host list; gp's server must allow the hosts: the report says so.
    (needed,) = results["ssh_python"]["server_config"]
    assert needed["what"] == "c.SshOptions.remote_hosts" and needed["detail"].startswith(
        "must allow h1, h2, localhost"
    )


def _core_options() -> list[str]:
    from gp_core import GenericRemoteProvisioner

    return GenericRemoteProvisioner.core_option_names()


def _gp_launcher() -> bytes:
    from gp_core.launcher import LAUNCHER_PATH

    return LAUNCHER_PATH.read_bytes()


def test_converted_specs_load_through_jupyter_client(
    anchor_kernels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_client builds gp's provisioner from each converted spec of an installed backend (on a server
    allowing the ssh spec's hosts, as the report asks)."""
    monkeypatch.setenv("GP_REMOTE_HOSTS", "h1,h2")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    assert gp("migrate", str(anchor_kernels), "--output", str(tmp_path), "--json")[0] == EXIT_OK
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)])
    built = 0
    for name, backend in EXPECTED_BACKEND.items():
        if backend not in installed_backends():
            continue
        spec = ksm.get_kernel_spec(name)
        provisioner = KernelProvisionerFactory.instance().create_provisioner_instance("k", spec, parent=None)
        assert type(provisioner).__name__ == "GenericRemoteProvisioner"
        assert provisioner.backend == backend
        built += 1
    assert built >= 4  # docker, docker-swarm and both ssh specs


def test_dry_run_writes_nothing_and_in_place_keeps_a_backup(anchor_kernels: Path, tmp_path: Path) -> None:
    import shutil

    spec_dir = tmp_path / "docker_python"
    shutil.copytree(anchor_kernels / "docker_python", spec_dir)
    original = (spec_dir / "kernel.json").read_text()
    code, report = gp("migrate", str(spec_dir), "--dry-run", "--json")
    assert code == EXIT_OK and report["kernelspecs"][0]["status"] == "converted"
    assert (spec_dir / "kernel.json").read_text() == original
    code, _ = gp("migrate", str(spec_dir), "--in-place", "--json")
    assert code == EXIT_OK
    assert (spec_dir / "kernel.json.gateway-provisioners").read_text() == original
    assert (
        json.loads((spec_dir / "kernel.json").read_text())["metadata"]["kernel_provisioner"]["config"][
            "backend"
        ]
        == "docker"
    )
    assert not (spec_dir / "scripts").exists()  # the anchor's server-side launch script is gone
    code, report = gp("migrate", str(spec_dir), "--in-place", "--json")
    assert code == EXIT_OK and report["kernelspecs"][0]["status"] == "skipped"  # already gp


def test_existing_output_needs_replace(anchor_kernels: Path, tmp_path: Path) -> None:
    assert (
        gp("migrate", str(anchor_kernels / "docker_python"), "--output", str(tmp_path), "--json")[0]
        == EXIT_OK
    )
    code, report = gp("migrate", str(anchor_kernels / "docker_python"), "--output", str(tmp_path), "--json")
    assert code == EXIT_FAILED and "--replace" in report["kernelspecs"][0]["error"]
    code, _ = gp("migrate", str(anchor_kernels / "docker_python"), "--output", str(tmp_path), "--replace")
    assert code == EXIT_OK


def test_what_cannot_be_converted_fails_with_the_reason(tmp_path: Path) -> None:
    spec = tmp_path / "r_kernel"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["Rscript", "launch_IRkernel.R"], "language": "R", "display_name": "R",
        "metadata": {"kernel_provisioner": {"provisioner_name": "docker-provisioner", "config": {}}},
    }))  # fmt: skip
    code, report = gp("migrate", str(spec), "--dry-run", "--json")
    assert code == EXIT_FAILED
    assert "Python launcher only" in report["kernelspecs"][0]["error"]


# ---------------------------------------------------------------------------------------- server config

ANCHOR_CONFIG_PY = """\
import os
c = get_config()  # noqa: F821
c.ServerApp.ip = "0.0.0.0"
c.RemoteProvisionerConfigMixin.launch_timeout = 60
c.RemoteProvisionerConfigMixin.authorized_users = {"bob", "alice"}
c.RemoteProvisionerConfigMixin.unauthorized_users = {"root"}
c.RemoteProvisionerConfigMixin.port_range = "40000..40000"
c.DockerProvisioner.image_name = os.environ.get("KIMG", "my/kernel:2")
c.DockerSwarmProvisioner.image_name = "my/swarm-kernel:2"
c.DistributedProvisioner.remote_hosts = ["h1",
    "h2"]
c.DistributedProvisioner.load_balancing_algorithm = "least-connection"
c.KubernetesProvisioner.executor_image_name = "x"
c.ResponseManager.response_port = 9999
if os.environ.get("YARN"):
    c.YarnProvisioner.yarn_endpoint = "http://rm:8088/ws/v1/cluster"
"""


def test_python_config_is_converted_without_running_it(tmp_path: Path) -> None:
    source = tmp_path / "jupyter_server_config.py"
    source.write_text(ANCHOR_CONFIG_PY + 'raise SystemExit("the file was executed")\n')
    code, report = gp("migrate", "--config", str(source), "--dry-run", "--json")
    assert code == EXIT_OK, report
    changed = {note["what"]: note["detail"] for note in report["config"]["changed"]}
    assert changed["c.DockerProvisioner.image_name"].startswith("is now c.DockerOptions.image")
    assert changed["c.DockerSwarmProvisioner.image_name"] == "is now c.DockerSwarmOptions.image"
    assert changed["c.DistributedProvisioner.remote_hosts"] == "is now c.SshOptions.remote_hosts"
    assert (
        changed["c.RemoteProvisionerConfigMixin.launch_timeout"]
        == "is now c.GenericRemoteProvisioner.launch_timeout"
    )
    lost = {note["what"]: note["detail"] for note in report["config"]["not_carried"]}
    assert "ResponseManager never read server config" in lost["c.ResponseManager.response_port"]
    assert any(what.startswith("line 16: c.YarnProvisioner") for what in lost)  # inside an if: by hand
    assert "c.KubernetesProvisioner.executor_image_name" in lost or "k8s" in installed_backends()


def test_converted_python_config_loads_into_gp(tmp_path: Path) -> None:
    from traitlets.config import Configurable
    from traitlets.config.loader import PyFileConfigLoader

    from gp_core import GenericRemoteProvisioner

    source = tmp_path / "jupyter_server_config.py"
    source.write_text(ANCHOR_CONFIG_PY)
    code, report = gp("migrate", "--config", str(source), "--output", str(tmp_path), "--json")
    assert code == EXIT_OK, report
    converted = tmp_path / "jupyter_server_config.gp.py"
    assert report["config"]["output"] == str(converted)
    config = PyFileConfigLoader(converted.name, str(tmp_path)).load_config()
    assert "DockerProvisioner" not in config and "DistributedProvisioner" not in config
    assert config.ServerApp.ip == "0.0.0.0"  # everything else is untouched
    parent = Configurable(config=config)
    provisioner = GenericRemoteProvisioner(parent=parent, backend="ssh")
    assert provisioner.launch_timeout == 60
    assert provisioner.authorized_users == ["alice", "bob"]
    assert provisioner.port_range == "0..0"
    assert provisioner.options.remote_hosts == ["h1", "h2"]
    assert provisioner.options.load_balancing_algorithm == "least-connection"
    docker = get_backend("docker").make_options({}, parent=parent)
    assert docker.image == "my/kernel:2"
    swarm = get_backend("docker-swarm").make_options({}, parent=parent)
    assert swarm.image == "my/swarm-kernel:2"


def test_json_config_is_converted(tmp_path: Path) -> None:
    source = tmp_path / "jupyter_server_config.json"
    source.write_text(json.dumps({
        "ServerApp": {"ip": "0.0.0.0"},
        "DockerProvisioner": {"image_name": "my/kernel:3", "launch_timeout": 45},
        "DistributedProvisioner": {"remote_hosts": ["h3"]},
    }))  # fmt: skip
    code, report = gp("migrate", "--config", str(source), "--in-place", "--json")
    assert code == EXIT_OK, report
    data = json.loads(source.read_text())
    assert data == {
        "ServerApp": {"ip": "0.0.0.0"},
        "DockerOptions": {"image": "my/kernel:3"},
        "GenericRemoteProvisioner": {"launch_timeout": 45},
        "SshOptions": {"remote_hosts": ["h3"]},
    }
    assert json.loads((tmp_path / "jupyter_server_config.json.gateway-provisioners").read_text())[
        "DockerProvisioner"
    ]


def test_an_invalid_value_fails_the_config_conversion(tmp_path: Path) -> None:
    source = tmp_path / "jupyter_server_config.py"
    source.write_text('c.DistributedProvisioner.remote_hosts = ["-oProxyCommand=x"]\n')
    code, report = gp("migrate", "--config", str(source), "--output", str(tmp_path), "--json")
    assert code == EXIT_FAILED
    assert "-oProxyCommand=x" in report["config"]["error"]
    assert not (tmp_path / "jupyter_server_config.gp.py").exists()


def test_conflicting_per_provisioner_core_values_are_reported(tmp_path: Path) -> None:
    source = tmp_path / "c.py"
    source.write_text(
        "c.DockerProvisioner.launch_timeout = 60\nc.KubernetesProvisioner.launch_timeout = 120\n"
    )
    code, report = gp("migrate", "--config", str(source), "--dry-run", "--json")
    assert code == EXIT_OK
    (lost,) = report["config"]["not_carried"]
    assert "set it per kernel" in lost["detail"]


# ---------------------------------------------------------------------------------------- the gp command


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in ("migrate", "reference", "run"):
        assert name in out
    assert main(["migrate", "--help"]) == EXIT_OK
    assert "--in-place" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["no-such-command"]) == EXIT_USAGE
    assert main(["migrate", "somewhere"]) == EXIT_USAGE
    assert "--output DIR, --in-place or --dry-run" in capsys.readouterr().out


def test_a_registered_subcommand_is_dispatched(capsys: pytest.CaptureFixture[str]) -> None:
    def run(args: Any) -> tuple[int, Any]:
        return 3, {"echo": args.word}

    register_command(
        Command("echo-test", "echo", lambda p: p.add_argument("word"), run, render=lambda r: r["echo"])
    )
    try:
        assert "echo-test" in commands()
        assert main(["echo-test", "hi"]) == 3
        assert capsys.readouterr().out == "hi\n"
        assert main(["echo-test", "hi", "--json"]) == 3
        assert json.loads(capsys.readouterr().out) == {"echo": "hi"}
    finally:
        from gp_core import cli

        cli._COMMANDS.pop("echo-test")


def test_gp_run_starts_a_local_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gp_core", "--code", "print(6 * 7)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "42" in done.stdout and "alive: False" in done.stdout
    code, result = gp("run", "--code", "print(6 * 7)", "--json")
    assert code == EXIT_OK, result
    assert result["output"] == "42\n" and result["alive_after_shutdown"] is False


def _anchor_config_traits() -> dict[str, list[str]]:
    """Every ``config=True`` trait each anchor class declares, read from gateway_provisioners' source."""
    import ast

    from gp_core._anchor_venv import anchor_venv

    package = next((anchor_venv() / "lib").glob("python3*/site-packages")) / "gateway_provisioners"
    declared: dict[str, list[str]] = {}
    for source in package.glob("*.py"):
        for node in ast.parse(source.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and isinstance(statement.value, ast.Call)
                    and any(
                        k.arg == "config" and getattr(k.value, "value", None) is True
                        for k in statement.value.keywords
                    )
                ):
                    declared.setdefault(node.name, []).extend(
                        t.id for t in statement.targets if isinstance(t, ast.Name)
                    )
    return declared


def test_every_documented_anchor_config_option_has_a_gp_name_or_a_reason() -> None:
    """Each trait of each anchor class, as the anchor declares them (inherited ones included)."""
    from gp_core import GenericRemoteProvisioner
    from gp_core.migrate import ConfigItem, Note, map_config_item

    declared = _anchor_config_traits()
    mixin = declared["RemoteProvisionerConfigMixin"]
    container = declared["ContainerProvisionerBase"]
    assert set(mixin) == set(_anchor.CORE_TRAITS) and set(container) == {"image_name", "executor_image_name"}
    inherited = {
        "RemoteProvisionerConfigMixin": mixin,
        "ContainerProvisionerBase": mixin + container,
        "DockerProvisioner": mixin + container,
        "DockerSwarmProvisioner": mixin + container,
        "KubernetesProvisioner": mixin + container,
        "CustomResourceProvisioner": mixin + container,
        "SparkOperatorProvisioner": mixin + container,
        "DistributedProvisioner": mixin + declared["DistributedProvisioner"],
        "YarnProvisioner": mixin + declared["YarnProvisioner"],
    }
    sections = {"GenericRemoteProvisioner": GenericRemoteProvisioner}
    for name in installed_backends():
        options = (
            get_backend(name).options_class if name in ("docker", "docker-swarm", "ssh", "local") else None
        )
        if options is not None:
            sections[options.__name__] = options
    for section, traits in inherited.items():
        for trait in traits:
            mapped = map_config_item(ConfigItem(section, trait, "x", "x"))
            if isinstance(mapped, Note):
                assert mapped.detail and "had no such" not in mapped.detail, (section, trait, mapped)
            else:
                gp_section, gp_trait = mapped
                if gp_section in sections:
                    assert gp_trait in sections[gp_section].class_trait_names(config=True), (section, trait)


def test_a_kernelspec_is_found_by_name_and_keeps_its_own_metadata(
    anchor_kernels: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    kernels = tmp_path / "share" / "jupyter" / "kernels"
    shutil.copytree(anchor_kernels / "docker_python", kernels / "docker_python")
    spec = json.loads((kernels / "docker_python" / "kernel.json").read_text())
    spec["metadata"]["owner"] = "data-team"
    (kernels / "docker_python" / "kernel.json").write_text(json.dumps(spec))
    env = {**_clean_env(), "JUPYTER_PATH": str(tmp_path / "share" / "jupyter"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "gp_core.cli", "migrate", "docker_python", "--in-place", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path / "share",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["kernelspecs"][0]["output"] == str(kernels / "docker_python")
    converted = json.loads((kernels / "docker_python" / "kernel.json").read_text())
    assert converted["metadata"]["owner"] == "data-team"
    assert converted["metadata"]["supported_encryption"] == [
        "curve"
    ]  # gp's own declaration, not the anchor's
    assert sorted(os.listdir(kernels)) == ["docker_python"]  # nothing left beside it


def test_jupyter_gp_migrate_is_gp_migrate() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="jupyter-gp-migrate")
    assert script.value == "gp_core.migrate:jupyter_main"
    done = subprocess.run(
        [sys.executable, "-c", "from gp_core.migrate import jupyter_main; jupyter_main()", "--help"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and "--in-place" in done.stdout


def test_the_migrating_shells_environment_stays_out_of_the_spec(tmp_path: Path) -> None:
    """A spec without launch_timeout/port_range keeps taking the server's at launch, as under the anchor."""
    spec = tmp_path / "hand_written"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["python", "launch_docker.py"], "language": "python", "display_name": "hand written",
        "metadata": {"kernel_provisioner": {"provisioner_name": "docker-provisioner",
                                            "config": {"image_name": "my/kernel:1"}}},
    }))  # fmt: skip
    env = {**_clean_env(), "GP_LAUNCH_TIMEOUT": "99", "GP_PORT_RANGE": "40000..41000"}
    done = subprocess.run(
        [sys.executable, "-m", "gp_core.cli", "migrate", str(spec), "--output", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((tmp_path / "out/hand_written/kernel.json").read_text())["metadata"][
        "kernel_provisioner"
    ]
    assert config["config"] == {"backend": "docker", "image": "my/kernel:1"}


def test_one_unreadable_spec_does_not_stop_the_others(anchor_kernels: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(anchor_kernels / "ssh_spark", tmp_path / "in" / "ssh_spark")
    shutil.copytree(anchor_kernels / "docker_python", tmp_path / "in" / "docker_python")
    broken = json.loads((tmp_path / "in/ssh_spark/kernel.json").read_text())
    broken["env"]["SPARK_OPTS"] = "--master 'yarn"  # unbalanced quote
    (tmp_path / "in/ssh_spark/kernel.json").write_text(json.dumps(broken))
    code, report = gp("migrate", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--json")
    assert code == EXIT_FAILED
    status = {spec["name"]: spec["status"] for spec in report["kernelspecs"]}
    assert status == {"docker_python": "converted", "ssh_spark": "failed"}
    assert (tmp_path / "out/docker_python/kernel.json").is_file()
