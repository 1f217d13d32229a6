"""The ``gp`` command: ``gp <subcommand> [options]``.

Subcommands are :class:`Command` objects in a registry: gp-core's own (``migrate``, ``reference``,
``run``) are registered below, and any distribution may add one through the entry-point group
``gp_core.commands`` (name = subcommand, value = a :class:`Command`, or a callable returning one),
loaded only when ``gp`` runs. Every subcommand takes ``--json`` (one JSON document on stdout instead
of text) and returns an exit code:

- 0 (:data:`EXIT_OK`): done;
- 1 (:data:`EXIT_FAILED`): it could not do what was asked (the message says why);
- 2 (:data:`EXIT_USAGE`): bad command line (argparse's usage message).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .errors import GPError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
COMMANDS_GROUP = "gp_core.commands"


@dataclass(frozen=True)
class Command:
    """One ``gp`` subcommand.

    ``add_arguments(parser)`` declares its options (``--json`` is added for it); ``run(args)`` does the
    work and returns ``(exit code, result)``: a JSON-friendly result printed with ``--json``, or else
    passed to ``render`` (default: nothing more is printed; ``run`` may print as it goes when
    ``args.json`` is false).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], tuple[int, Any]]
    render: Callable[[Any], str] | None = None
    description: str = ""


_COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Add (or replace) a subcommand; returns it, so it can decorate a module-level constant."""
    _COMMANDS[command.name] = command
    return command


def commands() -> dict[str, Command]:
    """The registered subcommands: gp-core's and those of installed distributions (entry points)."""
    _builtin_commands()
    for ep in entry_points(group=COMMANDS_GROUP):
        if ep.name in _COMMANDS:
            continue
        try:
            loaded = ep.load()
            command = loaded() if not isinstance(loaded, Command) and callable(loaded) else loaded
        except Exception as exc:  # one broken plugin must not take every subcommand down
            print(f"gp: ignoring subcommand {ep.name!r} ({ep.value}): {exc}", file=sys.stderr)
            continue
        if isinstance(command, Command):
            _COMMANDS[ep.name] = command
    return dict(sorted(_COMMANDS.items()))


def _builtin_commands() -> None:
    if "migrate" in _COMMANDS:
        return
    from . import migrate, reference, run_demo

    for command in (migrate.COMMAND, reference.COMMAND, run_demo.COMMAND):
        _COMMANDS.setdefault(command.name, command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gp",
        description="gp: remote kernel provisioners for Jupyter.",
        epilog="Exit codes: 0 done, 1 failed (the message says why), 2 bad command line. "
        "'gp <subcommand> --help' describes each.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for command in commands().values():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        command.add_arguments(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        sub.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version exit 0, errors exit 2
        return int(exc.code or 0)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code, result = command.run(args)
    except (GPError, OSError, ValueError) as exc:
        code, result = EXIT_FAILED, {"error": str(exc)}
        if not args.json:
            print(f"gp {command.name}: error: {exc}", file=sys.stderr)
            return code
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif command.render is not None and result is not None:
        text = command.render(result)
        if text:
            print(text)
    return code


def console_main() -> None:
    """The ``gp`` console script."""
    sys.exit(main())


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Command", "commands", "main", "register_command"]


if __name__ == "__main__":
    console_main()
