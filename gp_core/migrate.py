"""``gp migrate``: convert Gateway Provisioners 0.5.0 kernelspecs and server config to gp.

A kernelspec is converted by running gp's own spec installer for its backend (``jupyter docker-spec
install`` etc., found through its console script) with the flags equivalent to what the anchor's
installer wrote, so the result is what a fresh gp install would write and has passed the same
validation; options the installer has no flag for are added to its config, and the whole spec is then
loaded through :class:`~gp_core.provisioner.GenericRemoteProvisioner`'s option validation. For a backend
whose gp installer is not installed, the spec is converted by rule and reported as not validated.

A server config file is read without running it: a ``.json`` file is JSON, and a ``.py`` file is parsed
with :mod:`ast` (executing a config file runs arbitrary code: imports, environment look-ups, anything,
and may behave differently on the machine doing the migration). Top-level ``c.<AnchorClass>.<trait> =
<expr>`` statements are converted: the rewritten file comments them out and appends the gp
equivalents, carrying each value's source text as written (so an expression such as
``os.environ["IMAGE"]`` still works). Anything else naming an anchor class is reported for hand editing.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import shlex
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from . import _anchor
from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command
from .errors import GPError, InvalidOptionError
from .launcher import LAUNCHER_PATH, PLACEHOLDER_ARGS

BACKUP_SUFFIX = ".gateway-provisioners"
_RESOURCE_FILES = re.compile(r"logo-.*\.(png|svg)|kernel\.js|kernel\.css")  # fullmatch
_ANCHOR_PLACEHOLDER = re.compile(r"\$\{[a-z_]+\}")


@dataclass
class Note:
    """One line of the report: ``what`` (a name or value) and ``detail`` (what happened, or why not)."""

    what: str
    detail: str


@dataclass
class SpecResult:
    source: str
    name: str
    status: str = "converted"  #: converted | skipped | failed
    provisioner: str = ""
    backend: str = ""
    output: str = ""
    validated: bool = False
    equivalent_command: str = ""
    changed: list[Note] = field(default_factory=list)
    not_carried: list[Note] = field(default_factory=list)
    rebuild: list[Note] = field(default_factory=list)
    #: What the server's configuration must allow for the converted spec (gp's security policies).
    server_config: list[Note] = field(default_factory=list)
    error: str = ""


@dataclass
class ConfigResult:
    source: str
    output: str = ""
    status: str = "converted"  #: converted | unchanged | failed
    changed: list[Note] = field(default_factory=list)
    not_carried: list[Note] = field(default_factory=list)
    error: str = ""


@dataclass
class Report:
    kernelspecs: list[SpecResult] = field(default_factory=list)
    config: ConfigResult | None = None

    @property
    def failed(self) -> bool:
        return any(s.status == "failed" for s in self.kernelspecs) or (
            self.config is not None and self.config.status == "failed"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- kernelspecs


def find_kernelspecs(source: Path) -> list[Path]:
    """``source`` itself when it holds a kernel.json, else its subdirectories that do; a bare name that is no
    path is looked up as an installed kernelspec (``jupyter kernelspec list``)."""
    if (source / "kernel.json").is_file():
        return [source]
    if not source.exists() and len(source.parts) == 1:
        from jupyter_client.kernelspec import KernelSpecManager

        installed = KernelSpecManager().find_kernel_specs()
        if str(source) in installed:
            return [Path(installed[str(source)])]
    if not source.is_dir():
        raise InvalidOptionError(
            f"{source} is neither a kernelspec directory, a directory of kernelspecs nor an installed kernelspec's name"
        )
    found = sorted(p.parent for p in source.glob("*/kernel.json"))
    if not found:
        raise InvalidOptionError(f"{source} holds no kernelspec (no kernel.json in it or its subdirectories)")
    return found


def _flag_values(argv: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for index, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            values[name] = value
        elif arg.startswith("--") and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            values[arg] = argv[index + 1]
    return values


def _gp_installer(command: str) -> type | None:
    """gp's install app behind ``jupyter-<command>`` (e.g. docker-spec), if a gp distribution provides it."""
    from .specapp import InstallSpecApp

    for ep in entry_points(group="console_scripts", name=f"jupyter-{command}"):
        module, _, attribute = ep.value.partition(":")
        try:
            app_class: Any = importlib.import_module(module)
            for part in (
                attribute.split(".")[:-1] if attribute.endswith("launch_instance") else attribute.split(".")
            ):
                app_class = getattr(app_class, part)
            install = app_class.subcommands["install"][0]
            if isinstance(install, str):
                mod, _, cls = install.rpartition(".")
                install = getattr(importlib.import_module(mod), cls)
        except Exception:
            continue
        if isinstance(install, type) and issubclass(install, InstallSpecApp):
            return install
    return None


def _installed_backend(name: str) -> Any:
    from .plugins import get_backend, installed_backends

    return get_backend(name) if name in installed_backends() else None


