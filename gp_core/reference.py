"""``gp reference``: docs/reference.md, every ``GP_*`` and ``KERNEL_*`` variable, generated from the code.

Server variables come from the options' declarations: each trait whose default is an
:func:`~gp_core.options.env_default` (a hand-written ``@default`` declares its variables in an
``env_vars`` attribute of its function), with the trait's help,
in core (``GenericRemoteProvisioner``, ``ResponseListener``) and in every installed backend's options
class; plus the backends' ``secret_env`` and the few process-wide variables listed in
:data:`PROCESS_ENV`. Request variables come from ``request_variables`` (core's and each backend's), and the
kernel's own from ``GenericRemoteProvisioner.launch_variables``. CI regenerates the page and fails when the
checked-in one differs (tests/test_reference.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .cli import EXIT_FAILED, EXIT_OK, Command

#: Variables read once per process rather than through an option (name -> where, meaning).
PROCESS_ENV: dict[str, tuple[str, str]] = {
    "GP_DISABLED_BACKENDS": (
        "core",
        "Comma list of installed backends to hide (kernel.json cannot select them).",
    ),
    "GP_MIN_PORT_RANGE_SIZE": ("core", "Smallest span a port_range must have (default 1000)."),
}
PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def _env_vars(cls: type, name: str) -> tuple[str, ...]:
    """The variables option ``name`` of ``cls`` defaults from, per its effective ``@default`` (the first in
    the MRO: a subclass may override an inherited env default with a plain one)."""
    from traitlets.traitlets import DefaultHandler

    for klass in cls.__mro__:
        for attribute in vars(klass).values():
            if isinstance(attribute, DefaultHandler) and attribute.trait_name == name:
                return tuple(getattr(attribute.func, "env_vars", ()))
    return ()


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


#: (variable, option name, help) -> [(scope, section, kernel.json key?)]
_Rows = dict[tuple[str, str, str], list[tuple[str, str, bool]]]


def _add_options(rows: _Rows, scope: str, cls: type, kernel_json: bool) -> None:
    for name in sorted(cls.class_trait_names(config=True)):  # type: ignore[attr-defined]
        help_text = cls.class_traits()[name].help  # type: ignore[attr-defined]
        for var in _env_vars(cls, name):
            rows.setdefault((var, name, help_text), []).append((scope, cls.__name__, kernel_json))


def _option_lines(rows: _Rows) -> list[tuple[str, str]]:
    lines = []
    for (var, name, help_text), users in rows.items():
        scopes = ", ".join(dict.fromkeys(scope for scope, _, _ in users))
        sections = " / ".join(f"`c.{section}.{name}`" for _, section, _ in users)
        setting = sections + (f", kernel.json `{name}`" if any(k for _, _, k in users) else "")
        lines.append((var, f"| `{var}` | {scopes} | {setting} | {_cell(help_text)} |"))
    return lines


def _backends() -> Iterable[tuple[str, Any]]:
    from .plugins import get_backend, installed_backends

    for name in installed_backends():
        if name in _TEST_BACKENDS:
            continue
        yield name, get_backend(name)


#: Backends registered only by gp's own tests (tests/example_backend): not part of the reference.
_TEST_BACKENDS = frozenset({"example", "example-broken", "example-incomplete"})


def generate() -> str:
    from .launcher import LAUNCHER_ENV
    from .listener import ResponseListener
    from .provisioner import GenericRemoteProvisioner

    rows: _Rows = {}
    _add_options(rows, "core", GenericRemoteProvisioner, kernel_json=True)
    _add_options(rows, "core (listener)", ResponseListener, kernel_json=False)
    server: list[tuple[str, str]] = []
    for var, (scope, meaning) in PROCESS_ENV.items():
        server.append((var, f"| `{var}` | {scope} | (process-wide) | {_cell(meaning)} |"))
    requests: dict[tuple[str, str], list[str]] = {}
    for var, meaning in GenericRemoteProvisioner.request_variables.items():
        requests.setdefault((var, meaning), []).append("core")
    for name, backend in _backends():
        options = backend.options_class
        if options is None:
            continue
        _add_options(rows, f"`{name}`", options, kernel_json=True)
        for var in options.secret_env:
            server.append(
                (var, f"| `{var}` | `{name}` | (secret; not an option) | Read by the backend from the server's "
                 "environment only; never logged, never in a kernel's environment. |")
            )  # fmt: skip
        for var, meaning in options.request_variables.items():
            requests.setdefault((var, meaning), []).append(f"`{name}`")
    request = [
        (var, f"| `{var}` | {', '.join(scopes)} | {_cell(meaning)} |")
        for (var, meaning), scopes in requests.items()
    ]
    server += _option_lines(rows)
    launch = [
        f"| `{var}` | {_cell(meaning)} |"
        for var, meaning in GenericRemoteProvisioner.launch_variables.items()
    ]
    lines = [
        "# Reference: every GP_* and KERNEL_* variable",
        "",
        "<!-- Generated by `gp reference --output docs/reference.md` from the options' declarations; do not",
        "     edit by hand: tests/test_reference.py fails when this page differs from what the code says. -->",
        "",
        "Backends listed: those installed when the page was generated"
        f" ({', '.join(f'`{n}`' for n, _ in _backends()) or 'none'}).",
        "Precedence of an option: kernel.json `config`, then server config `c.<Section>.<option>`, then the",
        "variable, then the default. A variable named by several backends sets each of them.",
        "",
        "## Server variables (`GP_*` and others read by the server)",
        "",
        "| variable | read by | option it sets | meaning |",
        "|---|---|---|---|",
        *[row for _var, row in sorted(server, key=lambda r: (r[0], r[1]))],
        "",
        "## Start-request variables (`KERNEL_*` a client may send)",
        "",
        "Values from the start request's environment (jupyter_server passes a client's `KERNEL_*` values).",
        "They are untrusted: each is checked where it is used.",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
        *[row for _var, row in sorted(request)],
        "",
        "## Set by gp in every kernel's environment",
        "",
        "| variable | meaning |",
        "|---|---|",
        *launch,
        "",
        "## Read by gp's launcher (where the kernel runs)",
        "",
        "| variable | meaning |",
        "|---|---|",
        *[f"| `{var}` | {_cell(meaning)} |" for var, meaning in LAUNCHER_ENV.items()],
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, help="write the page here (default: print it)")
    parser.add_argument(
        "--check", type=Path, metavar="FILE", help="exit 1 when FILE differs from the generated page"
    )


def run(args: argparse.Namespace) -> tuple[int, Any]:
    page = generate()
    if args.check is not None:
        same = args.check.is_file() and args.check.read_text() == page
        message = "up to date" if same else f"differs: regenerate with 'gp reference --output {args.check}'"
        return (EXIT_OK if same else EXIT_FAILED), {
            "file": str(args.check),
            "up_to_date": same,
            "message": message,
        }
    if args.output is not None:
        args.output.write_text(page)
        return EXIT_OK, {"file": str(args.output), "written": True}
    return EXIT_OK, {"page": page}


def _render(result: Any) -> str:
    if "page" in result:
        return str(result["page"]).rstrip("\n")
    if "message" in result:
        return f"{result['file']}: {result['message']}"
    return f"wrote {result['file']}"


COMMAND = Command(
    name="reference",
    help="generate docs/reference.md: every GP_* and KERNEL_* variable, from the options' declarations",
    add_arguments=add_arguments,
    run=run,
    render=_render,
)
