"""How backends may depend on each other and on core: only through public APIs (docs/writing-a-backend.md §11).

A plugin may import another plugin's package and the names its ``__all__`` lists, never a ``_private``
module or name of another distribution; gp_core imports no plugin and no backend SDK.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = {p.parent.name: p.parent for p in ROOT.glob("plugins/*/gp_*/__init__.py")}
BACKEND_SDKS = {"docker", "kubernetes", "paramiko", "yarn_api_client", "jinja2"}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def private_uses(package: str, package_dir: Path) -> list[str]:
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        for line, module, names in _imports(path):
            top, *rest = module.split(".")
            if top == package or top not in PLUGIN_PACKAGES:
                continue
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if any(part.startswith("_") for part in rest):
                problems.append(f"{where} imports the private module {module}")
            elif not rest:
                problems += [
                    f"{where} imports the private name {module}.{n}" for n in names if n.startswith("_")
                ]
    return problems


@pytest.mark.parametrize("package", sorted(PLUGIN_PACKAGES))
def test_plugins_use_only_other_plugins_public_api(package):
    assert private_uses(package, PLUGIN_PACKAGES[package]) == []


def test_the_scan_catches_a_private_import(tmp_path):
    package_dir = tmp_path / "gp_sparkop"
    package_dir.mkdir()
    (package_dir / "hooks.py").write_text(
        "from gp_k8s._pods import watch\nimport gp_docker._client\nfrom gp_ssh import _remote, hooks\n"
    )
    problems = private_uses("gp_sparkop", package_dir)
    assert len(problems) == 3, problems


def test_gp_core_imports_no_plugin_and_no_backend_sdk():
    problems = []
    for path in sorted((ROOT / "gp_core").rglob("*.py")):
        for line, module, _ in _imports(path):
            top = module.split(".")[0]
            if top in PLUGIN_PACKAGES or top in BACKEND_SDKS:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert problems == []