def _spark_settings(env: dict[str, str]) -> dict[str, str]:
    """The Spark master, extra spark-submit options and PYSPARK_PYTHON of an anchor run.sh spec."""
    opts = shlex.split(env.get("SPARK_OPTS", ""), posix=True) if env.get("SPARK_OPTS") else []
    master, extra, skip = "", [], False
    for index, word in enumerate(opts):
        if skip:
            skip = False
            continue
        if word in ("--master", "--deploy-mode", "--name"):
            if word == "--master" and index + 1 < len(opts):
                master = opts[index + 1]
            skip = True
            continue
        if "KERNEL_EXTRA_SPARK_OPTS" in word:
            continue
        extra.append(word)
    return {
        "master": master,
        "extra": shlex.join(extra) if extra else "",
        "python": env.get("PYSPARK_PYTHON", ""),
    }


#: Backends whose gp installer's flags the conversion knows (their installers exist now).
_INSTALLER_BACKENDS = frozenset({"docker", "docker-swarm", "ssh"})

#: What the anchor's installers substitute by default, for a kernel.json its --yarn-endpoint bug left
#: unfinalised (the exception was swallowed before the substitution).
_ANCHOR_DEFAULTS = {
    "${language}": "python",
    "${spark_home}": "/opt/spark",
    "${extra_spark_opts}": "",
    "${py4j_path}": "",
    "${ipykernel_subclass_name}": "ipykernel.ipkernel.IPythonKernel",
    "${spark_init_mode}": "lazy",
}


def _finalise(old: dict[str, Any], spec_dir: Path, result: SpecResult) -> dict[str, Any]:
    """Fill the template placeholders an unfinalised anchor kernel.json still holds, as its installer would."""
    text = json.dumps(old)
    leftovers = sorted(set(_ANCHOR_PLACEHOLDER.findall(text)))
    if not leftovers:
        return old
    values = {**_ANCHOR_DEFAULTS, "${display_name}": spec_dir.name, "${install_dir}": str(spec_dir)}
    filled = {k: v for k, v in values.items() if k in leftovers}
    for placeholder, value in filled.items():
        text = text.replace(placeholder, json.dumps(value)[1:-1])
    result.changed.append(
        Note(
            "unfinalised kernel.json",
            f"the anchor's installer left {', '.join(leftovers)} in it (its --yarn-endpoint bug); filled "
            + ", ".join(f"{k}={v!r}" for k, v in filled.items())
            + " as it would have",
        )
    )
    unknown = [p for p in leftovers if p not in filled]
    if unknown:
        result.not_carried.append(
            Note(
                ", ".join(unknown),
                "left unfilled by the anchor's installer and unknown here: set them by hand",
            )
        )
    return json.loads(text)


