"""The option namespace (core vs backend, server config keys, "did you mean") and security policies
(kernel.json may tighten the server's configuration, never loosen it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets import Float, List, Unicode, default
from traitlets.config import Config, Configurable

from gp_core import (
    BackendError,
    BackendOptions,
    InvalidOptionError,
    ServerConfigError,
    UnknownBackendError,
    env_default,
    get_backend,
    hookimpl,
)
from gp_core.errors import GP_DISTRIBUTIONS, unknown_backend_message
from gp_core.options import CORE_OPTION_NAMES
from gp_core.plugins import register_backend, unregister_backend
from gp_core.provisioner import GenericRemoteProvisioner
from gp_core.testing import NullBackend

ROOT = Path(__file__).resolve().parents[1]


def provisioner(server: dict | None = None, **kernel_json) -> GenericRemoteProvisioner:
    """A provisioner as jupyter_client builds one: kernel.json's config as keyword arguments, the server's
    config through the parent."""
    spec = KernelSpec(argv=["x"], display_name="x", language="python")
    parent = Configurable(config=Config(server or {}))
    kernel_json.setdefault("backend", "local")
    return GenericRemoteProvisioner(kernel_id="k", kernel_spec=spec, parent=parent, **kernel_json)


# ---------------------------------------------------------------------------------------------- namespace


def test_core_option_names_are_the_provisioners_options():
    # gp_core.plugins checks backends against this list without importing jupyter_client.
    assert list(CORE_OPTION_NAMES) == GenericRemoteProvisioner.core_option_names()


class ShadowingOptions(BackendOptions):
    image = Unicode(config=True)
    launch_timeout = Float(10.0, config=True)


class ShadowingBackend(NullBackend):
    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return ShadowingOptions


def test_a_backend_option_named_like_a_core_option_is_refused():
    with pytest.raises(BackendError) as info:
        register_backend("undo-shadowing", ShadowingBackend())
    message = str(info.value)
    assert "'undo-shadowing'" in message
    assert "ShadowingOptions.launch_timeout" in message
    assert "GenericRemoteProvisioner.launch_timeout" in message


def test_the_collision_check_needs_no_jupyter():
    # gp_core.testing imports jupyter_client, so the check builds its own backend object.
    code = textwrap.dedent(
        """
        import sys
        from traitlets import Float
        from gp_core import BackendError, BackendOptions, hookimpl
        from gp_core.plugins import get_backend, register_backend

        class Options(BackendOptions):
            poll_interval = Float(config=True)

        class Plugin:
            @hookimpl
            def declare_options(self):
                return Options
            @hookimpl
            def launch(self):
                return {}
            @hookimpl
            def poll(self):
                return None
            @hookimpl
            def terminate(self):
                return None

        get_backend("local").make_options({})
        try:
            register_backend("x", Plugin())
        except BackendError as exc:
            assert "GenericRemoteProvisioner.poll_interval" in str(exc), exc
        else:
            raise AssertionError("not refused")
        assert not [m for m in sys.modules if m.startswith(("jupyter", "tornado"))], "jupyter imported"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_unknown_server_config_key_of_a_backend_is_an_error():
    local = get_backend("local")
    parent = Configurable(config=Config({"LocalOptions": {"stop_timout": 1}}))
    with pytest.raises(ServerConfigError) as info:
        local.make_options({}, parent=parent)
    assert str(info.value) == (
        "Unknown option(s) 'stop_timout' in server config c.LocalOptions (gp backend 'local') "
        "(did you mean 'stop_timeout'?); valid options in c.LocalOptions: "
        "inherit_server_env, kernel_ip, log_dir, stop_timeout"
    )
    assert isinstance(info.value, InvalidOptionError)


def test_a_core_option_in_a_backends_config_section_is_pointed_to_core():
    parent = Configurable(config=Config({"LocalOptions": {"launch_timeout": 9}}))
    with pytest.raises(InvalidOptionError, match=r"'launch_timeout' is set as c.GenericRemoteProvisioner"):
        get_backend("local").make_options({}, parent=parent)


