"""Backend discovery, dispatch to exactly one backend, and option validation/precedence."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest
from traitlets import Enum, Integer, TraitError, Unicode, default, validate
from traitlets.config import Config

from gp_core import (
    BackendError,
    BackendOptions,
    InvalidOptionError,
    UnknownBackendError,
    env_default,
    get_backend,
    hookimpl,
    installed_backends,
    parse_bool,
)
from gp_core.plugins import register_backend, unregister_backend
from gp_core.testing import NullBackend, require_backend


class FakeOptions(BackendOptions):
    image = Unicode("default-image", config=True)
    cpus = Integer(1, config=True)
    _image_default = default("image")(env_default("GP_FAKE_IMAGE", "default-image"))


class FakeBackend:
    """A backend object (pluggy also accepts objects) that records what it is called with."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[str] = []

    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return FakeOptions

    @hookimpl
    def launch(self, kernel_id: str) -> dict:
        self.calls.append("launch")
        return {"tag": self.tag, "kernel_id": kernel_id}

    @hookimpl
    async def poll(self, handle: dict) -> int | None:
        self.calls.append("poll")
        return None if handle["tag"] == self.tag else 99

    @hookimpl
    def terminate(self, handle: dict, force: bool) -> None:
        self.calls.append(f"terminate force={force}")


@pytest.fixture
def two_backends():
    one, two = FakeBackend("one"), FakeBackend("two")
    backends = register_backend("undo-one", one), register_backend("undo-two", two)
    yield backends
    unregister_backend("undo-one")
    unregister_backend("undo-two")


def test_installed_backends_come_from_entry_points():
    names = installed_backends()
    assert "local" in names
    assert "example" in names  # the installable example third-party package


def test_disabled_backends_are_hidden(monkeypatch):
    monkeypatch.setenv("GP_DISABLED_BACKENDS", "example, example-broken")
    assert "example" not in installed_backends()
    with pytest.raises(UnknownBackendError):
        get_backend("example-broken")


async def test_dispatch_reaches_only_the_named_backend(two_backends):
    one, two = two_backends
    handle = await one.call(
        "launch",
        kernel_id="k1",
        resources={},
        options=None,
        namespace=None,
        rollback=None,
        resource_dir=None,
        log=None,
    )
    assert handle == {"tag": "one", "kernel_id": "k1"}
    # A shared plugin manager would fan poll out to both backends; each answers only for itself.
    assert await one.call("poll", handle=handle, options=None, launching=False, log=None) is None
    assert one.plugin.calls == ["launch", "poll"]
    assert two.plugin.calls == []


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(UnknownBackendError) as info:
        get_backend("nomad")
    message = str(info.value)
    assert "'nomad'" in message
    assert "local" in message and "example" in message


def test_backend_missing_required_hooks_is_refused_by_name():
    with pytest.raises(BackendError, match=r"example-incomplete.*required hook\(s\): poll, terminate"):
        get_backend("example-incomplete")


def test_import_error_of_a_backend_is_not_hidden():
    with pytest.raises(BackendError, match="needs an SDK that is not installed") as info:
        get_backend("example-broken")
    assert isinstance(info.value.__cause__, ImportError)


def test_hookimpl_with_unknown_argument_is_refused():
    class Typo:
        @hookimpl
        def launch(self, resources, image):  # 'image' is not in the spec's vocabulary
            return {}

    with pytest.raises(BackendError, match="image"):
        register_backend("undo-typo", Typo())


def test_hook_errors_get_a_note_naming_backend_and_hook():
    class Failing(FakeBackend):
        @hookimpl
        def launch(self, kernel_id: str) -> dict:
            raise RuntimeError("SDK exploded")

    backend = register_backend("undo-failing", Failing("x"))
    try:
        with pytest.raises(RuntimeError, match="SDK exploded") as info:
            import asyncio

            asyncio.run(
                backend.call(
                    "launch",
                    kernel_id="k",
                    resources={},
                    options=None,
                    namespace=None,
                    rollback=None,
                    resource_dir=None,
                    log=None,
                )
            )
        assert any("undo-failing" in note and "launch" in note for note in info.value.__notes__)
    finally:
        unregister_backend("undo-failing")


def test_unknown_option_is_named_with_the_valid_ones(two_backends):
    one, _ = two_backends
    with pytest.raises(InvalidOptionError) as info:
        one.make_options({"imagee": "x"})
    assert str(info.value).endswith(
        "'imagee' for gp backend 'undo-one' (did you mean 'image'?); valid options: cpus, image"
    )