def convert_kernelspec(
    spec_dir: Path, staging: Path
) -> tuple[SpecResult, dict[str, Any] | None, Path | None]:
    """Convert one kernelspec into ``staging/<name>``; returns the report, the new kernel.json and its dir."""
    from .specapp import DEFAULT_KERNEL_CLASS

    result = SpecResult(source=str(spec_dir), name=spec_dir.name)
    try:
        old = json.loads((spec_dir / "kernel.json").read_text())
    except (OSError, ValueError) as exc:
        result.status, result.error = "failed", f"cannot read {spec_dir / 'kernel.json'}: {exc}"
        return result, None, None
    provisioner = (old.get("metadata") or {}).get("kernel_provisioner") or {}
    result.provisioner = name = str(provisioner.get("provisioner_name", ""))
    if name == _anchor.GP_PROVISIONER:
        result.status, result.error = "skipped", "already a gp kernelspec"
        return result, None, None
    anchor = _anchor.PROVISIONERS.get(name)
    if anchor is None:
        result.status = "skipped"
        result.error = f"not a {_anchor.ANCHOR} kernelspec (provisioner {name or 'none'!r})"
        return result, None, None
    if anchor.backend is None:
        result.status, result.error = "failed", f"{name}: no gp equivalent: {anchor.note}"
        return result, None, None
    result.backend = backend = anchor.backend
    old = _finalise(old, spec_dir, result)
    language = str(old.get("language", "python")).lower()
    if language != "python":
        result.status = "failed"
        result.error = f"language {language!r}: gp ships a Python launcher only (the anchor's R and Scala launchers have no gp equivalent)"
        return result, None, None
    old_config: dict[str, Any] = dict(provisioner.get("config") or {})
    argv: list[str] = [str(a) for a in old.get("argv") or []]
    flags = _flag_values(argv)
    env: dict[str, str] = {str(k): str(v) for k, v in (old.get("env") or {}).items()}
    uses_run_sh = bool(argv) and argv[0].endswith("/run.sh")

    # --- the options: core ones keep their names, the backend's are renamed or dropped
    core_values: dict[str, Any] = {}
    backend_values: dict[str, Any] = {}
    renames = _anchor.BACKEND_TRAITS.get(backend, {})
    dropped = _anchor.DROPPED_TRAITS.get(backend, {})
    for key, value in old_config.items():
        if key in _anchor.CORE_TRAITS:
            core_values[key] = sorted(value) if isinstance(value, set | tuple) else value
        elif key in renames:
            backend_values[renames[key]] = value
            if renames[key] != key:
                result.changed.append(Note(f"config {key}", f"is now {renames[key]!r}"))
        elif key in dropped:
            result.not_carried.append(Note(f"config {key}={value!r}", dropped[key]))
        else:
            result.not_carried.append(
                Note(f"config {key}={value!r}", f"{_anchor.ANCHOR} 0.5.0 had no such option")
            )
    result.changed.append(
        Note(f"provisioner_name {name!r}", f'is now {_anchor.GP_PROVISIONER!r} with "backend": {backend!r}')
    )
    if "--transport-encryption" in argv or "supported_encryption" in (old.get("metadata") or {}):
        result.not_carried.append(
            Note("--transport-encryption {transport_encryption}, metadata.supported_encryption",
                 _anchor.DROPPED_ARGV["--transport-encryption"])
        )  # fmt: skip

    kernel_class = flags.get("--kernel-class-name", DEFAULT_KERNEL_CLASS)
    spark_mode = flags.get("--spark-context-initialization-mode", "")
    cluster_type = flags.get("--cluster-type", "")

    # --- the installer's flags (what `jupyter <x>-spec install` would be given)
    installer_args = [
        f"--kernel-name={spec_dir.name}",
        f"--display-name={old.get('display_name') or spec_dir.name}",
        f"--language={language}",
        f"--ipykernel-subclass-name={kernel_class}",
    ]
    for user in core_values.get("authorized_users", []):
        installer_args.append(f"--authorized-users={user}")
    for user in core_values.get("unauthorized_users", []):
        installer_args.append(f"--unauthorized-users={user}")
    # Explicit, so the migrating shell's GP_PORT_RANGE / GP_LAUNCH_TIMEOUT (the installers' defaults) stay out.
    installer_args.append(f"--port-range={core_values.get('port_range', '0..0')}")
    installer_args.append(f"--launch-timeout={core_values.get('launch_timeout', 30)}")
    extra_config: dict[str, Any] = {}
    if backend in ("docker", "docker-swarm"):
        if "image" in backend_values:
            installer_args.append(f"--image-name={backend_values.pop('image')}")
        if backend == "docker-swarm":
            installer_args.append("--swarm")
    elif backend == "ssh":
        for host in backend_values.pop("remote_hosts", []) or []:
            installer_args.append(f"--remote-hosts={host}")
        if uses_run_sh:
            spark = _spark_settings(env)
            installer_args += ["--spark", f"--spark-init-mode={spark_mode or 'lazy'}"]
            if spark["master"]:
                installer_args.append(f"--spark-master={spark['master']}")
            if env.get("SPARK_HOME"):
                installer_args.append(f"--spark-home={env['SPARK_HOME']}")
            if spark["extra"]:
                installer_args.append(f"--extra-spark-opts={spark['extra']}")
            if spark["python"]:
                installer_args.append(f"--python={spark['python']}")
            result.changed.append(
                Note(
                    "bin/run.sh + SPARK_OPTS",
                    "replaced by PYSPARK_SUBMIT_ARGS (client mode), as gp's ssh-spec --spark writes",
                )
            )
            if "KERNEL_EXTRA_SPARK_OPTS" in env.get("SPARK_OPTS", ""):
                result.not_carried.append(
                    Note("${KERNEL_EXTRA_SPARK_OPTS} in SPARK_OPTS",
                         "gp-ssh does not splice request values into spark-submit options (no shell evaluates them)")
                )  # fmt: skip
        elif argv:
            installer_args.append(f"--python={argv[0]}")
    extra_config.update(backend_values)

    # gp's installer is used where this module knows its flags: docker-spec and ssh-spec (Spark kernels of
    # the other backends run through run.sh, which their installers may not write). The rest is by rule.
    installer = (
        _gp_installer(anchor.installer) if anchor.installer and backend in _INSTALLER_BACKENDS else None
    )
    staged = staging / spec_dir.name
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    if installer is not None and anchor.installer is not None:
        result.equivalent_command = shlex.join(["jupyter", anchor.installer, "install", *installer_args])
        app = installer()
        try:
            app.initialize(installer_args)
            spec = app.build_spec(staged)
        except (GPError, ValueError, LookupError) as exc:
            result.status, result.error = "failed", f"gp's installer refused the equivalent options: {exc}"
            return result, None, None
        written_backend = spec["metadata"]["kernel_provisioner"]["config"].get("backend")
        if written_backend != backend:
            result.status = "failed"
            result.error = (
                f"gp's {anchor.installer} installer wrote backend {written_backend!r}, not {backend!r}"
            )
            return result, None, None
        spec["metadata"]["kernel_provisioner"]["config"].update(extra_config)
        if "launch_timeout" not in core_values:  # the server's launch timeout applies, as it did
            spec["metadata"]["kernel_provisioner"]["config"].pop("launch_timeout", None)
        if backend == "ssh" and cluster_type and not uses_run_sh and "--cluster-type" not in spec["argv"]:
            spec["argv"] += ["--cluster-type", cluster_type]
        unmatched_env = {k: v for k, v in env.items() if k not in spec.get("env", {}) and not uses_run_sh}
        spec.setdefault("env", {}).update(unmatched_env)
    else:
        spec = _convert_by_rule(old, backend, argv, env, core_values, extra_config, staged, spec_dir, result)
        if _installed_backend(backend) is None:
            result.not_carried.append(
                Note(
                    f"validation against gp backend {backend!r}",
                    f"{anchor.distribution} is not installed: converted by rule, not validated; run gp "
                    "migrate again once it is installed",
                )
            )
    for key in ("interrupt_mode",):
        if key in old:
            spec[key] = old[key]
    dropped_metadata = {"kernel_provisioner", "supported_encryption"}
    for key, value in (old.get("metadata") or {}).items():  # the user's own metadata stays
        if key not in dropped_metadata and key not in spec["metadata"]:
            spec["metadata"][key] = value
    for path in spec_dir.iterdir():
        if path.is_file() and _RESOURCE_FILES.fullmatch(path.name) and not (staged / path.name).exists():
            shutil.copy2(path, staged / path.name)

    if _installed_backend(backend) is not None:
        from traitlets.config import Config

        needed = policy_requirements(spec)
        try:
            validate_kernelspec(spec, staged, Config(needed))
        except (GPError, ValueError, LookupError) as exc:
            result.status, result.error = "failed", f"the converted spec does not validate in gp: {exc}"
            return result, None, None
        result.validated = True
        for section, options in needed.items():
            for name, values in options.items():
                result.server_config.append(
                    Note(f"c.{section}.{name}", f"must allow {', '.join(map(str, values))} (with what it allows "
                         f"now): in gp a kernel.json "
                         f"{name} may only narrow the server's (a security policy; the anchor took any per-kernel "
                         "value). Set it in the server config or its GP_* variable")
                )  # fmt: skip

    image = backend_values.get("image") or old_config.get("image_name")
    if backend in ("docker", "docker-swarm", "k8s", "spark-operator"):
        result.rebuild.append(
            Note(f"image {image or '(the server GP_IMAGE_NAME)'}",
                 f"it carries {_anchor.ANCHOR}' launcher ({_anchor.ANCHOR_IMAGE_LAUNCHER}); {_anchor.REBUILD_IMAGE}")
        )  # fmt: skip
        if old_config.get("executor_image_name") and backend in ("k8s", "spark-operator"):
            result.rebuild.append(
                Note(f"executor image {old_config['executor_image_name']}", _anchor.REBUILD_IMAGE)
            )
    elif backend == "ssh":
        result.rebuild.append(
            Note("remote hosts", "nothing to rebuild: gp-ssh copies its launcher to a host that lacks it "
                 "(upload_launcher); the hosts' python needs ipykernel and pycryptodomex>=3.21")
        )  # fmt: skip
    elif backend == "yarn":
        result.rebuild.append(
            Note("YARN nodes' python", "needs pycryptodomex>=3.21 (gp's launcher) as well as ipykernel")
        )
    return result, spec, staged


