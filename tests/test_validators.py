"""Validators of untrusted text: names are checked whole, and no validator regex in the repository can be
fooled by a trailing newline (``$`` matches before a final newline; ``re.fullmatch`` / ``\\Z`` do not)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from gp_core import is_env_name

ROOT = Path(__file__).resolve().parents[1]
_RE_FUNCTIONS = {"compile", "match", "fullmatch", "search"}


def _python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _multiline(call: ast.Call) -> bool:
    flags = [*call.args[1:], *(keyword.value for keyword in call.keywords if keyword.arg == "flags")]
    return any("MULTILINE" in ast.unparse(flag) or ast.unparse(flag) == "re.M" for flag in flags)


def dollar_anchored_patterns(path: Path, root: Path = ROOT) -> list[str]:
    """``re.compile/match/fullmatch/search`` calls whose literal pattern ends in an unescaped ``$``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in _RE_FUNCTIONS or ast.unparse(node.func.value) != "re" or not node.args:
            continue
        pattern = node.args[0]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str | bytes)):
            continue
        text = pattern.value if isinstance(pattern.value, str) else pattern.value.decode("latin-1")
        trailing_backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
        if text.endswith("$") and trailing_backslashes % 2 == 0 and not _multiline(node):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    return found


def test_no_validator_regex_is_anchored_with_a_dollar() -> None:
    # `^...$` with .match accepts "NAME\n": check whole strings with re.fullmatch (or end with \Z).
    offenders = [hit for path in _python_files() for hit in dollar_anchored_patterns(path)]
    assert offenders == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import re\nA = re.compile(r"^[a-z]+$")\nB = re.compile(r"cost\\$")\nC = re.compile("x$", re.M)\n'
        'D = re.match(r"^a$", "a")\nE = re.compile(r"[a-z]+")\n'
    )
    hits = [hit.rsplit(": ", 1)[1] for hit in dollar_anchored_patterns(sample, tmp_path)]
    assert hits == ["'^[a-z]+$'", "'^a$'"]


@pytest.mark.parametrize("name", ["KERNEL_X", "_a1", "A", "PYTHONHASHSEED"])
def test_env_names(name: str) -> None:
    assert is_env_name(name)


@pytest.mark.parametrize(
    "name", ["KERNEL_X\n", "KERNEL_X\r", "\nKERNEL_X", "1X", "A-B", "A B", "A=B", "", "Ä", "K\u2028", "K\x00"]
)
def test_env_names_refused(name: str) -> None:
    assert not is_env_name(name)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None