def test_unknown_option_lists_the_other_valid_options_too(two_backends):
    one, _ = two_backends
    with pytest.raises(InvalidOptionError) as info:
        one.make_options({"imagee": "x", "zz": 1}, other_options=["launch_timeout", "backend"])
    assert str(info.value) == (
        "Unknown option(s) 'imagee', 'zz' for gp backend 'undo-one' (did you mean 'image' for 'imagee'?); "
        "valid options: backend, launch_timeout (core), cpus, image (undo-one)"
    )


def test_unknown_option_of_a_backend_without_options_lists_the_core_ones():
    backend = register_backend("undo-bare", NullBackend())
    try:
        assert backend.make_options({}) is None
        with pytest.raises(InvalidOptionError) as info:
            backend.make_options({"image": "x"}, other_options=["port_range"])
        assert str(info.value) == (
            "Unknown option(s) 'image' for gp backend 'undo-bare'; "
            "valid options: port_range (core; undo-bare has none of its own)"
        )
    finally:
        unregister_backend("undo-bare")


def test_failing_declare_options_is_refused_by_name():
    class Exploding(FakeBackend):
        @hookimpl
        def declare_options(self) -> type[BackendOptions]:
            raise RuntimeError("no options today")

    with pytest.raises(BackendError, match="'undo-exploding': declare_options failed: no options today"):
        register_backend("undo-exploding", Exploding("x"))


class StrictOptions(BackendOptions):
    """Options whose values come from GP_* env defaults and must still pass their validators."""

    network = Unicode(config=True, help="Network to join; not blank (env GP_STRICT_NETWORK).")
    workers = Integer(config=True, help="Worker count, 1-8 (env GP_STRICT_WORKERS).")
    mode = Enum(["fast", "safe"], "safe", config=True)

    _network_default = default("network")(env_default("GP_STRICT_NETWORK", "bridge"))
    _workers_default = default("workers")(env_default(("GP_STRICT_WORKERS", "GP_WORKERS"), 2))

    @validate("network")
    def _check_network(self, proposal):
        value = proposal["value"].strip()
        if not value:
            raise TraitError("network must name a network, e.g. bridge")
        return value

    @validate("workers")
    def _check_workers(self, proposal):
        if not 1 <= proposal["value"] <= 8:
            raise TraitError(f"workers must be within 1..8, not {proposal['value']}")
        return proposal["value"]


class StrictBackend(FakeBackend):
    @hookimpl
    def declare_options(self) -> type[BackendOptions]:
        return StrictOptions


@pytest.fixture
def strict(monkeypatch):
    for name in ("GP_STRICT_NETWORK", "GP_STRICT_WORKERS", "GP_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    yield register_backend("undo-strict", StrictBackend("strict"))
    unregister_backend("undo-strict")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GP_STRICT_NETWORK": " "},
            "Invalid option 'network' for gp backend 'undo-strict' (from env GP_STRICT_NETWORK=' '): "
            "network must name a network, e.g. bridge. "
            "network: Network to join; not blank (env GP_STRICT_NETWORK).",
        ),
        (
            {"GP_WORKERS": "99"},  # the second of the option's variables
            "Invalid option 'workers' for gp backend 'undo-strict' (from env GP_WORKERS='99'): "
            "workers must be within 1..8, not 99. workers: Worker count, 1-8 (env GP_STRICT_WORKERS).",
        ),
        (
            {"GP_STRICT_WORKERS": "many"},
            "Invalid option 'workers' for gp backend 'undo-strict' (from env GP_STRICT_WORKERS='many'): "
            "GP_STRICT_WORKERS='many' is not an integer. workers: Worker count, 1-8 (env GP_STRICT_WORKERS).",
        ),
    ],
)
def test_env_default_values_pass_the_validators(strict, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidOptionError) as info:
        strict.make_options({})
    assert str(info.value) == message


def test_validated_env_value_is_the_one_used(strict, monkeypatch):
    monkeypatch.setenv("GP_STRICT_NETWORK", "  host ")
    monkeypatch.setenv("GP_STRICT_WORKERS", "8")
    assert strict.make_options({}).to_dict() == {"mode": "safe", "network": "host", "workers": 8}


