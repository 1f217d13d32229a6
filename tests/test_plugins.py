"""Backend discovery, dispatch to exactly one backend, and option validation/precedence."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from traitlets import Integer, Unicode, default
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
    handle = await one.call("launch", kernel_id="k1", resources={}, options=None, namespace=None, log=None)
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
                backend.call("launch", kernel_id="k", resources={}, options=None, namespace=None, log=None)
            )
        assert any("undo-failing" in note and "launch" in note for note in info.value.__notes__)
    finally:
        unregister_backend("undo-failing")


def test_unknown_option_is_named_with_the_valid_ones(two_backends):
    one, _ = two_backends
    with pytest.raises(InvalidOptionError, match=r"'imagee'.*valid options: cpus, image"):
        one.make_options({"imagee": "x"})


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


def test_selecting_a_backend_imports_no_other_backend_sdk():
    code = textwrap.dedent(
        """
        import sys
        from gp_core import get_backend
        from gp_core.provisioner import GenericRemoteProvisioner
        get_backend("local")
        heavy = [m for m in ("docker", "kubernetes", "paramiko", "yarn_api_client") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
