#!/usr/bin/env bash
# Build the Spark kernel image (driver and executor pods of Spark on Kubernetes), without any registry, and
# the host's Spark (spark-submit for `k8s --spark` kernels and the Spark Operator's controller).
#
#   bash scripts/build-spark-image.sh [TAG]        (default TAG: gp/kernel-py:spark)
#   bash scripts/build-spark-image.sh --spark-home  print the host's SPARK_HOME (installing it when missing)
#
# 1. Wheels  /var/cache/gp-ci/spark/wheels: pyspark, ipykernel, pycryptodomex (pip wheel; PyPI) - once.
# 2. Host Spark  /var/cache/gp-ci/spark/pyspark-$SPARK_VERSION (pip --target from those wheels) - once.
#    Its SPARK_HOME is .../pyspark; Java is Debian's openjdk-17-jre-headless.
# 3. Base image  gp/kernel-spark-base:$SPARK_VERSION (only when missing or from an older recipe; a few min):
#    debootstrap (the Debian archive of this machine's apt sources) + openjdk-17-jre-headless (apt in the
#    chroot) + a venv with the wheels above -> docker import.
# 4. Thin layer  TAG = base + gp's launchers (`jupyter image-bootstrap install`) + gp's Spark entrypoint
#    + a passwd entry for the default kernel uid 1000
#    (scripts/spark-image/entrypoint.sh: driver / executor / command) - always rebuilt, seconds.
# 5. Verify: java -version, import pyspark + ipykernel in the image.
#
# Env: GP_SPARK_VERSION (default 3.4.4), GP_JUPYTER (jupyter with image-bootstrap; default .venv/bin/jupyter), GP_SPARK_CACHE (default
#      /var/cache/gp-ci/spark), GP_DEBIAN_MIRROR, GP_REBUILD_BASE=1.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.ci-state"
# Spark 3.4: from 3.5 on, spark-submit creates the driver's Service by server-side apply, which the test
# cluster's Kubernetes 1.20 apiserver rejects (".spec.ports: element 0: associative list with keys has an
# element that omits key field \"protocol\""); 3.4 creates it with a plain create.
SPARK_VERSION=${GP_SPARK_VERSION:-3.4.4}
CACHE=${GP_SPARK_CACHE:-/var/cache/gp-ci/spark}
WHEELS="$CACHE/wheels"
HOST_SPARK="$CACHE/pyspark-$SPARK_VERSION"
PIP_PKGS="pyspark==$SPARK_VERSION ipykernel pycryptodomex>=3.21"
BASE=gp/kernel-spark-base:$SPARK_VERSION
RECIPE="gp-spark-base-v1 bookworm minbase python3 python3-venv ca-certificates procps openjdk-17-jre-headless | $PIP_PKGS"

log() { echo "[build-spark-image] $*" >&2; }
die() { echo "[build-spark-image] ERROR: $*" >&2; exit 1; }

debian_mirror() {   # the machine's own Debian archive (deb822 or one-line sources): no mirror hard-coded
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -iv security | grep -i debian | head -1)
    echo "$uri"
}

mkdir -p "$CACHE" "$STATE"
exec 9>"$CACHE/build.lock"
flock 9

# ---- 1 + 2. wheels and the host's Spark ----------------------------------------------------------------
if [ ! -f "$WHEELS/.complete-$SPARK_VERSION" ]; then
    log "downloading/building wheels into $WHEELS ..."
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086
    python3 -m pip wheel -q -w "$WHEELS" $PIP_PKGS || die "pip wheel failed"
    touch "$WHEELS/.complete-$SPARK_VERSION"
fi
if [ ! -x "$HOST_SPARK/pyspark/bin/spark-submit" ]; then
    log "installing the host's Spark into $HOST_SPARK ..."
    rm -rf "$HOST_SPARK.tmp"
    python3 -m pip install -q --no-index --find-links "$WHEELS" --target "$HOST_SPARK.tmp" "pyspark==$SPARK_VERSION" \
        || die "pip install --target $HOST_SPARK failed"
    chmod -R a+rX "$HOST_SPARK.tmp"
    mv "$HOST_SPARK.tmp" "$HOST_SPARK"
fi
command -v java >/dev/null || die "java not found on the host (Debian openjdk-17-jre-headless)"
if [ "${1:-}" = --spark-home ]; then
    echo "$HOST_SPARK/pyspark"
    exit 0
fi
TAG=${1:-gp/kernel-py:spark}

command -v docker >/dev/null || die "docker CLI not found (run scripts/setup-system.sh)"
docker info >/dev/null 2>&1 || die "dockerd is not reachable (run scripts/start-docker.sh)"

# ---- 3. base image -------------------------------------------------------------------------------------
base_recipe() { docker image inspect -f '{{ index .Config.Labels "gp.base-recipe" }}' "$BASE" 2>/dev/null || true; }

