"""Backend discovery and dispatch.

Backends register under the entry-point group ``gp_core.backends``. Only the backend a kernel names is
imported, so selecting ``ssh`` never imports the docker or kubernetes SDK. Each backend gets its own
pluggy ``PluginManager``: a hook call reaches exactly that backend (a shared manager would fan
``poll`` out to every installed backend and return whichever answered first).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Iterable
from importlib.metadata import entry_points
from typing import Any, TypeVar

import pluggy

from . import hookspecs
from .errors import BackendError, InvalidOptionError, UnknownBackendError
from .options import CORE_OPTION_NAMES, BackendOptions, parse_list, unknown_options_message

GROUP = "gp_core.backends"
T = TypeVar("T")

log = logging.getLogger("gp_core")


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Hooks may be sync or async: await what is awaitable, return the rest."""
    if inspect.isawaitable(value):
        return await value
    return value


def installed_backends() -> list[str]:
    """Names of the installed backends, without importing any of them (honours ``GP_DISABLED_BACKENDS``)."""
    disabled = set(parse_list(os.environ.get("GP_DISABLED_BACKENDS", "")))
    return sorted({ep.name for ep in entry_points(group=GROUP)} - disabled)


class Backend:
    """One loaded backend: its plugin, its hooks (``backend.hook.poll(...)``) and its options class."""

    def __init__(self, name: str, plugin: object) -> None:
        self.name = name
        self.plugin = plugin
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise BackendError(f"gp backend {name!r} is invalid: {exc}") from exc
        missing = [h for h in hookspecs.REQUIRED_HOOKS if not getattr(self.pm.hook, h).get_hookimpls()]
        if missing:
            raise BackendError(
                f"gp backend {name!r} ({getattr(plugin, '__name__', plugin)!r}) does not implement the "
                f"required hook(s): {', '.join(missing)}"
            )
        try:
            options_class = self.pm.hook.declare_options()
        except Exception as exc:
            raise BackendError(f"gp backend {name!r}: declare_options failed: {exc}") from exc
        if options_class is not None and not (
            isinstance(options_class, type) and issubclass(options_class, BackendOptions)
        ):
            raise BackendError(
                f"gp backend {name!r}: declare_options must return a BackendOptions subclass, "
                f"not {options_class!r}"
            )
        if options_class is not None:
            shadowing = sorted(set(options_class.option_names()) & set(CORE_OPTION_NAMES))
            if shadowing:
                # kernel.json's config and the server's c.* sections hold both in one namespace.
                raise BackendError(
                    f"gp backend {name!r} is invalid: its option(s) "
                    f"{', '.join(f'{options_class.__name__}.{o}' for o in shadowing)} would shadow gp's core "
                    f"option(s) {', '.join(f'GenericRemoteProvisioner.{o}' for o in shadowing)}; "
                    "rename the backend's option(s)"
                )
        self.options_class: type[BackendOptions] | None = options_class
        self.hook = self.pm.hook

    def implements(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def make_options(
        self,
        values: dict[str, Any],
        parent: Any = None,
        other_options: Iterable[str] = (),
        policy: bool = True,
    ) -> BackendOptions | None:
        """Validate per-kernel option values against the backend's options class.

        ``other_options`` are the keys valid beside the backend's (core's options); an unknown-option
        error lists them too, so it names everything a kernel.json may set. ``policy=False`` skips the
        check that kernel.json only tightens the server's policy options (see ``BackendOptions.from_config``).
        """
        if self.options_class is None:
            if values:
                raise InvalidOptionError(unknown_options_message(self.name, values, (), other_options))
            return None
        return self.options_class.from_config(
            self.name, values, parent=parent, other_options=other_options, policy=policy
        )

    @property
    def secret_env(self) -> tuple[str, ...]:
        """Server variables the backend declares secret: never part of a kernel's environment."""
        return self.options_class.secret_env if self.options_class is not None else ()

    async def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call one hook of this backend, awaiting an async implementation.

        Exceptions are re-raised unchanged, with a note naming the backend and the hook.
        """
        try:
            return await await_me_maybe(getattr(self.hook, hook_name)(**kwargs))
        except Exception as exc:
            exc.add_note(f"(in gp backend {self.name!r}, hook {hook_name!r})")
            raise

    def __repr__(self) -> str:
        return f"<Backend {self.name!r} {getattr(self.plugin, '__name__', self.plugin)!r}>"


_loaded: dict[str, Backend] = {}
_lock = threading.Lock()


def get_backend(name: str) -> Backend:
    """Load (once) and return the backend registered under ``name``.

    :raises UnknownBackendError: Listing the installed backends.
    :raises BackendError: When the backend fails to import or lacks a required hook.
    """
    backend = _loaded.get(name)
    if backend is not None:
        return backend
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name not in installed_backends():
            raise UnknownBackendError(name, installed_backends())
        (ep,) = [ep for ep in entry_points(group=GROUP, name=name)][:1]
        try:
            plugin = ep.load()
        except Exception as exc:  # never hide why a plugin failed to import
            raise BackendError(f"gp backend {name!r} failed to import ({ep.value}): {exc}") from exc
        backend = _loaded[name] = Backend(name, plugin)
        return backend


def register_backend(name: str, plugin: object) -> Backend:
    """Register a backend object directly (for tests and embedding), replacing one of that name."""
    backend = Backend(name, plugin)
    with _lock:
        _loaded[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    with _lock:
        _loaded.pop(name, None)