def test_unknown_server_config_key_of_core_is_an_error():
    with pytest.raises(ServerConfigError) as info:
        provisioner({"GenericRemoteProvisioner": {"lanch_timeout": 9}})
    message = str(info.value)
    assert "'lanch_timeout' in server config c.GenericRemoteProvisioner (gp-remote-provisioner)" in message
    assert "did you mean 'launch_timeout'?" in message
    assert "valid options in c.GenericRemoteProvisioner: " + ", ".join(CORE_OPTION_NAMES) in message
    with pytest.raises(ServerConfigError, match=r"'stop_timeout' is set as c.LocalOptions.stop_timeout"):
        provisioner({"GenericRemoteProvisioner": {"stop_timeout": 9}})


def test_server_config_sections_and_lower_case_keys_are_told_apart():
    # A nested section (capitalised key) is traitlets' business, not an option.
    parent = Configurable(config=Config({"LocalOptions": {"Nested": {"x": 1}, "stop_timeout": 2.0}}))
    assert get_backend("local").make_options({}, parent=parent).stop_timeout == 2.0


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            {"LocalOptions": {"stop_timeout": "slow"}},
            "Invalid option 'stop_timeout' for gp backend 'local' (from server config "
            "c.LocalOptions.stop_timeout = 'slow'): The 'stop_timeout' trait of a LocalOptions instance "
            "expected a float, not the str 'slow'. stop_timeout: Seconds between SIGTERM and SIGKILL on "
            "terminate.",
        ),
        (
            {"GenericRemoteProvisioner": {"launch_timeout": -1}},
            "Invalid option 'launch_timeout' for gp-remote-provisioner (from server config "
            "c.GenericRemoteProvisioner.launch_timeout = -1): launch_timeout must be a positive number of "
            "seconds, not -1.0. launch_timeout: Seconds a launch may take",
        ),
        (
            {"GenericRemoteProvisioner": {"port_range": "lots"}},
            "Invalid option 'port_range' for gp-remote-provisioner (from server config "
            "c.GenericRemoteProvisioner.port_range = 'lots')",
        ),
    ],
)
def test_a_bad_server_config_value_names_its_source(server, message):
    with pytest.raises(ServerConfigError) as info:
        provisioner(server)
    assert str(info.value).startswith(message)


def test_a_bad_kernel_json_core_value_names_its_source():
    with pytest.raises(InvalidOptionError) as info:
        provisioner(launch_timeout="soon")
    assert not isinstance(info.value, ServerConfigError)
    assert str(info.value).startswith(
        "Invalid option 'launch_timeout' for gp-remote-provisioner (from kernel.json value 'soon'): "
    )


def test_a_bad_env_value_of_core_names_its_variable(monkeypatch):
    monkeypatch.setenv("GP_POLL_INTERVAL", "0")
    with pytest.raises(ServerConfigError, match=r"'poll_interval' .*\(from env GP_POLL_INTERVAL='0'\)"):
        provisioner()


def test_unknown_backend_suggests_the_close_installed_name():
    with pytest.raises(UnknownBackendError) as info:
        get_backend("lokal")
    message = str(info.value)
    assert message.startswith("Unknown gp backend 'lokal'; did you mean 'local'? installed backends: ")
    assert "pip install" not in message


def test_unknown_backend_suggests_pip_only_for_gp_distributions_or_when_nothing_is_close():
    assert unknown_backend_message("unshar", ["local", "unshare"]) == (
        "Unknown gp backend 'unshar'; did you mean 'unshare'? installed backends: local, unshare"
    )
    assert unknown_backend_message("docker-swarm", ["local"]) == (
        "Unknown gp backend 'docker-swarm'; installed backends: local. "
        "It is provided by gp-docker: pip install gp-docker"
    )
    assert unknown_backend_message("k8", ["local"]) == (
        "Unknown gp backend 'k8'; did you mean 'k8s' (not installed: pip install gp-k8s)? "
        "installed backends: local"
    )
    assert unknown_backend_message("nomad", ["local"]) == (
        "Unknown gp backend 'nomad'; installed backends: local. "
        "Install the package that provides it (e.g. 'pip install gp-nomad')."
    )


