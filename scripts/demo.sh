#!/usr/bin/env bash
# Demo on the built-in local backend: no docker, no sshd.
#
#   bash scripts/demo.sh [args for `python -m gp_core`]
#
# Creates (or reuses) the venv .venv, installs gp-core (editable) + ipykernel into it, then runs
# `python -m gp_core`, which starts a kernel, runs code, prints the output and shuts the kernel down.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

fail() { echo "[demo.sh] FAILED: $*" >&2; exit 1; }

# python3 (>= 3.11) with venv support; installs Debian's python3 + python3-venv only if missing.
bash scripts/setup-system.sh --python-only

mkdir -p "$ROOT/.ci-state"
exec 8>"$ROOT/.ci-state/venv.lock"   # shared with scripts/test.sh: one pip at a time in .venv
flock 8
if ! { [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }; then
    rm -rf "$VENV"
    echo "[demo.sh] creating $VENV" >&2
    python3 -m venv "$VENV" || fail "python3 -m venv failed"
fi
# Reinstall only when pyproject.toml changed (or gp_core/ipykernel are not importable): a no-op editable
# reinstall costs ~5 s.
stamp="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
if [ "$(cat "$VENV/.gp-demo-stamp" 2>/dev/null)" = "$stamp" ] \
        && "$PY" -c 'import gp_core, ipykernel, sys; sys.exit(not gp_core.__file__.startswith(sys.argv[1]))' "$ROOT/" 2>/dev/null; then
    echo "[demo.sh] gp-core (editable) and ipykernel already installed" >&2
else
    echo "[demo.sh] pip install -e . ipykernel" >&2
    "$PY" -m pip install -q -e "$ROOT" ipykernel || fail "pip install failed"
    echo "$stamp" >"$VENV/.gp-demo-stamp"
fi
exec 8>&-

exec "$PY" -m gp_core "$@"