build_base() {
    command -v debootstrap >/dev/null || die "debootstrap not found (run scripts/setup-system.sh)"
    local mirror W R t0=$SECONDS
    mirror=${GP_DEBIAN_MIRROR:-$(debian_mirror)}
    [ -n "$mirror" ] || die "no Debian archive found in /etc/apt/sources* (set GP_DEBIAN_MIRROR)"
    W="$STATE/spark-image-build"
    R="$W/rootfs"
    mkdir -p "$W" "$CACHE/debootstrap-cache"
    if mountpoint -q "$R/proc"; then umount "$R/proc"; fi
    rm -rf "$R"
    log "building base image $BASE from $mirror (debootstrap + JRE + pip; a few minutes) ..."
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,procps \
            --cache-dir="$CACHE/debootstrap-cache" bookworm "$R" "$mirror" >"$W/debootstrap.log" 2>&1; then
        tail -n 30 "$W/debootstrap.log" >&2
        die "debootstrap failed (full log: $W/debootstrap.log)"
    fi
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    cp -L /etc/ssl/certs/ca-certificates.crt "$R/tmp/host-ca.crt"
    mount -t proc proc "$R/proc"
    trap 'mountpoint -q "$R/proc" && umount "$R/proc"' EXIT
    # The JRE's postinst (ca-certificates-java) runs java: it needs /proc.
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
            chroot "$R" /bin/sh -c 'mkdir -p /usr/share/man/man1 && apt-get update -q &&
                apt-get install -y -q --no-install-recommends openjdk-17-jre-headless' >"$W/apt.log" 2>&1; then
        tail -n 30 "$W/apt.log" >&2
        die "apt-get install openjdk-17-jre-headless in the chroot failed (full log: $W/apt.log)"
    fi
    mkdir -p "$R/tmp/wheels"
    cp "$WHEELS"/*.whl "$R/tmp/wheels/"
    # shellcheck disable=SC2086
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_NO_CACHE_DIR=1 chroot "$R" /bin/sh -c \
            'python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --find-links /tmp/wheels "$@"' \
            sh $PIP_PKGS >"$W/pip.log" 2>&1; then
        tail -n 30 "$W/pip.log" >&2
        die "pip install in the chroot failed (full log: $W/pip.log)"
    fi
    umount "$R/proc"
    trap - EXIT
    ln -sfn /opt/venv/lib/python3.11/site-packages/pyspark "$R/opt/spark"
    mkdir -p "$R/opt/spark-work" && chmod 1777 "$R/opt/spark-work"
    rm -rf "$R/tmp/wheels" "$R/tmp/host-ca.crt"
    : >"$R/etc/resolv.conf"
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
        "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* "$R"/root/.cache
    tar -C "$R" -c . | docker import \
        -c 'ENV PATH=/opt/venv/bin:/opt/spark/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV SPARK_HOME=/opt/spark' \
        -c 'ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64' \
        -c 'ENV PYSPARK_PYTHON=/opt/venv/bin/python3' \
        -c 'WORKDIR /opt/spark-work' \
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

# ---- 4. thin layer: launchers + entrypoint --------------------------------------------------------------
JUPYTER=${GP_JUPYTER:-}
if [ -z "$JUPYTER" ]; then
    if [ -x "$ROOT/.venv/bin/jupyter" ]; then JUPYTER="$ROOT/.venv/bin/jupyter"; else JUPYTER=$(command -v jupyter || true); fi
fi
[ -n "$JUPYTER" ] || die "no jupyter executable found: create the venv first (bash scripts/test.sh does) or set GP_JUPYTER"
CTX="$STATE/spark-image-ctx"
rm -rf "$CTX"
mkdir -p "$CTX/bin"
"$JUPYTER" image-bootstrap install --dest "$CTX/bin" >"$STATE/spark-image-bootstrap.log" 2>&1 \
    || { cat "$STATE/spark-image-bootstrap.log" >&2; die "jupyter image-bootstrap install failed"; }
[ -f "$CTX/bin/kernel-launchers/python/launch_ipykernel.py" ] || die "image-bootstrap did not produce the python launcher"
cp "$ROOT/scripts/spark-image/entrypoint.sh" "$CTX/gp-spark-entrypoint.sh"
chmod -R a+rX "$CTX"
chmod a+x "$CTX/gp-spark-entrypoint.sh"
cat >"$CTX/Dockerfile" <<DOCKERFILE
FROM $BASE
COPY bin/ /usr/local/bin/
COPY gp-spark-entrypoint.sh /opt/gp-spark-entrypoint.sh
# Hadoop's login (executors, the driver's file systems) needs a passwd entry for the uid the pod runs as:
# gp's default (1000:100) has one; the entrypoint adds one for any other uid of group 100.
RUN useradd --uid 1000 --gid 100 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin gp \
    && chgrp 100 /etc/passwd && chmod 664 /etc/passwd
ENTRYPOINT ["/opt/gp-spark-entrypoint.sh"]
LABEL gp.kernel-image="python-spark" gp.spark-version="$SPARK_VERSION"
DOCKERFILE
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
t0=$SECONDS
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$CTX" >"$STATE/spark-docker-build.log" 2>&1 \
    || { cat "$STATE/spark-docker-build.log" >&2; die "docker build of $TAG failed"; }
log "image $TAG built in $((SECONDS - t0)) s"
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$TAG")" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi

# ---- 5. verify -----------------------------------------------------------------------------------------
docker run --rm --network none "$TAG" python3 -c 'import pyspark, ipykernel, Cryptodome; print(pyspark.__version__)' \
    | grep -qx "$SPARK_VERSION" || die "image $TAG cannot import pyspark $SPARK_VERSION / ipykernel / Cryptodome"
docker run --rm --network none "$TAG" java -version >/dev/null 2>&1 || die "image $TAG has no working java"
log "image $TAG ok (Spark $SPARK_VERSION)"
