"""Options: one place that decides precedence and validates values.

Precedence, highest first: the per-kernel ``kernel.json`` config, the server's traitlets config
(``c.GenericRemoteProvisioner.x`` / ``c.<BackendOptions subclass>.x``), a ``GP_*`` environment
variable, the default. traitlets gives the first two (assigned values beat config); ``@default``
methods built with :func:`env_default` give the third, read when the options object is built, not at
import. traitlets runs ``@validate`` only on assignment, never on a default, so
:meth:`BackendOptions.from_config` assigns every option's effective value once: a bad ``GP_*`` value is
refused up front like a bad ``kernel.json`` one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from traitlets import TraitError
from traitlets.config import Configurable
from traitlets.traitlets import DefaultHandler

from .errors import InvalidOptionError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: str, name: str = "value") -> bool:
    """Parse a boolean from text; ``"false"`` is False (the anchor's ``bool(str)`` said True)."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidOptionError(f"{name}={value!r} is not a boolean; use one of true/false, 1/0, yes/no, on/off")


def parse_list(value: str) -> list[str]:
    """Parse a comma-separated list, dropping blanks."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _convert(value: str, like: Any, name: str) -> Any:
    if isinstance(like, bool):
        return parse_bool(value, name)
    if isinstance(like, int):
        try:
            return int(value)
        except ValueError:
            raise InvalidOptionError(f"{name}={value!r} is not an integer") from None
    if isinstance(like, float):
        try:
            return float(value)
        except ValueError:
            raise InvalidOptionError(f"{name}={value!r} is not a number") from None
    if isinstance(like, list | set | tuple):
        return type(like)(parse_list(value))
    return value


def env_default(
    var: str | Iterable[str], default: Any, convert: Callable[[str], Any] | None = None
) -> Callable[[Any], Any]:
    """Build a traitlets ``@default`` method that reads ``var`` (the first of several names set), else
    ``default``. The value is converted like ``default`` (bool, int, float, list, str) unless
    ``convert`` is given::

        class DockerOptions(BackendOptions):
            network = Unicode(config=True, help="...")
            _network_default = default("network")(env_default("GP_DOCKER_NETWORK", "bridge"))
    """
    names = [var] if isinstance(var, str) else list(var)

    def read(_self: Any) -> Any:
        for name in names:
            value = os.environ.get(name)
            if value is not None:
                return convert(value) if convert else _convert(value, default, name)
        return default() if callable(default) else default

    read.env_vars = tuple(names)  # type: ignore[attr-defined]  # lets errors name the variable used
    return read


def option_env_vars(cls: type[Configurable], name: str) -> tuple[str, ...]:
    """The environment variables option ``name`` of ``cls`` defaults from (via :func:`env_default`)."""
    for klass in cls.__mro__:
        for attribute in vars(klass).values():
            if isinstance(attribute, DefaultHandler) and attribute.trait_name == name:
                return tuple(getattr(attribute.func, "env_vars", ()))
    return ()


class BackendOptions(Configurable):
    """Base class of a backend's options (see the ``declare_options`` hook).

    Each ``config=True`` trait is an option ``kernel.json`` may set beside ``"backend"``.
    """

    #: Server environment variables that hold the backend's secrets (e.g. a password). Core drops them
    #: from the environment of every kernel this backend starts, even when a kernelspec names them.
    secret_env: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def option_names(cls) -> list[str]:
        return sorted(cls.class_trait_names(config=True))

    @classmethod
    def from_config(
        cls,
        backend: str,
        values: Mapping[str, Any],
        parent: Any = None,
        other_options: Iterable[str] = (),
    ) -> BackendOptions:
        """Validate ``values`` (the per-kernel options) and build the options object.

        Every option's effective value (kernel.json, server config, ``GP_*`` env or default) passes the
        trait's validators. ``other_options`` are the names valid beside the backend's (core's own),
        listed when a key is unknown.

        :raises InvalidOptionError: Naming the option, where its value came from and what is allowed.
        """
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise InvalidOptionError(
                unknown_options_message(backend, unknown, cls.option_names(), other_options)
            )
        try:
            options = cls(parent=parent)
        except TraitError as exc:
            raise InvalidOptionError(f"Invalid server config for gp backend {backend!r}: {exc}") from exc
        for name in cls.option_names():
            try:
                # Assigning runs every validator; a default (from env or not) never went through @validate.
                setattr(options, name, values[name] if name in values else getattr(options, name))
            except (TraitError, ValueError) as exc:
                raise InvalidOptionError(options._invalid_message(backend, name, values, exc)) from exc
        return options

    def _invalid_message(self, backend: str, name: str, values: Mapping[str, Any], error: Exception) -> str:
        """Name the option, where its value came from (precedence order) and what it allows."""
        trait = self.traits()[name]
        sections = [s for s in self.section_names() if s in self.config and name in self.config[s]]
        env_var = next((var for var in option_env_vars(type(self), name) if var in os.environ), None)
        if name in values:
            source = f"kernel.json value {values[name]!r}"
        elif sections:
            source = f"server config c.{sections[-1]}.{name}"
        elif env_var:
            source = f"env {env_var}={os.environ[env_var]!r}"
        else:
            source = "its default"
        allowed = trait.help or f"expected {trait.info()}"
        reason = str(error).rstrip(".")
        return (
            f"Invalid option {name!r} for gp backend {backend!r} (from {source}): {reason}. {name}: {allowed}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The options' current values (JSON-friendly where the traits are)."""
        return {name: getattr(self, name) for name in self.option_names()}


def unknown_options_message(
    backend: str, unknown: Iterable[str], backend_options: Iterable[str], other_options: Iterable[str] = ()
) -> str:
    """The error for unknown option keys, listing every valid key: core's (``other_options``) and the backend's."""
    own = ", ".join(sorted(backend_options))
    core = ", ".join(sorted(other_options))
    if not core:
        valid = own or "none"
    elif own:
        valid = f"{core} (core), {own} ({backend})"
    else:
        valid = f"{core} (core; {backend} has none of its own)"
    return (
        f"Unknown option(s) {', '.join(map(repr, sorted(unknown)))} for gp backend {backend!r}; "
        f"valid options: {valid}"
    )


def inherited_server_env() -> dict[str, str]:
    """The server environment a kernel started on the server's own host may inherit: all but ``GP_*``.

    ``GP_*`` variables configure gp in the server and may hold secrets of any installed backend (e.g.
    ``GP_REMOTE_PWD``); they are never kernel data. What a kernel needs from gp, core puts in ``env``.
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("GP_")}
