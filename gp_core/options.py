"""Options: one place that decides precedence and validates values.

Precedence, highest first: the per-kernel ``kernel.json`` config, the server's traitlets config
(``c.GenericRemoteProvisioner.x`` / ``c.<BackendOptions subclass>.x``), a ``GP_*`` environment
variable, the default. traitlets gives the first two (constructor kwargs beat config); ``@default``
methods built with :func:`env_default` give the third, read when the option is first used, not at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from traitlets import TraitError
from traitlets.config import Configurable

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

    return read


class BackendOptions(Configurable):
    """Base class of a backend's options (see the ``declare_options`` hook).

    Each ``config=True`` trait is an option ``kernel.json`` may set beside ``"backend"``.
    """

    @classmethod
    def option_names(cls) -> list[str]:
        return sorted(cls.class_trait_names(config=True))

    @classmethod
    def from_config(cls, backend: str, values: Mapping[str, Any], parent: Any = None) -> BackendOptions:
        """Validate ``values`` (the per-kernel options) and build the options object."""
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise InvalidOptionError(
                f"Unknown option(s) {', '.join(map(repr, unknown))} for gp backend {backend!r}; "
                f"valid options: {', '.join(cls.option_names()) or 'none'}"
            )
        try:
            return cls(parent=parent, **values)
        except TraitError as exc:
            raise InvalidOptionError(f"Invalid option for gp backend {backend!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The options' current values (JSON-friendly where the traits are)."""
        return {name: getattr(self, name) for name in self.option_names()}