def test_invalid_values_name_their_source(strict, monkeypatch):
    from traitlets.config import Configurable

    with pytest.raises(InvalidOptionError, match=r"'workers' .*\(from kernel.json value 0\): workers must"):
        strict.make_options({"workers": 0})
    with pytest.raises(
        InvalidOptionError, match=r"'mode' .*\(from kernel.json value 'quick'\).*'fast', 'safe'"
    ):
        strict.make_options({"mode": "quick"})
    parent = Configurable(config=Config({"StrictOptions": {"network": ""}}))
    with pytest.raises(
        InvalidOptionError, match=r"'network' .*\(from server config c.StrictOptions.network\): network must"
    ):
        strict.make_options({}, parent=parent)
    # A kernel.json value beats the bad env value: only the effective value is validated.
    monkeypatch.setenv("GP_STRICT_NETWORK", " ")
    assert strict.make_options({"network": "bridge"}).network == "bridge"


def test_invalid_option_value_is_named(two_backends):
    one, _ = two_backends
    with pytest.raises(InvalidOptionError, match="cpus"):
        one.make_options({"cpus": "many"})


def test_option_precedence_kernel_json_over_config_over_env_over_default(two_backends, monkeypatch):
    one, _ = two_backends

    class Parent:
        config = Config()

    assert one.make_options({}).image == "default-image"
    monkeypatch.setenv("GP_FAKE_IMAGE", "from-env")
    assert one.make_options({}).image == "from-env"
    from traitlets.config import Configurable

    parent = Configurable(config=Config({"FakeOptions": {"image": "from-server-config"}}))
    assert one.make_options({}, parent=parent).image == "from-server-config"
    assert one.make_options({"image": "from-kernel-json"}, parent=parent).image == "from-kernel-json"


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("False", False), ("0", False), ("yes", True), (" off ", False)]
)
def test_parse_bool_is_strict(text, expected):
    assert parse_bool(text) is expected


def test_parse_bool_rejects_garbage():
    with pytest.raises(InvalidOptionError, match="not a boolean"):
        parse_bool("maybe", "GP_X")


#: The SDK each backend is built on; selecting one backend must import no other's.
BACKEND_SDKS = {"local": (), "docker": ("docker",), "docker-swarm": ("docker",), "ssh": ("paramiko",)}
#: SDKs of backends gp knows of (installed or coming) and the backends' own packages.
KNOWN_SDKS = {"docker", "paramiko", "kubernetes", "yarn_api_client"}
BACKEND_PACKAGES = {"gp_docker", "gp_ssh", "gp_k8s", "gp_yarn", "gp_sparkop", "gp_example"}


def _top_level_modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    script = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("backend", sorted(BACKEND_SDKS))
def test_selecting_a_backend_imports_no_other_backend_sdk(backend):
    if backend not in installed_backends():
        require_backend(backend, "its distribution is not installed")
    own_package = entry_points(group="gp_core.backends", name=backend)[backend].value.split(".")[0]
    # What the backend's own SDK pulls in is its business (the docker SDK imports paramiko, when
    # installed, for ssh:// daemons); nothing else may come along.
    own_sdk_imports = _top_level_modules_after(
        "".join(f"import {sdk}\n" for sdk in BACKEND_SDKS[backend]) or "pass"
    )
    loaded = _top_level_modules_after(
        "from gp_core.provisioner import GenericRemoteProvisioner\n"
        "from gp_core import get_backend\n"
        f"get_backend({backend!r}).make_options({{}})"
    )
    forbidden = (KNOWN_SDKS | BACKEND_PACKAGES) - own_sdk_imports - {own_package}
    assert set(BACKEND_SDKS[backend]) <= loaded  # the check can see an SDK import at all
    assert loaded & forbidden == set()


def test_importing_gp_core_is_cheap_and_exports_the_jupyter_classes_lazily():
    code = textwrap.dedent(
        """
        import sys
        import gp_core
        assert not [m for m in sys.modules if m.startswith("jupyter")], "jupyter imported eagerly"
        from gp_core import GenericRemoteProvisioner, InstallSpecApp, ResponseListener, SpecInstallerApp
        from gp_core.listener import ResponseListener as listener_class
        from gp_core.provisioner import GenericRemoteProvisioner as provisioner_class
        from gp_core.specapp import InstallSpecApp as install_class, SpecInstallerApp as installer_class
        assert (GenericRemoteProvisioner, InstallSpecApp, ResponseListener, SpecInstallerApp) == (
            provisioner_class, install_class, listener_class, installer_class
        )
        assert set(gp_core.__all__) <= set(dir(gp_core))
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        import gp_core

        gp_core.Nothing  # noqa: B018
