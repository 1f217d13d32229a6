#!/usr/bin/env bash
# Build the python kernel image used by the docker / docker-swarm tests, without any container registry.
#
#   bash scripts/build-kernel-image.sh [TAG] [LANGUAGE]   (default TAG: gp/kernel-py:test, LANGUAGE: python)
#
# LANGUAGE r builds an R kernel image the same way: its base also holds Debian's r-base-core and
# r-cran-irkernel (gp/kernel-r-base:bookworm), and its launchers are image-bootstrap's python + r.
#
# 1. Base image  gp/kernel-py-base:bookworm  (only if missing or built from an older recipe; ~60-90 s):
#      debootstrap (Debian mirror) -> venv + pip install ipykernel pycryptodomex (PyPI) in a chroot
#      -> docker import.
# 2. Thin layer  TAG = base + the gp kernel launchers (always rebuilt; a few seconds):
#      the launchers come from the product's own tool, `jupyter image-bootstrap install --dest <ctx>/bin`,
#      then `docker build` with  FROM <base>  +  COPY bin/ /usr/local/bin/ .
# 3. Verify:  docker run --rm --network none TAG python3 -c 'import ipykernel, Cryptodome'
#
# Env: GP_JUPYTER          jupyter executable providing `image-bootstrap` (default: .venv/bin/jupyter,
#                          then `jupyter` on PATH)
#      GP_KERNEL_BASE_IMAGE base tag (default gp/kernel-py-base:bookworm)
#      GP_DEBIAN_MIRROR    debootstrap mirror (default: the Debian archive this machine's apt sources use)
#      GP_REBUILD_BASE=1   force a rebuild of the base image
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"   # sshd, dockerd, debootstrap, chroot live in sbin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.ci-state"
TAG=${1:-gp/kernel-py:test}
LANGUAGE=$(printf '%s' "${2:-python}" | tr '[:upper:]' '[:lower:]')
case "$LANGUAGE" in
    python) DEFAULT_BASE=gp/kernel-py-base:bookworm; EXTRA_DEBS="" ;;
    r) DEFAULT_BASE=gp/kernel-r-base:bookworm; EXTRA_DEBS=",r-base-core,r-cran-irkernel" ;;
    *) echo "[build-kernel-image] ERROR: no kernel image recipe for language '$LANGUAGE' (python, r)" >&2; exit 2 ;;
esac
BASE=${GP_KERNEL_BASE_IMAGE:-$DEFAULT_BASE}
# The machine's own Debian archive (its deb822 or one-line apt sources), so no mirror is hard-coded here.
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -iv security | grep -i debian | head -1)
    echo "$uri"
}
MIRROR=${GP_DEBIAN_MIRROR:-$(debian_mirror)}
KERNEL_PIP_PKGS="ipykernel pycryptodomex>=3.21"
# Bump when the base recipe changes: an existing base carrying another recipe label is rebuilt.
RECIPE="gp-base-v1 bookworm minbase python3 python3-venv ca-certificates$EXTRA_DEBS | $KERNEL_PIP_PKGS"

