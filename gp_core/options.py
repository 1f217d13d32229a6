"""Options: one place that decides precedence and validates values.

Precedence, highest first: the per-kernel ``kernel.json`` config, the server's traitlets config
(``c.GenericRemoteProvisioner.x`` / ``c.<BackendOptions subclass>.x``), a ``GP_*`` environment
variable, the default. traitlets gives the first two (assigned values beat config); ``@default``
methods built with :func:`env_default` give the third, read when the options object is built, not at
import. traitlets runs ``@validate`` only on assignment, never on a default, so
:meth:`BackendOptions.from_config` assigns every option's effective value once: a bad ``GP_*`` value is
refused up front like a bad ``kernel.json`` one.

Security options are a floor, not a default: a trait tagged ``.tag(policy=...)`` may be tightened by
``kernel.json`` but never loosened past the server's value (server config, ``GP_*`` env or default), as
users may be able to write their own kernelspecs (see :func:`apply_policy`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any, ClassVar

from traitlets import TraitError, TraitType
from traitlets.config import Config, Configurable
from traitlets.config.loader import DeferredConfig, LazyConfigValue
from traitlets.traitlets import DefaultHandler

from .errors import InvalidOptionError, ServerConfigError

#: GenericRemoteProvisioner's own options (its ``config=True`` traits; a test checks they match), kept
#: here so that loading a backend, which must not import jupyter_client, can refuse a backend option of
#: the same name: kernel.json and server config could not tell the two apart.
CORE_OPTION_NAMES = (
    "authorized_users",
    "backend",
    "launch_timeout",
    "max_launch_timeout",
    "poll_interval",
    "port_range",
    "tunnel_max_keep_alive",
    "tunneling",
    "unauthorized_users",
)
#: The values of a trait's ``policy`` tag (see :func:`apply_policy`).
POLICIES = ("deny", "allow", "cap")

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

    Each ``config=True`` trait is an option ``kernel.json`` may set beside ``"backend"``. A security option
    is tagged with a policy (``.tag(policy="deny" | "allow" | "cap")``, see :func:`apply_policy`): then
    kernel.json may only tighten the server's value.
    """

    #: Server environment variables that hold the backend's secrets (e.g. a password). Core drops them
    #: from the environment of every kernel this backend starts, even when a kernelspec names them.
    secret_env: ClassVar[tuple[str, ...]] = ()
    #: ``KERNEL_*`` variables of a start request the backend reads, each with what it does (docs/reference.md
    #: is generated from these and the options' ``env_default`` declarations).
    request_variables: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def option_names(cls) -> list[str]:
        return sorted(cls.class_trait_names(config=True))

    @classmethod
    def config_sections(cls) -> dict[str, list[str]]:
        """The server config sections that configure this class (``c.<Section>``), each with its options."""
        return {
            klass.__name__: klass.option_names()
            for klass in cls.__mro__
            if isinstance(klass, type) and issubclass(klass, BackendOptions) and klass is not BackendOptions
        }

    @classmethod
    def from_config(
        cls,
        backend: str,
        values: Mapping[str, Any],
        parent: Any = None,
        other_options: Iterable[str] = (),
        policy: bool = True,
    ) -> BackendOptions:
        """Validate ``values`` (the per-kernel options) and build the options object.

        Every option's effective value (kernel.json, server config, ``GP_*`` env or default) passes the
        trait's validators; a key of the server config sections (``c.<Section>.<key>``) that is no option
        is an error; a kernel.json value of a policy option may only tighten the server's (``policy=False``
        skips that, for spec installers, which write what they are told). ``other_options`` are the
        names valid beside the backend's (core's own), listed when a key is unknown.

        :raises InvalidOptionError: Naming the option, where its value came from and what is allowed.
        """
        owner = f"gp backend {backend!r}"
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise InvalidOptionError(
                unknown_options_message(backend, unknown, cls.option_names(), other_options)
            )
        try:
            with unknown_config_checked_by_gp():
                options = cls(parent=parent)
        except (TraitError, ValueError) as exc:
            raise config_error(cls, getattr(parent, "config", None) or Config(), owner, exc) from exc
        check_server_config(
            options, owner, cls.config_sections(), elsewhere={"GenericRemoteProvisioner": CORE_OPTION_NAMES}
        )
        assign_options(options, cls.option_names(), values, owner, policy=policy)
        return options

    def to_dict(self) -> dict[str, Any]:
        """The options' current values (JSON-friendly where the traits are)."""
        return {name: getattr(self, name) for name in self.option_names()}


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelled ``name``, if one is close (difflib)."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _suggestions(unknown: list[str], valid: Iterable[str]) -> str:
    valid = list(valid)
    hints = []
    for key in unknown:
        match = did_you_mean(key, valid)
        if match is not None:
            hints.append(repr(match) if len(unknown) == 1 else f"{match!r} for {key!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def unknown_options_message(
    backend: str, unknown: Iterable[str], backend_options: Iterable[str], other_options: Iterable[str] = ()
) -> str:
    """The error for unknown option keys, listing every valid key: core's (``other_options``) and the backend's."""
    unknown = sorted(unknown)
    backend_options, other_options = sorted(backend_options), sorted(other_options)
    own = ", ".join(backend_options)
    core = ", ".join(other_options)
    if not core:
        valid = own or "none"
    elif own:
        valid = f"{core} (core), {own} ({backend})"
    else:
        valid = f"{core} (core; {backend} has none of its own)"
    return (
        f"Unknown option(s) {', '.join(map(repr, unknown))} for gp backend {backend!r}"
        f"{_suggestions(unknown, [*backend_options, *other_options])}; valid options: {valid}"
    )