def test_the_gp_distributions_are_the_plugins():
    declared: dict[str, str] = {}
    placeholders: set[str] = set()
    for pyproject in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        backends = project.get("entry-points", {}).get("gp_core.backends", {})
        declared.update(dict.fromkeys(backends, project["name"]))
        if not backends:
            placeholders.add(project["name"])
    assert declared.items() <= GP_DISTRIBUTIONS.items()
    assert set(GP_DISTRIBUTIONS.values()) == set(declared.values()) | placeholders


def test_misspelled_kernel_json_option_gets_a_suggestion():
    with pytest.raises(
        InvalidOptionError, match=r"'stop_timout' for gp backend 'local' \(did you mean 'stop_timeout'\?\)"
    ):
        provisioner(stop_timout=3)
    with pytest.raises(InvalidOptionError, match=r"'lanch_timeout' .*\(did you mean 'launch_timeout'\?\)"):
        provisioner(lanch_timeout=3)


# ---------------------------------------------------------------------------------------------- policies


def _default_cpus() -> float:
    return 0.0


class PolicyOptions(BackendOptions):
    refused = List(Unicode(), config=True, help="Refused things.").tag(policy="deny")
    allowed = List(Unicode(), config=True, help="Allowed things.").tag(policy="allow")
    patterns = List(Unicode(), config=True, help="Allowed patterns.").tag(
        policy="allow", covers=lambda allowed, item: item == allowed or fnmatchcase(item, allowed)
    )
    cpus = Float(0.0, config=True, help="CPU cap; 0 = none.").tag(policy="cap", unlimited=0)
    max_cpus = Float(0.0, config=True, help="Request cap; 0 = cpus.").tag(
        policy="cap", unlimited=0, fallback="cpus"
    )
    size = Unicode("1k", config=True, help="A size.").tag(
        policy="cap", parse=lambda text: {"1k": 1e3, "1m": 1e6, "1g": 1e9}[text]
    )
    plain = Unicode("x", config=True, help="Not a policy.")

    _refused_default = default("refused")(env_default("GP_POLICY_REFUSED", ["0"]))


class PolicyBackend(NullBackend):
    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return PolicyOptions


@pytest.fixture
def policy_backend():
    yield register_backend("undo-policy", PolicyBackend())
    unregister_backend("undo-policy")


def _server(**section):
    return Configurable(config=Config({"PolicyOptions": section}))


def test_deny_lists_are_merged(policy_backend, monkeypatch):
    assert policy_backend.make_options({"refused": []}).refused == ["0"]
    assert policy_backend.make_options({"refused": ["5", "0"]}).refused == ["0", "5"]
    monkeypatch.setenv("GP_POLICY_REFUSED", "1,2")
    assert policy_backend.make_options({"refused": ["3"]}).refused == ["1", "2", "3"]
    assert policy_backend.make_options({"refused": []}, parent=_server(refused=[])).refused == []


def test_allow_lists_may_only_narrow(policy_backend):
    server = _server(allowed=["a", "b"], patterns=["org/*"])
    assert policy_backend.make_options({"allowed": ["a"]}, parent=server).allowed == ["a"]
    assert policy_backend.make_options({"allowed": []}, parent=server).allowed == []
    assert policy_backend.make_options({"patterns": ["org/x", "org/*"]}, parent=server).patterns == [
        "org/x",
        "org/*",
    ]
    with pytest.raises(InvalidOptionError) as info:
        policy_backend.make_options({"allowed": ["a", "c"]}, parent=server)
    assert str(info.value) == (
        "Invalid option 'allowed' for gp backend 'undo-policy' (from kernel.json value ['a', 'c']): it would "
        "loosen the server's allowed=['a', 'b'] (from server config c.PolicyOptions.allowed): 'c' not "
        "allowed by the server; kernel.json may only narrow its list. allowed is a security policy: the "
        "server's configuration is the floor"
    )
    with pytest.raises(InvalidOptionError, match=r"'\*' not allowed by the server"):
        policy_backend.make_options({"patterns": ["*"]}, parent=server)
    # The server's empty list allows nothing.
    with pytest.raises(InvalidOptionError, match=r"allowed=\[\] \(from its default\)"):
        policy_backend.make_options({"allowed": ["a"]})