log() { echo "[build-kernel-image] $*" >&2; }
die() { echo "[build-kernel-image] ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker CLI not found (run scripts/setup-system.sh)"
docker info >/dev/null 2>&1 || die "dockerd is not reachable (run scripts/start-docker.sh)"
mkdir -p "$STATE"

# Serialise concurrent builds (two shells running the tests at once must not debootstrap twice).
exec 9>"$STATE/build-kernel-image.lock"
flock 9

base_recipe() { docker image inspect -f '{{ index .Config.Labels "gp.base-recipe" }}' "$BASE" 2>/dev/null || true; }

build_base() {
    command -v debootstrap >/dev/null || die "debootstrap not found (run scripts/setup-system.sh)"
    [ -n "$MIRROR" ] || die "no Debian archive found in /etc/apt/sources*: set GP_DEBIAN_MIRROR"
    local W="$STATE/image-build" R t0=$SECONDS
    R="$W/rootfs"
    mkdir -p "$W" "$STATE/debootstrap-cache"
    rm -rf "$R"
    log "building base image $BASE (debootstrap + pip; takes a minute or two) ..."
    if ! debootstrap --variant=minbase --include="python3,python3-venv,ca-certificates$EXTRA_DEBS" \
            --cache-dir="$STATE/debootstrap-cache" bookworm "$R" "$MIRROR" >"$W/debootstrap.log" 2>&1; then
        tail -n 30 "$W/debootstrap.log" >&2
        die "debootstrap failed (full log: $W/debootstrap.log)"
    fi
    # Name resolution + this network's TLS CA for pip only; both are removed before the import.
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    cp -L /etc/ssl/certs/ca-certificates.crt "$R/tmp/host-ca.crt"
    # env -i: the host may export REQUESTS_CA_BUNDLE / PIP_CERT / PIP_FIND_LINKS ... pointing at host
    # paths that do not exist inside the chroot.
    # shellcheck disable=SC2086
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
            PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
            PIP_DEFAULT_TIMEOUT=180 \
            chroot "$R" /bin/sh -c 'python3 -m venv /opt/venv && /opt/venv/bin/pip install -q "$@"' \
            sh $KERNEL_PIP_PKGS >"$W/pip.log" 2>&1; then
        tail -n 30 "$W/pip.log" >&2
        die "pip install in the chroot failed (full log: $W/pip.log)"
    fi
    rm -f "$R/tmp/host-ca.crt"
    : >"$R/etc/resolv.conf"
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
        "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* \
        "$R"/root/.cache
    tar -C "$R" -c . | docker import \
        -c 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c "LABEL gp.base-recipe=\"$RECIPE\"" \
        -c 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$R"
    log "base image $BASE built in $((SECONDS - t0)) s"
}

if [ "${GP_REBUILD_BASE:-0}" = 1 ] || [ "$(base_recipe)" != "$RECIPE" ]; then
    build_base
else
    log "base image $BASE present (recipe up to date)"
fi

# ---- thin layer: base + gp launchers --------------------------------------------------------------------
JUPYTER=${GP_JUPYTER:-}
if [ -z "$JUPYTER" ]; then
    if [ -x "$ROOT/.venv/bin/jupyter" ]; then JUPYTER="$ROOT/.venv/bin/jupyter"; else JUPYTER=$(command -v jupyter || true); fi
fi
[ -n "$JUPYTER" ] || die "no jupyter executable found: create the venv first (bash scripts/test.sh does) or set GP_JUPYTER"

CTX="$STATE/kernel-image-ctx"
rm -rf "$CTX"
mkdir -p "$CTX/bin"
if ! "$JUPYTER" image-bootstrap install --dest "$CTX/bin" --languages python --languages "$LANGUAGE" \
        >"$STATE/image-bootstrap.log" 2>&1; then
    cat "$STATE/image-bootstrap.log" >&2
    die "'$JUPYTER image-bootstrap install --dest $CTX/bin' failed (is plugins/gp_docker installed in the venv?)"
fi
for f in kernel-launchers/python/launch_ipykernel.py bootstrap-kernel.sh; do
    [ -f "$CTX/bin/$f" ] || die "image-bootstrap did not produce bin/$f"
done
chmod -R a+rX "$CTX/bin"
cat >"$CTX/Dockerfile" <<EOF
FROM $BASE
COPY bin/ /usr/local/bin/
LABEL gp.kernel-image="$LANGUAGE"
EOF
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
t0=$SECONDS
# Legacy builder: needs no buildx plugin and no registry for FROM a local image.
if ! DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$CTX" >"$STATE/docker-build.log" 2>&1; then
    cat "$STATE/docker-build.log" >&2
    die "docker build of $TAG failed"
fi
log "image $TAG built in $((SECONDS - t0)) s"
# Drop the previous build of TAG if it is now untagged and unused (fails harmlessly otherwise).
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$TAG")" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi

# ---- verify ----------------------------------------------------------------------------------------------
docker run --rm --network none "$TAG" python3 -c 'import ipykernel, Cryptodome' \
    || die "image $TAG cannot import ipykernel / Cryptodome"
docker run --rm --network none "$TAG" test -f /usr/local/bin/kernel-launchers/python/launch_ipykernel.py \
    || die "image $TAG lacks /usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
if [ "$LANGUAGE" = r ]; then
    docker run --rm --network none "$TAG" Rscript -e 'library(IRkernel)' \
        || die "image $TAG cannot load the R package IRkernel"
    docker run --rm --network none "$TAG" test -f /usr/local/bin/kernel-launchers/r/launch_irkernel.py \
        || die "image $TAG lacks /usr/local/bin/kernel-launchers/r/launch_irkernel.py"
fi
log "image $TAG ok"