def _is_section_key(key: str) -> bool:
    """traitlets' rule: ``c.A.B`` with a capitalised ``B`` is a nested section, not an option."""
    return key[:1].isupper() and not key.startswith("_")


@contextlib.contextmanager
def unknown_config_checked_by_gp() -> Iterator[None]:
    """Silence traitlets' "Config option ... not recognized" warning: :func:`check_server_config` turns
    the same finding into an error naming the key, its section and the valid options."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Config option .* not recognized by", category=UserWarning)
        yield


def check_server_config(
    obj: Configurable,
    owner: str,
    sections: Mapping[str, Iterable[str]],
    elsewhere: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Refuse a key of server config section ``c.<section>`` that is no option there (traitlets only warns).

    ``sections`` maps each section configuring ``obj`` to its options; ``elsewhere`` maps other sections
    to theirs, so that an option set in the wrong section is pointed to the right one.

    :raises ServerConfigError: Naming the key, its section, the valid options and a close match.
    """
    for section, valid in sections.items():
        if section not in obj.config:
            continue
        valid = sorted(valid)
        keys = [
            key
            for key, value in obj.config[section].items()
            if not _is_section_key(key) and not isinstance(value, Config)
        ]
        unknown = sorted(set(keys) - set(valid))
        if not unknown:
            continue
        hints = [
            f"{key!r} is set as c.{other}.{key}"
            for key in unknown
            for other, names in (elsewhere or {}).items()
            if key in names
        ]
        suggestion = f" ({'; '.join(hints)})" if hints else _suggestions(unknown, valid)
        raise ServerConfigError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} in server config c.{section} ({owner})"
            f"{suggestion}; valid options in c.{section}: {', '.join(valid) or 'none'}"
        )


def server_source(obj: Configurable, name: str) -> str:
    """Where ``obj``'s value of option ``name`` comes from, kernel.json aside: config, env or default."""
    sections = [s for s in obj.section_names() if s in obj.config and name in obj.config[s]]
    env_var = next((var for var in option_env_vars(type(obj), name) if var in os.environ), None)
    if sections:
        return f"server config c.{sections[-1]}.{name}"
    if env_var:
        return f"env {env_var}={os.environ[env_var]!r}"
    return "its default"


def invalid_message(obj: Configurable, owner: str, name: str, source: str, error: Exception) -> str:
    """Name the option, where its value came from and what it allows (the trait's ``help``)."""
    trait = obj.traits()[name]
    allowed = trait.help or f"expected {trait.info()}"
    reason = str(error).rstrip(".")
    return f"Invalid option {name!r} for {owner} (from {source}): {reason}. {name}: {allowed}"


