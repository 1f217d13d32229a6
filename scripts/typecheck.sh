#!/usr/bin/env bash
# Type-check gp_core and every plugin package (plugins/*/gp_*) with mypy from the venv.
#   bash scripts/typecheck.sh [mypy args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
packages=(gp_core)
for pkg in plugins/*/gp_*/; do
    [ -f "$pkg/__init__.py" ] && packages+=("${pkg%/}")
done
# A plugin may build on another's public API (gp-sparkop on gp-k8s): every plugin's directory is on the path.
plugin_dirs=$(printf '%s\n' plugins/*/ | sed 's:/$::' | paste -sd: -)
export MYPYPATH="${MYPYPATH:+$MYPYPATH:}$plugin_dirs"
exec "${MYPY:-$ROOT/.venv/bin/mypy}" "$@" "${packages[@]}"
