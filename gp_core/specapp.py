"""Kernelspec installers: ``jupyter <backend>-spec install``.

:class:`InstallSpecApp` holds the options every backend shares and writes the common kernelspec (argv
running gp's launcher, ``metadata.kernel_provisioner`` selecting the backend by name). It then calls the
backend's ``install_spec`` hook, which adds the backend's own options and files. A backend's command is
a subclass with ``backend_name`` and its own traits/aliases, wrapped in a :class:`SpecInstallerApp`
whose only subcommand is ``install``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Float, List, TraitError, Unicode, default, validate

from .errors import GPError, InvalidOptionError
from .launcher import PLACEHOLDER_ARGS, launcher_files
from .options import env_default
from .plugins import get_backend
from .protocol import normalize_port_range
from .provisioner import GenericRemoteProvisioner

PROVISIONER_NAME = "gp-remote-provisioner"
DEFAULT_KERNEL_CLASS = "ipykernel.ipkernel.IPythonKernel"
SUPPORTED_LANGUAGES = ("python", "r", "scala")
#: kernel.json "language" of each (what Jupyter front ends show and IRkernel's own spec says).
SPEC_LANGUAGE = {"python": "python", "r": "R", "scala": "scala"}
_CLASS_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")
_KERNEL_NAME = re.compile(r"[a-z0-9._-]+", re.IGNORECASE)
T = TypeVar("T")


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion from synchronous code (installers are plain CLI steps).

    With no event loop in this thread, ``asyncio.run``; when one is running (an installer called from
    async code), a worker thread runs its own loop, since the running one cannot be re-entered.
    """

    async def wait() -> T:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