def config_error(cls: type[Configurable], config: Config, owner: str, error: Exception) -> ServerConfigError:
    """The error for server config that failed building ``cls``, naming the culprit ``c.<Section>.<name>``."""
    probe = cls.__new__(cls)  # traits with their validators, no config loaded
    traits = cls.class_traits(config=True)
    for section in reversed(cls.section_names()):  # the most specific section wins, as in traitlets
        if section not in config:
            continue
        for name, value in config[section].items():
            if name not in traits or isinstance(value, Config | LazyConfigValue):
                continue
            try:
                setattr(
                    probe, name, value.get_value(traits[name]) if isinstance(value, DeferredConfig) else value
                )
            except (TraitError, ValueError) as exc:
                source = f"server config c.{section}.{name} = {value!r}"
                return ServerConfigError(invalid_message(probe, owner, name, source, exc))
    return ServerConfigError(f"Invalid server config for {owner}: {error}")


def assign_options(
    obj: Configurable, names: Iterable[str], values: Mapping[str, Any], owner: str, policy: bool = True
) -> None:
    """Give each option ``names`` of ``obj`` (built from server config) its effective value.

    ``values`` are kernel.json's. traitlets runs ``@validate`` only on assignment, never on a default, so
    the server's value is assigned when it is used (no kernel.json value, or a policy option's floor),
    then the kernel.json value is: every error names the value's source. A policy option then gets
    :func:`apply_policy`'s combination of the two (unless ``policy`` is false).
    """
    traits = obj.traits()
    names = list(names)
    server: dict[str, Any] = {}
    requested: dict[str, Any] = {}
    for name in names:
        is_policy = policy and traits[name].metadata.get("policy") is not None
        if name not in values or is_policy:
            try:
                setattr(obj, name, getattr(obj, name))
            except (TraitError, ValueError) as exc:
                raise ServerConfigError(
                    invalid_message(obj, owner, name, server_source(obj, name), exc)
                ) from exc
            server[name] = getattr(obj, name)
        if name in values:
            try:
                setattr(obj, name, values[name])
            except (TraitError, ValueError) as exc:
                source = f"kernel.json value {values[name]!r}"
                raise InvalidOptionError(invalid_message(obj, owner, name, source, exc)) from exc
            requested[name] = getattr(obj, name)
    if not policy:
        return
    for name in names:
        if name in requested and traits[name].metadata.get("policy") is not None:
            merged = apply_policy(obj, name, server, requested, owner, values[name])
            if merged != requested[name]:
                setattr(obj, name, merged)


def _cap_level(traits: Mapping[str, TraitType[Any, Any]], values: Mapping[str, Any], name: str) -> float:
    meta = traits[name].metadata
    level = float((meta.get("parse") or float)(values[name]))
    if "unlimited" in meta and level == meta["unlimited"]:
        fallback = meta.get("fallback")
        return _cap_level(traits, values, fallback) if fallback else math.inf
    return level


