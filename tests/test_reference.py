"""docs/reference.md is what ``gp reference`` generates from the code, and names every variable gp reads."""

from __future__ import annotations

import re
from pathlib import Path

from gp_core.cli import main
from gp_core.reference import PAGE, generate

ROOT = Path(__file__).resolve().parent.parent
#: Files naming variables that gp does not read: the anchor's names (for migration) and test set-up.
NOT_READ_HERE = {"_anchor.py", "migrate.py", "_anchor_venv.py", "testing.py"}
_LITERAL = re.compile(r"""["']((?:GP|KERNEL)_[A-Z0-9_]*[A-Z0-9])["']""")


def test_checked_in_reference_is_what_the_code_generates() -> None:
    assert PAGE.read_text() == generate(), (
        "docs/reference.md is stale: run 'gp reference --output docs/reference.md'"
    )


def test_gp_reference_check_exit_code(tmp_path: Path) -> None:
    assert main(["reference", "--check", str(PAGE)]) == 0
    stale = tmp_path / "reference.md"
    stale.write_text(generate().replace("GP_RESPONSE_IP", "GP_RESPONSE_HOST"))
    assert main(["reference", "--check", str(stale)]) == 1


def test_every_variable_named_in_the_code_is_in_the_reference() -> None:
    page = generate()
    sources = [*ROOT.glob("gp_core/**/*.py"), *ROOT.glob("plugins/*/gp_*/**/*.py")]
    named = {
        (var, path.name)
        for path in sources
        if path.name not in NOT_READ_HERE
        for var in _LITERAL.findall(path.read_text())
    }
    assert len(named) > 30
    missing = sorted(f"{var} ({where})" for var, where in named if f"`{var}`" not in page)
    assert not missing, f"variables the code names that docs/reference.md does not: {missing}"


def test_options_with_an_env_default_are_listed_with_their_help() -> None:
    from gp_core import GenericRemoteProvisioner

    page = generate()
    help_text = GenericRemoteProvisioner.class_traits()["port_range"].help
    assert (
        f"| `GP_PORT_RANGE` | core | `c.GenericRemoteProvisioner.port_range`, kernel.json `port_range` | {help_text} |"
        in page
    )
    # A subclass's plain default hides an inherited env default: swarm ignores GP_DOCKER_POOL_SIZE.
    (row,) = [line for line in page.splitlines() if line.startswith("| `GP_DOCKER_POOL_SIZE`")]
    assert "DockerSwarmOptions" not in row