def _convert_by_rule(
    old: dict[str, Any],
    backend: str,
    argv: list[str],
    env: dict[str, str],
    core_values: dict[str, Any],
    backend_values: dict[str, Any],
    staged: Path,
    spec_dir: Path,
    result: SpecResult,
) -> dict[str, Any]:
    """A spec for a backend whose gp installer is not installed: gp's launcher, the anchor's other files."""
    tail = [a for a in argv if a != "{transport_encryption}" and a != "--transport-encryption"]
    carried = []
    flags = _flag_values(tail)
    for flag in _anchor.CARRIED_LAUNCHER_FLAGS:
        if flag in flags:
            carried += [flag, flags[flag]]
    if argv and argv[0].endswith("/run.sh"):
        # spark-submit through the anchor's run.sh, which runs scripts/launch_ipykernel.py: keep the script,
        # swap the launcher for gp's (it takes the same flags).
        (staged / "bin").mkdir()
        shutil.copy2(spec_dir / "bin" / "run.sh", staged / "bin" / "run.sh")
        (staged / "scripts").mkdir()
        shutil.copy2(LAUNCHER_PATH, staged / "scripts" / LAUNCHER_PATH.name)
        new_argv = ["{resource_dir}/bin/run.sh", *PLACEHOLDER_ARGS, *carried]
        result.changed.append(
            Note(
                "scripts/launch_ipykernel.py",
                "is gp's launcher; bin/run.sh and its env are the anchor's, unchanged",
            )
        )
    else:
        new_argv = ["python3", _anchor.GP_IMAGE_LAUNCHER, *PLACEHOLDER_ARGS, *carried]
        result.changed.append(
            Note("argv", f"runs gp's launcher inside the kernel's image ({_anchor.GP_IMAGE_LAUNCHER}), not the "
                 "anchor's server-side launch script")
        )  # fmt: skip
    config = {"backend": backend, **core_values, **backend_values}
    if "port_range" in config:
        from .protocol import normalize_port_range

        config["port_range"] = normalize_port_range(str(config["port_range"]))
    if "launch_timeout" in config:
        config["launch_timeout"] = float(config["launch_timeout"])
    metadata = {
        k: v
        for k, v in (old.get("metadata") or {}).items()
        if k not in ("kernel_provisioner", "supported_encryption")
    }
    metadata["kernel_provisioner"] = {"provisioner_name": _anchor.GP_PROVISIONER, "config": config}
    return {
        "argv": new_argv,
        "display_name": old.get("display_name") or spec_dir.name,
        "language": "python",
        "interrupt_mode": old.get("interrupt_mode", "signal"),
        "env": env,
        "metadata": metadata,
    }


