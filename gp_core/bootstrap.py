"""``jupyter image-bootstrap install``: put gp's kernel launchers into a kernel image's build context.

Writes ``<dest>/kernel-launchers/<language>/...`` and, unless ``--launchers-only``, the image entrypoint
``<dest>/bootstrap-kernel.sh``. ``--dest`` defaults to ``/usr/local/bin`` (where kernelspecs written by
``jupyter docker-spec install`` expect the launcher), but any directory works, e.g. a Docker build
context that a Dockerfile then COPYs.
"""

from __future__ import annotations

import shutil
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, List, Unicode

#: Languages gp ships a launcher for.
SUPPORTED_LANGUAGES = ("python", "r", "scala")
DEFAULT_DEST = "/usr/local/bin"
BOOTSTRAP_SCRIPT = "bootstrap-kernel.sh"


def launcher_files(language: str) -> dict[str, Path]:
    """The files of ``language``'s launcher: name inside ``kernel-launchers/<language>/`` -> source."""
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"gp has no kernel launcher for language {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    from gp_core.launcher import launcher_files as files_of  # imported late: --help must work without it

    return files_of(language)


def install_launchers(dest: str | Path, languages: list[str], launchers_only: bool = False) -> list[Path]:
    """Write the launchers for ``languages`` (and the entrypoint script) under ``dest``; return the files.

    Every language is checked before anything is written, so a refused one leaves ``dest`` untouched.
    """
    wanted = [language.strip().lower() for language in languages if language.strip()] or ["python"]
    sources = {language: launcher_files(language) for language in dict.fromkeys(wanted)}
    for names in sources.values():
        for source in names.values():
            if not source.is_file():
                raise FileNotFoundError(f"gp's launcher {source} is missing: reinstall gp-core")
    dest = Path(dest)
    written: list[Path] = []
    for language, names in sources.items():
        target_dir = dest / "kernel-launchers" / language
        target_dir.mkdir(parents=True, exist_ok=True)
        for name, source in names.items():
            target = target_dir / name
            shutil.copyfile(source, target)
            target.chmod(0o644)
            written.append(target)
    if not launchers_only:
        script = dest / BOOTSTRAP_SCRIPT
        script.write_bytes(files("gp_core").joinpath(BOOTSTRAP_SCRIPT).read_bytes())
        script.chmod(0o755)
        written.append(script)
    return written


class ImageBootstrapInstallApp(JupyterApp):
    """Write gp's kernel launchers (and the image entrypoint) into a directory."""

    name = "jupyter-image-bootstrap-install"
    description = "Install gp's kernel launchers and bootstrap-kernel.sh for a kernel image."

    dest = Unicode(DEFAULT_DEST, config=True, help="Directory to write into (the image's /usr/local/bin).")
    languages = List(
        Unicode(),
        ["python"],
        config=True,
        help=f"Launcher languages to install (repeatable); supported: {', '.join(SUPPORTED_LANGUAGES)}.",
    )
    launchers_only = Bool(False, config=True, help="Install only the launchers, not bootstrap-kernel.sh.")

    aliases = {
        **base_aliases,
        "dest": "ImageBootstrapInstallApp.dest",
        "languages": "ImageBootstrapInstallApp.languages",
    }
    flags = {
        **base_flags,
        "launchers-only": (
            {"ImageBootstrapInstallApp": {"launchers_only": True}},
            "Install only the launchers, not bootstrap-kernel.sh.",
        ),
    }

    def start(self) -> None:
        try:
            written = install_launchers(self.dest, list(self.languages), self.launchers_only)
        except (ImportError, ValueError, OSError) as exc:
            self.log.error("%s", exc)
            self.exit(1)
        for path in written:
            print(f"Installed {path}")


class ImageBootstrapApp(JupyterApp):
    """``jupyter image-bootstrap``: its subcommand ``install`` writes gp's launchers for a kernel image."""

    name = "jupyter-image-bootstrap"
    description = "Prepare kernel images for gp's container and cluster backends (docker, k8s, ...)."
    subcommands: dict[str, tuple[Any, str]] = {
        "install": (ImageBootstrapInstallApp, ImageBootstrapInstallApp.description)
    }

    def start(self) -> None:
        if self.subapp is None:
            print(f"No subcommand given; choose one of: {', '.join(self.subcommands)}", file=sys.stderr)
            self.print_subcommands()
            self.exit(1)
            return
        self.subapp.start()