def _glob_tokens(pattern: str) -> list[tuple[str, str]]:
    """fnmatch's syntax as tokens: ("*", ""), ("?", ""), ("class", "[...]") or ("char", c)."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char in "*?":
            if not (char == "*" and tokens and tokens[-1][0] == "*"):
                tokens.append((char, ""))
            i += 1
            continue
        if char == "[":
            end = i + 1
            end += pattern[end : end + 1] == "!"
            end += pattern[end : end + 1] == "]"
            end = pattern.find("]", end)
            if end != -1:
                tokens.append(("class", pattern[i : end + 1]))
                i = end + 1
                continue
        tokens.append(("char", char))
        i += 1
    return tokens


def pattern_within(allowed: str, pattern: str) -> bool:
    """Whether every name the fnmatch ``pattern`` admits (an ``allowed_images`` entry, say) is admitted by
    the fnmatch pattern ``allowed``: the ``covers`` of an ``allow`` policy whose entries are patterns.

    Sound, not complete: ``allowed``'s ``*`` may stand for any part of ``pattern``, its ``?`` for one
    character or ``?``/class of ``pattern``, its class for a character in it, its characters for
    themselves; a ``*`` of ``pattern`` needs a ``*`` of ``allowed``. So ``gp/kernel-r:*`` is within
    ``gp/kernel-*:*``, ``a*c`` is not within ``a?c``, and a kernel.json cannot widen allowed_images.
    """
    outer, inner = _glob_tokens(allowed), _glob_tokens(pattern)

    @functools.cache
    def within(a: int, p: int) -> bool:
        if a == len(outer):
            return p == len(inner)
        kind, text = outer[a]
        if kind == "*":
            return within(a + 1, p) or (p < len(inner) and within(a, p + 1))
        if p == len(inner):
            return False
        if kind == "?":
            fits = inner[p][0] != "*"
        elif kind == "class":
            fits = inner[p][0] == "char" and fnmatchcase(inner[p][1], text)
        else:
            fits = inner[p] == outer[a]
        return fits and within(a + 1, p + 1)

    return within(0, 0)


def apply_policy(
    obj: Configurable,
    name: str,
    server: Mapping[str, Any],
    requested: Mapping[str, Any],
    owner: str,
    raw: Any = None,
) -> Any:
    """Combine the server's value of policy option ``name`` (``server[name]``: server config, ``GP_*`` env
    or default, validated) with kernel.json's (``requested[name]``, validated; ``raw`` as written).

    The trait's ``policy`` tag says how; kernel.json may tighten, never loosen:

    - ``"deny"`` (a list of what is refused): the union of both lists; a kernel.json list adds to the
      server's, it cannot take anything off it.
    - ``"allow"`` (a list of what is permitted): kernel.json's list must be within the server's (each
      entry equal to one of the server's, or ``covers(server_entry, entry)`` when the tag gives that
      function, e.g. fnmatch patterns). An empty server list allows nothing beyond it, unless the tag
      says ``empty_allows_all=True`` (then the server's empty list admits any kernel.json list, and an
      empty kernel.json list under a non-empty server list is a loosening).
    - ``"cap"`` (a number, or what ``parse`` turns into one): kernel.json may only lower it. The tag's
      ``unlimited`` value (e.g. ``0``) means no cap, or, with ``fallback="other_option"``, that option's
      cap (which must be a policy option too).

    :raises InvalidOptionError: When kernel.json's value would loosen the server's, naming both.
    """
    traits = obj.traits()
    meta = traits[name].metadata
    floor, value = server[name], requested[name]
    policy = meta["policy"]
    if policy == "deny":
        return [*floor, *(item for item in value if item not in floor)]
    if policy == "allow":
        if not floor and meta.get("empty_allows_all"):
            return value
        covers = meta.get("covers") or (lambda allowed, item: allowed == item)
        if not value and meta.get("empty_allows_all"):
            why = "an empty list would allow anyone; kernel.json may only narrow the server's list"
        else:
            outside = [item for item in value if not any(covers(allowed, item) for allowed in floor)]
            if not outside:
                return value
            why = f"{', '.join(map(repr, outside))} not allowed by the server; kernel.json may only narrow its list"
    elif policy == "cap":
        if _cap_level(traits, {**server, **requested}, name) <= _cap_level(traits, server, name):
            return value
        why = "kernel.json may only lower it"
    else:
        raise InvalidOptionError(
            f"option {name!r} of {owner} has an unknown policy {policy!r}; use one of {POLICIES}"
        )
    raise InvalidOptionError(
        f"Invalid option {name!r} for {owner} (from kernel.json value {raw if raw is not None else value!r}): "
        f"it would loosen the server's {name}={floor!r} (from {server_source(obj, name)}): {why}. "
        f"{name} is a security policy: the server's configuration is the floor"
    )


def inherited_server_env() -> dict[str, str]:
    """The server environment a kernel started on the server's own host may inherit: all but ``GP_*``.

    ``GP_*`` variables configure gp in the server and may hold secrets of any installed backend (e.g.
    ``GP_REMOTE_PWD``); they are never kernel data. What a kernel needs from gp, core puts in ``env``.
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("GP_")}