def validate_kernelspec(spec: dict[str, Any], spec_dir: Path, server: Any = None) -> None:
    """Load ``spec``'s provisioner config through gp's option validation (every key, every value), as a
    server with traitlets config ``server`` (default: none; the ``GP_*`` environment applies) would.

    :raises InvalidOptionError: Naming what is wrong.
    """
    from jupyter_client.kernelspec import KernelSpec
    from traitlets.config import Config, Configurable

    from .provisioner import GenericRemoteProvisioner

    provisioner = spec.get("metadata", {}).get("kernel_provisioner", {})
    if provisioner.get("provisioner_name") != _anchor.GP_PROVISIONER:
        raise InvalidOptionError(
            f"provisioner_name is {provisioner.get('provisioner_name')!r}, not {_anchor.GP_PROVISIONER!r}"
        )
    kernel_spec = KernelSpec(
        resource_dir=str(spec_dir), **{k: v for k, v in spec.items() if k in KernelSpec.class_trait_names()}
    )
    GenericRemoteProvisioner(
        kernel_id="gp-migrate-check",
        kernel_spec=kernel_spec,
        parent=Configurable(config=server or Config()),
        **dict(provisioner.get("config", {})),
    )


def policy_requirements(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The server settings a converted spec's "allow" policy values need (gp's kernel.json may only narrow
    the server's list of, e.g., remote_hosts; the anchor took any per-kernel list): section -> option -> value."""
    from .provisioner import GenericRemoteProvisioner

    config = dict(spec.get("metadata", {}).get("kernel_provisioner", {}).get("config", {}))
    backend = _installed_backend(str(config.get("backend", "")))
    if backend is None:
        return {}
    # What this server allows now (its GP_* environment and defaults): an empty list allows anything.
    server_core = GenericRemoteProvisioner(backend=backend.name)
    server_backend = backend.make_options({}) if backend.options_class is not None else None
    needed: dict[str, dict[str, Any]] = {}
    for name, value in config.items():
        for cls, server in ((GenericRemoteProvisioner, server_core), (backend.options_class, server_backend)):
            trait = cls.class_traits().get(name) if cls is not None else None
            if trait is None or trait.metadata.get("policy") != "allow" or not value:
                continue
            allowed = list(getattr(server, name, []) or [])
            if allowed and not set(value) <= set(allowed):
                needed.setdefault(cls.__name__, {})[name] = sorted(set(allowed) | set(value))
    return needed


# ---------------------------------------------------------------------------------------------- server config


@dataclass
class ConfigItem:
    section: str
    trait: str
    source: str  #: the value's source text (Python) or JSON text
    value: Any = None  #: the literal value, when it is one
    literal: bool = True
    lines: tuple[int, int] | None = None  #: 1-based line span of the statement (.py)


def read_anchor_config(path: Path) -> tuple[list[ConfigItem], list[Note], str]:
    """The anchor sections' assignments in a server config file, what could not be read, and its text."""
    text = path.read_text()
    anchor_classes = set(_anchor.anchor_config_classes())
    items: list[ConfigItem] = []
    problems: list[Note] = []
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidOptionError(f"{path} is not valid JSON: {exc}") from None
        for section, traits in (data or {}).items():
            if section in anchor_classes and isinstance(traits, dict):
                for trait, value in traits.items():
                    items.append(ConfigItem(section, trait, json.dumps(value), value))
        return items, problems, text
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise InvalidOptionError(f"{path} is not valid Python: {exc}") from None
    top_level: set[int] = set()
    for statement in tree.body:
        target = _anchor_target(statement, anchor_classes)
        if target is None:
            continue
        top_level.add(id(statement))
        assert isinstance(statement, ast.Assign)
        source = ast.get_source_segment(text, statement.value) or ""
        try:
            value, literal = ast.literal_eval(statement.value), True
        except ValueError:
            value, literal = None, False
        items.append(
            ConfigItem(
                *target, source, value, literal, (statement.lineno, statement.end_lineno or statement.lineno)
            )
        )
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and id(node) in top_level:
            continue
        if isinstance(node, ast.Attribute) and node.attr in anchor_classes and _is_config_name(node.value):
            problems.append(
                Note(f"line {node.lineno}: c.{node.attr}...",
                     "not a top-level 'c.Class.trait = value' statement: convert it by hand (see docs/migration.md)")
            )  # fmt: skip
    # an Attribute inside a converted statement was skipped above only for the statement node itself
    converted_lines = {
        line for item in items if item.lines for line in range(item.lines[0], item.lines[1] + 1)
    }
    problems = [p for p in problems if int(p.what.split(":")[0].split()[1]) not in converted_lines]
    return items, _unique(problems), text


def _is_config_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("c", "config")


def _anchor_target(statement: ast.stmt, anchor_classes: set[str]) -> tuple[str, str] | None:
    if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
        return None
    target = statement.targets[0]
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Attribute)
        and target.value.attr in anchor_classes
        and _is_config_name(target.value.value)
    ):
        return target.value.attr, target.attr
    return None


