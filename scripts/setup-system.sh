#!/usr/bin/env bash
# Install the Debian packages gp needs, on a fresh Debian bookworm machine (run as root, or with sudo).
# Only missing packages are installed (quietly, non-interactively); `apt-get update` runs at most once, and
# only when something is missing and the package lists are not fresh (< 6 h old).
#
#   bash scripts/setup-system.sh                 everything the test backends need
#   bash scripts/setup-system.sh --python-only   just python3 + venv (for scripts/demo.sh)
#   bash scripts/setup-system.sh --languages r   also what kernels of these languages need (comma list:
#                                                r = R + IRkernel; scala = a JRE for Apache Toree)
#
# Package installation never starts system services (a temporary policy-rc.d denies it): the scripts start
# their own dockerd and sshd.
set -euo pipefail

PY_PKGS=(python3 python3-venv)
ALL_PKGS=("${PY_PKGS[@]}" docker.io openssh-server openssh-client debootstrap iproute2 procps ca-certificates
          util-linux openjdk-17-jdk-headless maven)

log() { echo "[setup-system] $*" >&2; }
die() { echo "[setup-system] ERROR: $*" >&2; exit 1; }
LANGS=""

usage() { echo "usage: $0 [--python-only] [--languages r,scala]" >&2; exit 2; }
PKGS=("${ALL_PKGS[@]}")
while [ $# -gt 0 ]; do
    case "$1" in
        --python-only) PKGS=("${PY_PKGS[@]}") ;;
        --languages) [ $# -ge 2 ] || usage; LANGS=$2; shift ;;
        --languages=*) LANGS=${1#--languages=} ;;
        *) usage ;;
    esac
    shift
done
for lang in ${LANGS//,/ }; do
    case "${lang,,}" in
        python) ;;
        r) PKGS+=(r-base-core r-cran-irkernel) ;;
        scala) PKGS+=(openjdk-17-jre-headless) ;;
        *) die "no packages known for kernel language '$lang' (known: python, r, scala)" ;;
    esac
done

# A usable python3 (>= 3.11, with venv + ensurepip) that is first on PATH, e.g. from pyenv, makes the
# Debian python packages unnecessary.
python_ok() { python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

missing=()
for p in "${PKGS[@]}"; do
    case "$p" in python3 | python3-venv) python_ok && continue ;; esac
    status=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "system packages present"
    exit 0
fi

command -v apt-get >/dev/null || die "missing ${missing[*]}, and this is not a Debian system (no apt-get)"
SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}: run as root (or install sudo)"
    SUDO=(sudo)
fi
APT_LOG=$(mktemp /tmp/gp-apt.XXXXXX)

apt_update() {
    log "apt-get update ..."
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$APT_LOG" 2>&1 || {
        tail -n 20 "$APT_LOG" >&2
        die "apt-get update failed"
    }
}
apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >"$APT_LOG" 2>&1
}
lists_fresh() {   # some package index younger than 6 h
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 -print -quit 2>/dev/null)" ]
}

# Keep package maintainer scripts from starting docker/ssh services (only if no policy is in place).
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

lists_fresh || apt_update
log "installing: ${missing[*]}"
if ! apt_install; then
    # stale lists (a version vanished from the mirror): refresh once and retry
    log "apt-get install failed; refreshing the package lists and retrying"
    apt_update
    apt_install || { tail -n 30 "$APT_LOG" >&2; die "apt-get install ${missing[*]} failed"; }
fi
rm -f "$APT_LOG"
log "installed: ${missing[*]}"
