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
exec "${MYPY:-$ROOT/.venv/bin/mypy}" "$@" "${packages[@]}"