def _unique(notes: list[Note]) -> list[Note]:
    seen: set[tuple[str, str]] = set()
    return [n for n in notes if (n.what, n.detail) not in seen and not seen.add((n.what, n.detail))]  # type: ignore[func-returns-value]


def _backend_section(backend: str, static: str | None) -> str | None:
    if static:
        return static
    loaded = _installed_backend(backend)
    return loaded.options_class.__name__ if loaded is not None and loaded.options_class else None


def map_config_item(item: ConfigItem) -> tuple[str, str] | Note:
    """The gp ``(section, trait)`` for one anchor config assignment, or a Note saying why there is none."""
    section, trait = item.section, item.trait
    what = f"c.{section}.{trait}"
    if section == _anchor.RESPONSE_MANAGER:
        return Note(what, "the anchor's ResponseManager never read server config (only GP_RESPONSE_* variables, "
                    "which gp reads too); in gp this is c.ResponseListener.<option>")  # fmt: skip
    if trait in _anchor.CORE_TRAITS:
        return "GenericRemoteProvisioner", trait
    if section in _anchor.SHARED_CONFIG_CLASSES:
        if section == "ContainerProvisionerBase" and trait == "image_name":
            return "DockerOptions", "image"
        if section == "ContainerProvisionerBase" and trait == "executor_image_name":
            return Note(what, "docker kernels have no Spark executors; for k8s and spark-operator kernels set "
                        "their backends' executor_image option (gp-k8s, gp-sparkop)")  # fmt: skip
        return Note(what, f"{_anchor.ANCHOR} 0.5.0 had no such shared option")
    anchor = _anchor.provisioner_for_config_class(section)
    if anchor is None or anchor.backend is None:
        return Note(what, anchor.note if anchor else "not an anchor class")
    if trait in _anchor.DROPPED_TRAITS.get(anchor.backend, {}):
        return Note(what, _anchor.DROPPED_TRAITS[anchor.backend][trait])
    gp_trait = _anchor.BACKEND_TRAITS.get(anchor.backend, {}).get(trait)
    if gp_trait is None:
        return Note(what, f"{_anchor.ANCHOR} 0.5.0's {section} had no such option")
    gp_section = _backend_section(anchor.backend, anchor.options_section)
    if gp_section is None:
        return Note(what, f"gp backend {anchor.backend!r} ({anchor.distribution}) is not installed, so its option "
                    f"section is unknown here; set its {gp_trait!r} option once it is (docs/migration.md)")  # fmt: skip
    return gp_section, gp_trait


def _gp_value_source(item: ConfigItem) -> str:
    if item.literal and isinstance(item.value, set | frozenset | tuple):
        return repr(sorted(item.value))
    if item.literal and item.trait == "port_range" and isinstance(item.value, str):
        from .protocol import normalize_port_range

        return repr(normalize_port_range(item.value))
    return item.source