def test_caps_may_only_be_lowered(policy_backend):
    server = _server(cpus=2.0, size="1m")
    assert policy_backend.make_options({"cpus": 1.5, "size": "1k"}, parent=server).cpus == 1.5
    with pytest.raises(
        InvalidOptionError, match=r"'cpus' .*kernel.json value 4.0.*cpus=2.0 .*may only lower"
    ):
        policy_backend.make_options({"cpus": 4.0}, parent=server)
    with pytest.raises(InvalidOptionError, match=r"'cpus' .*kernel.json value 0"):
        policy_backend.make_options({"cpus": 0}, parent=server)  # 0 = no cap
    with pytest.raises(InvalidOptionError, match=r"'size'"):
        policy_backend.make_options({"size": "1g"}, parent=server)
    # Without a server cap any kernel.json cap is a tightening.
    assert policy_backend.make_options({"cpus": 64.0}).cpus == 64.0
    # max_cpus 0 means "the cpus cap": the server's effective request cap is 2.
    with pytest.raises(InvalidOptionError, match=r"'max_cpus'"):
        policy_backend.make_options({"max_cpus": 3.0}, parent=server)
    assert policy_backend.make_options({"max_cpus": 2.0}, parent=server).max_cpus == 2.0


def test_policy_false_only_validates(policy_backend):
    server = _server(allowed=["a"])
    options = policy_backend.make_options({"allowed": ["z"], "refused": []}, parent=server, policy=False)
    assert options.allowed == ["z"] and options.refused == []
    with pytest.raises(InvalidOptionError, match="cpus"):
        policy_backend.make_options({"cpus": "many"}, parent=server, policy=False)


def test_kernel_json_unauthorized_users_add_to_the_servers():
    # kernel.json's ["bob"] used to replace the default ["root"], letting root in.
    p = provisioner(unauthorized_users=["bob"])
    assert p.unauthorized_users == ["root", "bob"]
    with pytest.raises(PermissionError, match="'root' is not authorized"):
        p._authorize({"KERNEL_USERNAME": "root"})
    with pytest.raises(PermissionError, match="'bob' is not authorized"):
        p._authorize({"KERNEL_USERNAME": "bob"})
    assert provisioner(unauthorized_users=[]).unauthorized_users == ["root"]


def test_a_server_may_let_root_in(monkeypatch):
    server = {"GenericRemoteProvisioner": {"unauthorized_users": []}}
    assert provisioner(server)._authorize({"KERNEL_USERNAME": "root"}) == "root"
    monkeypatch.setenv("GP_UNAUTHORIZED_USERS", "")
    assert provisioner()._authorize({"KERNEL_USERNAME": "root"}) == "root"


def test_kernel_json_authorized_users_narrow_the_servers():
    server = {"GenericRemoteProvisioner": {"authorized_users": ["alice", "bob"]}}
    assert provisioner(server, authorized_users=["alice"]).authorized_users == ["alice"]
    with pytest.raises(InvalidOptionError, match=r"'carol' not allowed by the server"):
        provisioner(server, authorized_users=["carol"])
    with pytest.raises(InvalidOptionError, match=r"an empty list would allow anyone"):
        provisioner(server, authorized_users=[])
    # The server allows anyone: kernel.json may name who.
    assert provisioner(authorized_users=["carol"]).authorized_users == ["carol"]
