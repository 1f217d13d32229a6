#!/usr/bin/env bash
# Build a real single-node Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet) from Debian bookworm's `kubernetes` SOURCE package with Debian's Go 1.19, plus a pause image
# compiled from the same tree. No container registry and no Go module proxy are used.
#
#   bash scripts/build-k8s.sh            builds (or reuses) the binaries; prints the bin directory on stdout
#
# The build lives outside the checkout, in $GP_K8S_CACHE (default /var/cache/gp-ci/k8s), under a key made of
# this script's content: fresh clones on a warm machine reuse it (a few seconds), a changed script builds
# anew (~300 s on 2 cores; the Go build cache, which is content-addressed, is shared between keys).
# Logs go to stderr. The deb-src lines are derived from the machine's own apt sources (nothing is hard-coded);
# a private apt state directory is used, /etc/apt is not touched.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
log() { echo "[build-k8s] $*" >&2; }
die() { echo "[build-k8s] ERROR: $*" >&2; exit 1; }

CACHE=${GP_K8S_CACHE:-/var/cache/gp-ci/k8s}
KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
W="$CACHE/$KEY"
BIN="$W/bin"
PAUSE_IMAGE=gp/pause:3.2
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
mkdir -p "$W"
exec 9>"$CACHE/build.lock"
flock 9   # one build at a time on this machine (concurrent CI runs wait for it and then reuse it)

ensure_pause_image() {   # the image lives in dockerd, which may have lost it; the tar in the cache survives
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
    if [ -s "$W/pause.tar" ]; then
        docker load -i "$W/pause.tar" >/dev/null
    else
        local P SRC
        SRC=$(cat "$W/srcdir")
        P=$(mktemp -d)
        gcc -Os -static -DVERSION=v3.2-gp -o "$P/pause" "$SRC/build/pause/linux/pause.c"
        strip "$P/pause"
        tar -C "$P" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
        rm -rf "$P"
        docker save -o "$W/pause.tar" "$PAUSE_IMAGE"
    fi
    log "pause image $PAUSE_IMAGE loaded into dockerd"
}

if [ -f "$W/complete" ]; then
    ensure_pause_image
    log "reusing the build in $W"
    echo "$BIN"
    exit 0
fi

T0=$SECONDS
log "building Kubernetes v1.20.2 into $W (cold: ~300 s on 2 cores)"
PKGS=(golang-1.19-go etcd-server dpkg-dev gcc libc6-dev jq curl openssl
      golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
missing=()
for p in "${PKGS[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
fi

# --- source package: deb-src lines derived from this machine's apt sources (same mirrors, same keys) -------
A="$CACHE/apt"
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$CACHE/dl"
python3 - "$A/sources.list" <<'PYEOF'
import glob, os, re, sys
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
entries = []  # (uri, suite, components, signed_by)
def add(uris, suites, comps, signed):
    for u in uris:
        for s in suites:
            if not codename or s == codename or s.startswith(codename + "-"):
                entries.append((u, s, comps, signed))
if os.path.exists("/etc/apt/sources.list"):
    for raw in open("/etc/apt/sources.list"):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
        if m:
            opts = m.group(1) or ""
            sb = re.search(r"signed-by=(\S+?)[\s\]]", opts + " ")
            add([m.group(2)], [m.group(3)], m.group(4).split(), sb.group(1) if sb else "")
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields, key = {}, None
        for raw in stanza.splitlines():
            if raw.lstrip().startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        add(fields.get("uris", "").split(), fields.get("suites", "").split(),
            fields.get("components", "").split(), fields.get("signed-by", ""))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    for raw in open(path):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
        if m:
            add([m.group(2)], [m.group(3)], m.group(4).split(), "")
lines = []
for uri, suite, comps, signed in entries:
    if "main" not in comps:
        continue
    opt = f"[signed-by={signed}] " if signed and signed.startswith("/") else ""
    lines.append(f"deb-src {opt}{uri} {suite} main\n")
if not lines:
    sys.exit(f"no 'deb ... {codename} main' entry in the machine's apt sources to derive deb-src from")
open(sys.argv[1], "w").writelines(lines)
PYEOF
APTO=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache")
if ! ls "$CACHE"/dl/kubernetes_*.dsc >/dev/null 2>&1; then
    apt-get "${APTO[@]}" update -q >&2 || die "apt-get update of the derived deb-src sources failed"
    (cd "$CACHE/dl" && apt-get "${APTO[@]}" source --download-only -q kubernetes >&2) \
        || die "apt-get source kubernetes failed"
fi
DSC=$(ls "$CACHE"/dl/kubernetes_*.dsc | head -1)
rm -rf "$W/src"
mkdir -p "$W/src"
dpkg-source --no-check -x "$DSC" "$W/src/kubernetes" >&2
SRC="$W/src/kubernetes"
echo "$SRC" >"$W/srcdir"

# Kubernetes 1.20 needs Debian's Go 1.19: a newer Go earlier on PATH (e.g. /usr/local/go) does not build it.
export PATH="/usr/lib/go-1.19/bin:$PATH"
go version | grep -q 'go1\.19' || die "Debian's Go 1.19 not found at /usr/lib/go-1.19/bin"
export GOPATH="$W/gopath" GOCACHE="$CACHE/gocache" GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOPROXY=off
mkdir -p "$GOPATH/src/k8s.io" "$BIN"
ln -sfn "$SRC" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# 1) the vendored modern-go/reflect2 v1.0.1 segfaults (mapiterinit) when built with Go >= 1.18: use Debian's
#    reflect2 1.0.2 + json-iterator 1.1.12 sources instead.
for m in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "vendor/$m"
    mkdir -p "vendor/$m"
    cp -a "/usr/share/gocode/src/$m/." "vendor/$m/"
    find "vendor/$m" -name '*_test.go' -delete
done
# 2) root on these VMs lacks CAP_SYS_RESOURCE, so runc cannot apply a negative oom_score_adj: use 0.
sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' pkg/kubelet/dockershim/docker_sandbox.go
sed -i 's/guaranteedOOMScoreAdj int = -997/guaranteedOOMScoreAdj int = 0/' pkg/kubelet/qos/policy.go
# 3) generate pkg/generated/openapi (normally done by `make`; the source package does not ship it)
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
    go build -o "$W/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
        | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u >"$W/all_go_dirs"
    DIRS=$(while read -r d; do find "$d/" -maxdepth 1 -type f -name '*.go'; done <"$W/all_go_dirs" \
        | xargs grep -l '^// *+k8s:' | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
        | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname | sed 's|/$||' | LC_ALL=C sort -u \
        | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
    "$W/openapi-gen" --logtostderr -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi \
        -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
        -r "$W/violations.report" 2>/dev/null
fi
LDF="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version k8s.io/kubernetes/vendor/k8s.io/component-base/version; do
    LDF="$LDF -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=clean"
done
for c in "${COMPONENTS[@]}"; do
    t=$SECONDS
    go build -ldflags "$LDF" -o "$BIN/$c" "./cmd/$c"
    log "built $c in $((SECONDS - t)) s"
done
ensure_pause_image
"$BIN/kube-apiserver" --version >&2
touch "$W/complete"
log "build done in $((SECONDS - T0)) s"
echo "$BIN"