def convert_config(path: Path) -> tuple[ConfigResult, str | None]:
    """Convert ``path``; returns the report and the new file text (None: nothing to change)."""
    result = ConfigResult(source=str(path))
    items, problems, text = read_anchor_config(path)
    result.not_carried.extend(problems)
    gp_items: dict[tuple[str, str], tuple[ConfigItem, str]] = {}
    for item in items:
        mapped = map_config_item(item)
        if isinstance(mapped, Note):
            result.not_carried.append(mapped)
            continue
        source = _gp_value_source(item)
        earlier = gp_items.get(mapped)
        if earlier is not None and earlier[1] != source:
            result.not_carried.append(
                Note(f"c.{item.section}.{item.trait} = {item.source}",
                     f"c.{earlier[0].section}.{earlier[0].trait} = {earlier[0].source} also maps to "
                     f"c.{mapped[0]}.{mapped[1]}, which gp's server config sets once for every backend: "
                     "set it per kernel in those kernels' kernel.json instead")
            )  # fmt: skip
            continue
        gp_items[mapped] = (item, source)
        detail = f"is now c.{mapped[0]}.{mapped[1]}"
        if mapped[0] == "GenericRemoteProvisioner" and item.section not in _anchor.SHARED_CONFIG_CLASSES:
            detail += f" (for every gp backend, not only {item.section}'s kernels)"
        elif mapped[0] == "DockerOptions":
            detail += " (also the docker-swarm default, unless c.DockerSwarmOptions sets it)"
        if not item.literal:
            detail += "; its value is an expression, carried as written"
        result.changed.append(Note(f"c.{item.section}.{item.trait}", detail))
    if not items and not problems:
        result.status = "unchanged"
        return result, None
    _check_config_values(gp_items, result)
    if result.status == "failed":
        return result, None
    if path.suffix == ".json":
        data = json.loads(text)
        for section in _anchor.anchor_config_classes():
            data.pop(section, None)
        for (section, trait), (item, _source) in gp_items.items():
            value = _gp_literal(item)
            data.setdefault(section, {})[trait] = value
        return result, json.dumps(data, indent=2) + "\n"
    lines = text.splitlines(keepends=True)
    for item in sorted(items, key=lambda i: i.lines or (0, 0), reverse=True):
        if not item.lines:
            continue
        first, last = item.lines
        mapped = map_config_item(item)
        why = (
            f"now c.{mapped[0]}.{mapped[1]}, below"
            if not isinstance(mapped, Note)
            else f"not carried: {mapped.detail}"
        )
        block = [f"# gp migrate: {why}\n"] + [
            f"# {line}" if line.strip() else line for line in lines[first - 1 : last]
        ]
        if block[-1] and not block[-1].endswith("\n"):
            block[-1] += "\n"
        lines[first - 1 : last] = block
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if gp_items:
        lines.append(
            f"\n# --- gp equivalents of the {_anchor.ANCHOR} settings above (written by gp migrate) ---\n"
        )
        for (section, trait), (_item, source) in gp_items.items():
            lines.append(f"c.{section}.{trait} = {source}\n")
    new_text = "".join(lines)
    try:
        ast.parse(new_text)
    except SyntaxError as exc:  # never hand back a config the server cannot load
        result.status, result.error = (
            "failed",
            f"the rewritten file would not parse ({exc}); convert it by hand",
        )
        return result, None
    return result, new_text


def _gp_literal(item: ConfigItem) -> Any:
    if isinstance(item.value, set | frozenset | tuple):
        return sorted(item.value)
    if item.trait == "port_range" and isinstance(item.value, str):
        from .protocol import normalize_port_range

        return normalize_port_range(item.value)
    return item.value


def _check_config_values(
    gp_items: dict[tuple[str, str], tuple[ConfigItem, str]], result: ConfigResult
) -> None:
    """Run the literal values through gp's option validation (expressions cannot be checked here)."""
    from traitlets.config import Config, Configurable

    from .plugins import installed_backends

    config = Config()
    for (section, trait), (item, _source) in gp_items.items():
        if item.literal:
            config[section][trait] = _gp_literal(item)
    parent = Configurable(config=config)
    from .provisioner import GenericRemoteProvisioner

    backends = {
        p.backend for p in _anchor.PROVISIONERS.values() if p.backend and p.backend in installed_backends()
    }
    try:
        GenericRemoteProvisioner(parent=parent, backend="local")
        for backend_name in sorted(backends):
            backend = _installed_backend(backend_name)
            if backend.options_class is not None and backend.options_class.__name__ in config:
                backend.make_options({}, parent=parent)
    except (GPError, ValueError) as exc:
        result.status, result.error = "failed", f"a converted value does not validate in gp: {exc}"


# ---------------------------------------------------------------------------------------------- writing