class InstallSpecApp(JupyterApp):
    """Install a kernelspec that runs its kernel through a gp backend."""

    name = "gp-spec-install"
    description = "Install a kernelspec that starts its kernel through a gp backend."
    #: The backend the written kernel.json selects (the entry-point name); subclasses set it.
    backend_name = "local"

    kernel_name = Unicode(config=True, help="Name of the kernelspec directory.")
    display_name = Unicode(config=True, help="Display name of the kernel.")
    language = Unicode("python", config=True, help=f"Kernel language: {', '.join(SUPPORTED_LANGUAGES)}.")
    user = Bool(False, config=True, help="Install for the current user (in the user's Jupyter data dir).")
    sys_prefix = Bool(False, config=True, help="Install into sys.prefix (e.g. the active virtualenv).")
    prefix = Unicode("", config=True, help="Install under PREFIX/share/jupyter/kernels.")
    replace = Bool(False, config=True, help="Replace an existing kernelspec of the same name.")
    # None = not given (kernel.json then leaves the option to the server); an empty value ("--x=") is [].
    authorized_users = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Users allowed to start this kernel, within the server's authorized_users (a policy: "
        "kernel.json may only narrow the server's list). '--authorized-users=' writes [].",
    )
    unauthorized_users = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Users refused this kernel, besides the server's unauthorized_users (default: root; a policy: "
        "kernel.json can only add to the server's list). '--unauthorized-users=' writes [].",
    )
    port_range = Unicode(
        config=True, help="Ports the kernel may bind, LOW..HIGH (0..0 = any; default: env GP_PORT_RANGE)."
    )
    launch_timeout = Float(
        config=True, help="Seconds to wait for the kernel to start (default: env GP_LAUNCH_TIMEOUT, else 30)."
    )
    ipykernel_subclass_name = Unicode(
        DEFAULT_KERNEL_CLASS,
        config=True,
        help="The kernel class the launcher runs (IPythonKernel or a subclass).",
    )
    python = Unicode(config=True, help="Python that runs the launcher where the kernel lives.")

    aliases = {
        **base_aliases,
        "kernel-name": "InstallSpecApp.kernel_name",
        "display-name": "InstallSpecApp.display_name",
        "language": "InstallSpecApp.language",
        "prefix": "InstallSpecApp.prefix",
        "authorized-users": "InstallSpecApp.authorized_users",
        "unauthorized-users": "InstallSpecApp.unauthorized_users",
        "port-range": "InstallSpecApp.port_range",
        "launch-timeout": "InstallSpecApp.launch_timeout",
        "ipykernel-subclass-name": "InstallSpecApp.ipykernel_subclass_name",
        "python": "InstallSpecApp.python",
    }
    flags = {
        **base_flags,
        "user": ({"InstallSpecApp": {"user": True}}, "Install for the current user."),
        "sys-prefix": ({"InstallSpecApp": {"sys_prefix": True}}, "Install into sys.prefix."),
        "replace": ({"InstallSpecApp": {"replace": True}}, "Replace an existing kernelspec."),
    }

    # As Gateway Provisioners' installers do: the install-time environment's values go into kernel.json.
    _port_range_default = default("port_range")(env_default("GP_PORT_RANGE", "0..0"))
    _launch_timeout_default = default("launch_timeout")(env_default("GP_LAUNCH_TIMEOUT", 30.0))

    @default("kernel_name")
    def _kernel_name_default(self) -> str:
        return f"{self.backend_name.replace('-', '_')}_{self.language.lower()}"

    @default("display_name")
    def _display_name_default(self) -> str:
        return f"{self.backend_name.replace('-', ' ').title()} {self.language.title()} (gp)"

    @default("python")
    def _python_default(self) -> str:
        return sys.executable

    @validate("language")
    def _check_language(self, proposal: Any) -> str:
        language = str(proposal["value"]).lower()
        if language not in SUPPORTED_LANGUAGES:
            raise TraitError(
                f"language {proposal['value']!r} is not supported; gp ships launchers for: "
                f"{', '.join(SUPPORTED_LANGUAGES)}"
            )
        return language

    @validate("kernel_name")
    def _check_kernel_name(self, proposal: Any) -> str:
        if not _KERNEL_NAME.fullmatch(proposal["value"]):
            raise TraitError(
                f"kernel name {proposal['value']!r} is invalid; use letters, digits, '.', '_' and '-'"
            )
        return str(proposal["value"])

    @validate("authorized_users", "unauthorized_users")
    def _drop_blank_users(self, proposal: Any) -> list[str] | None:
        if proposal["value"] is None:
            return None
        # "--unauthorized-users=" arrives as [""]: no user, not a user named "".
        return [user.strip() for user in proposal["value"] if user.strip()]

    @validate("port_range")
    def _check_port_range(self, proposal: Any) -> str:
        try:
            return normalize_port_range(proposal["value"])
        except InvalidOptionError as exc:
            raise TraitError(str(exc)) from None

    @validate("ipykernel_subclass_name")
    def _check_kernel_class(self, proposal: Any) -> str:
        name = str(proposal["value"])
        if not _CLASS_NAME.fullmatch(name):
            raise TraitError(f"--ipykernel-subclass-name {name!r} is not a dotted 'module.Class' name")
        module_name, _, class_name = name.rpartition(".")
        try:  # check when importable here; the class may exist only where the kernel runs
            kernel_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            return name
        from ipykernel.ipkernel import IPythonKernel

        if not (isinstance(kernel_class, type) and issubclass(kernel_class, IPythonKernel)):
            raise TraitError(f"--ipykernel-subclass-name {name!r} is not a subclass of IPythonKernel")
        return name

    # ------------------------------------------------------------------ building the spec

    def launcher_args(self) -> list[str]:
        """The launcher's arguments: the placeholders core fills at launch time, then the kernel class."""
        if self.language != "python":
            return list(PLACEHOLDER_ARGS)  # the R launcher runs IRkernel, no ipykernel class
        return [*PLACEHOLDER_ARGS, "--kernel-class-name", self.ipykernel_subclass_name]

    def launcher_name(self) -> str:
        """File name of the language's launcher entry script (run by ``python``)."""
        return next(iter(launcher_files(self.language)))

    def provisioner_config(self) -> dict[str, Any]:
        """Core options written into kernel.json: those given (or non-default), and always launch_timeout."""
        # The env defaults skip @validate: check them here, so a bad GP_* value fails the install.
        port_range = normalize_port_range(self.port_range)
        if not self.launch_timeout > 0:
            raise InvalidOptionError(
                f"launch_timeout must be a positive number of seconds, not {self.launch_timeout!r}"
            )
        config: dict[str, Any] = {"backend": self.backend_name, "launch_timeout": self.launch_timeout}
        if self.authorized_users is not None:
            config["authorized_users"] = list(self.authorized_users)
        if self.unauthorized_users is not None:
            config["unauthorized_users"] = list(self.unauthorized_users)
        if port_range != "0..0":
            config["port_range"] = port_range
        return config

    def build_spec(self, spec_dir: Path) -> dict[str, Any]:
        """Stage the launcher in ``spec_dir`` and return the kernel.json dict after the backend's hook."""
        scripts = spec_dir / "scripts"
        scripts.mkdir(parents=True, exist_ok=True)
        for name, source in launcher_files(self.language).items():
            shutil.copy2(source, scripts / name)
        spec: dict[str, Any] = {
            "argv": [self.python, f"{{resource_dir}}/scripts/{self.launcher_name()}", *self.launcher_args()],
            "display_name": self.display_name,
            "language": SPEC_LANGUAGE[self.language],
            "interrupt_mode": "signal",
            "env": {},
            "metadata": {
                "debugger": True,
                # gp's Python launcher encrypts with CurveZMQ when jupyter_client's transport_encryption
                # asks (ipykernel >= 7.3 where the kernel runs); IRkernel cannot.
                **({"supported_encryption": ["curve"]} if self.language == "python" else {}),
                "kernel_provisioner": {
                    "provisioner_name": PROVISIONER_NAME,
                    "config": self.provisioner_config(),
                },
            },
        }
        backend = get_backend(self.backend_name)
        if backend.implements("install_spec"):
            adjusted = run_sync(
                backend.call("install_spec", app=self, kernel_spec=spec, spec_dir=spec_dir, log=self.log)
            )
            spec = adjusted or spec
        config = dict(spec["metadata"]["kernel_provisioner"]["config"])
        core_options = GenericRemoteProvisioner.core_option_names()
        backend_values = {name: value for name, value in config.items() if name not in core_options}
        # The spec must pass the same validation as a launch, but for the policies: whether its values stay
        # within the server's is decided at launch, by the server that starts it.
        backend.make_options(backend_values, other_options=core_options, policy=False)
        return spec

    def install(self) -> Path:
        """Write the kernelspec and return where it was installed."""
        prefix = sys.prefix if self.sys_prefix else (self.prefix or None)
        ksm = KernelSpecManager(parent=self)
        destination = Path(ksm._get_destination_dir(self.kernel_name, user=self.user, prefix=prefix))
        if destination.exists() and not self.replace:
            raise InvalidOptionError(
                f"Kernelspec {self.kernel_name!r} already exists at {destination}; use --replace to overwrite it"
            )
        with tempfile.TemporaryDirectory() as staging:
            spec_dir = Path(staging) / self.kernel_name
            spec_dir.mkdir()
            spec = self.build_spec(spec_dir)
            (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
            installed = ksm.install_kernel_spec(
                str(spec_dir), self.kernel_name, user=self.user, prefix=prefix
            )
        return Path(installed)  # jupyter_client has logged where

    def start(self) -> None:
        try:
            installed = self.install()
        except (GPError, OSError) as exc:
            self.log.error("%s", exc)
            self.exit(1)
        print(f"Installed kernelspec {self.kernel_name} in {installed}")


class SpecInstallerApp(JupyterApp):
    """``jupyter <backend>-spec``: a command whose subcommand ``install`` writes a kernelspec."""

    name = "gp-spec"
    description = "Manage gp kernelspecs."
    subcommands: dict[str, tuple[Any, str]] = {}

    def start(self) -> None:
        if self.subapp is None:
            print(f"No subcommand given; choose one of: {', '.join(self.subcommands)}", file=sys.stderr)
            self.print_subcommands()
            self.exit(1)
            return
        self.subapp.start()


class LocalInstallSpecApp(InstallSpecApp):
    """Install a kernelspec whose kernel runs as a local process through the full gp protocol."""

    name = "jupyter-local-spec-install"
    backend_name = "local"


class LocalSpecApp(SpecInstallerApp):
    name = "jupyter-local-spec"
    description = "Install kernelspecs for gp's local backend."
    subcommands = {"install": (LocalInstallSpecApp, LocalInstallSpecApp.description)}