def migrate(
    sources: list[Path],
    output: Path | None,
    in_place: bool,
    dry_run: bool,
    replace: bool,
    config: Path | None,
    config_output: Path | None,
) -> Report:
    report = Report()
    specs = [spec for source in sources for spec in find_kernelspecs(source)]
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        for spec_dir in specs:
            try:
                result, spec, staged = convert_kernelspec(spec_dir, staging)
            except (GPError, ValueError, LookupError, OSError) as exc:  # one bad spec must not stop the rest
                result = SpecResult(source=str(spec_dir), name=spec_dir.name, status="failed", error=str(exc))
                spec = staged = None
            report.kernelspecs.append(result)
            if spec is None or staged is None:
                continue
            (staged / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
            if dry_run:
                continue
            destination = spec_dir if in_place else (output or spec_dir.parent) / spec_dir.name
            if destination.exists() and not (in_place or replace):
                result.status = "failed"
                result.error = f"{destination} exists; use --replace to overwrite it (or --output elsewhere)"
                continue
            if in_place:
                backup = staged / f"kernel.json{BACKUP_SUFFIX}"
                previous = spec_dir / f"kernel.json{BACKUP_SUFFIX}"
                shutil.copy2(previous if previous.exists() else spec_dir / "kernel.json", backup)
            _swap_in(staged, destination)
            result.output = str(destination)
    if config is not None:
        result_config, text = convert_config(config)
        report.config = result_config
        if text is not None and not dry_run:
            if in_place:
                target = config
                shutil.copy2(config, config.with_name(config.name + BACKUP_SUFFIX))
            else:
                target = config_output or config.with_name(f"{config.stem}.gp{config.suffix}")
            if target.exists() and target != config and not replace:
                result_config.status = "failed"
                result_config.error = f"{target} exists; use --replace to overwrite it"
            else:
                target.write_text(text)
                result_config.output = str(target)
    return report


def _swap_in(staged: Path, destination: Path) -> None:
    """Put ``staged`` at ``destination``: copied beside it first, so a failure leaves the old spec whole."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    incoming = destination.with_name(f".{destination.name}.gp-migrate-new")
    outgoing = destination.with_name(f".{destination.name}.gp-migrate-old")
    for leftover in (incoming, outgoing):
        if leftover.exists():
            shutil.rmtree(leftover)
    shutil.copytree(staged, incoming)
    if destination.exists():
        destination.rename(outgoing)
    incoming.rename(destination)
    if outgoing.exists():
        shutil.rmtree(outgoing)


def render(report: Report) -> str:
    out: list[str] = []
    for spec in report.kernelspecs:
        head = f"{spec.source}: {spec.status}"
        if spec.status == "converted":
            head += f" to backend {spec.backend!r}" + (f" -> {spec.output}" if spec.output else " (dry run)")
            head += "" if spec.validated else " [NOT validated]"
        out.append(head)
        if spec.error:
            out.append(f"  {spec.error}")
        if spec.equivalent_command:
            out.append(f"  same as: {spec.equivalent_command}")
        for title, notes in (
            ("changed", spec.changed),
            ("not carried over", spec.not_carried),
            ("server config", spec.server_config),
            ("rebuild", spec.rebuild),
        ):
            for note in notes:
                out.append(f"  {title}: {note.what}: {note.detail}")
    if report.config is not None:
        cfg = report.config
        out.append(f"{cfg.source}: {cfg.status}" + (f" -> {cfg.output}" if cfg.output else ""))
        if cfg.error:
            out.append(f"  {cfg.error}")
        for title, notes in (("changed", cfg.changed), ("not carried over", cfg.not_carried)):
            for note in notes:
                out.append(f"  {title}: {note.what}: {note.detail}")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="*", type=Path, metavar="KERNELSPEC",
        help="an installed Gateway Provisioners kernelspec directory, or a directory of them "
        "(e.g. /usr/local/share/jupyter/kernels)",
    )  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="write the gp kernelspecs under this kernels directory")
    where.add_argument(
        "--in-place", action="store_true",
        help=f"replace each kernelspec (and the config file) where it is; the old kernel.json is kept as "
        f"kernel.json{BACKUP_SUFFIX}, the old config as <file>{BACKUP_SUFFIX}",
    )  # fmt: skip
    where.add_argument("--dry-run", action="store_true", help="write nothing; report what would change")
    parser.add_argument("--replace", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--config", type=Path, metavar="FILE",
        help="a server config file (jupyter_server_config.py or .json, or a Kernel Gateway one) to convert; "
        "read without running it",
    )  # fmt: skip
    parser.add_argument(
        "--config-output", type=Path, metavar="FILE",
        help="where the converted config goes (default: <name>.gp<suffix> beside it)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> tuple[int, Any]:
    if not args.sources and args.config is None:
        return EXIT_USAGE, {"error": "name at least one kernelspec directory, or --config FILE"}
    if not (args.output or args.in_place or args.dry_run):
        return EXIT_USAGE, {"error": "say where the results go: --output DIR, --in-place or --dry-run"}
    report = migrate(
        list(args.sources),
        args.output,
        args.in_place,
        args.dry_run,
        args.replace,
        args.config,
        args.config_output,
    )
    return (EXIT_FAILED if report.failed else EXIT_OK), report.to_dict() if args.json else report


def _render(result: Any) -> str:
    if isinstance(result, Report):
        return render(result)
    return f"gp migrate: error: {result['error']}" if isinstance(result, dict) and "error" in result else ""


COMMAND = Command(
    name="migrate",
    help="convert Gateway Provisioners kernelspecs and server config to gp",
    description=(__doc__ or "").strip().split("\n\n")[0],
    add_arguments=add_arguments,
    run=run,
    render=_render,
)


def jupyter_main() -> None:
    """``jupyter gp-migrate``: the same as ``gp migrate``."""
    import sys

    from .cli import main

    sys.exit(main(["migrate", *sys.argv[1:]]))
