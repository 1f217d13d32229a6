#!/usr/bin/env bash
# Start (or reuse) a loopback-only single-node Kubernetes v1.20.2 on this machine's dockerd: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and a kubelet using dockershim. Binaries from scripts/build-k8s.sh.
#
#   bash scripts/start-k8s.sh [--kubeconfig FILE]   start the whole cluster unless it already runs healthy;
#                                                  write an admin kubeconfig to FILE (self-contained)
#   bash scripts/start-k8s.sh --apiserver           start only the kube-apiserver of a cluster whose other
#                                                  parts run (the counterpart of stop-k8s.sh --apiserver)
#   bash scripts/start-k8s.sh --status              exit 0 when the cluster runs and its node is Ready
#
# The cluster is machine-wide (fixed loopback ports 16443 apiserver, 12379/12380/12381 etcd, 10250/10248 kubelet,
# 10257 controller-manager, 10259 scheduler), so its state lives outside any checkout, in $GP_K8S_STATE (default
# /var/lib/gp-ci/k8s-cluster): pid files, logs (logs/), a throwaway PKI and admin token, etcd data, kubelet dirs.
# A running cluster is reused when it was started by the same binaries and the same version of this script;
# otherwise it is stopped and started afresh (etcd data wiped: a fresh cluster has no leftovers).
# There is no kube-proxy: Service ClusterIPs do not route; kernel pods use hostNetwork.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${GP_K8S_STATE:-/var/lib/gp-ci/k8s-cluster}
APISERVER=https://127.0.0.1:16443
log() { echo "[start-k8s] $*" >&2; }
die() { echo "[start-k8s] ERROR: $*" >&2; exit 1; }

mode=full kubeconfig_out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --kubeconfig) kubeconfig_out=${2:?--kubeconfig needs a file}; shift 2 ;;
        --apiserver) mode=apiserver; shift ;;
        --status) mode=status; shift ;;
        *) echo "usage: $0 [--kubeconfig FILE] | --apiserver | --status" >&2; exit 2 ;;
    esac
done
mkdir -p "$D/logs"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

alive() {   # alive NAME: the process in NAME.pid runs (and is that program)
    local pid
    pid=$(cat "$D/$1.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1:0:15}" ]
}
token() { cat "$D/pki/admin.token"; }
api() { curl -fsS --max-time 5 --cacert "$D/pki/ca.crt" -H "Authorization: Bearer $(token)" "$APISERVER$1"; }
node_ready() {
    api "/api/v1/nodes/$(hostname)" 2>/dev/null \
        | jq -e '.status.conditions[] | select(.type=="Ready") | .status=="True"' >/dev/null 2>&1
}
healthy() {
    local c
    for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
    api /readyz >/dev/null 2>&1 && node_ready
}
wait_for() {   # wait_for WHAT SECONDS COMMAND...
    local what=$1 limit=$2 t=$SECONDS
    shift 2
    until "$@"; do
        [ $((SECONDS - t)) -lt "$limit" ] || return 1
        sleep 0.25
    done
    log "$what after $((SECONDS - t0)) s"
}
write_kubeconfig() {   # self-contained (CA embedded), so a copy works from anywhere
    local out=$1 tmp
    mkdir -p "$(dirname "$out")"
    tmp=$(mktemp "$out.XXXXXX")
    cat >"$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: gp-test
  cluster: {server: "$APISERVER", certificate-authority-data: "$(base64 -w0 "$D/pki/ca.crt")"}
users:
- name: gp-admin
  user: {token: "$(token)"}
contexts:
- name: gp-test
  context: {cluster: gp-test, user: gp-admin}
current-context: gp-test
KC
    chmod 600 "$tmp"
    mv "$tmp" "$out"
}

start_apiserver() {
    "$BIN/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:12379 \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=16443 --insecure-port=0 \
        --endpoint-reconciler-type=none \
        --tls-cert-file="$D/pki/apiserver.crt" --tls-private-key-file="$D/pki/apiserver.key" \
        --client-ca-file="$D/pki/ca.crt" --token-auth-file="$D/pki/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$D/pki/sa.pub" --service-account-signing-key-file="$D/pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
        --kubelet-preferred-address-types=Hostname \
        >>"$D/logs/kube-apiserver.log" 2>&1 </dev/null 9>&- &
    echo $! >"$D/kube-apiserver.pid"
    wait_for "apiserver ready" 90 eval 'api /readyz >/dev/null 2>&1' \
        || { tail -20 "$D/logs/kube-apiserver.log" >&2; die "kube-apiserver not ready (log: $D/logs/kube-apiserver.log)"; }
}

# fd 9 holds the lock; every daemon is started with 9>&- so none of them inherits it
exec 9>"$D/start.lock"
flock 9
t0=$SECONDS

case "$mode" in
    status)
        healthy && exit 0
        exit 1
        ;;
    apiserver)
        [ -f "$D/bin-dir" ] || die "no cluster was started from $D"
        BIN=$(cat "$D/bin-dir")
        if alive kube-apiserver; then log "kube-apiserver already runs"; exit 0; fi
        alive etcd || die "etcd is not running: start the whole cluster (bash scripts/start-k8s.sh)"
        start_apiserver
        exit 0
        ;;
esac

BIN=$(bash "$ROOT/scripts/build-k8s.sh")
KEY="$BIN $(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
if [ "$(cat "$D/cluster-key" 2>/dev/null)" = "$KEY" ] && healthy; then
    log "reusing the running cluster ($APISERVER, state $D)"
    [ -z "$kubeconfig_out" ] || write_kubeconfig "$kubeconfig_out"
    exit 0
fi
if [ -f "$D/cluster-key" ] || ls "$D"/*.pid >/dev/null 2>&1; then
    log "a cluster from another build or an unhealthy one is in $D: stopping it"
    GP_K8S_LOCK_HELD=1 bash "$ROOT/scripts/stop-k8s.sh" 9>&-   # it must not wait for the lock we hold
fi

NODE=$(hostname)
# the apiserver reaches the kubelet by node *hostname*: it must stay on loopback
getent hosts "$NODE" | grep -q '^127\.' || die "hostname $NODE must resolve to 127.x (add it to /etc/hosts)"
docker info >/dev/null 2>&1 || die "dockerd is not reachable (run scripts/start-docker.sh)"
CGROUP_DRIVER=$(docker info --format '{{.CgroupDriver}}')

# --- throwaway PKI + a static admin token (group system:masters), made once
mkdir -p "$D/pki"
(
    cd "$D/pki"
    [ -f ca.crt ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
        -subj "/CN=gp-test-ca" 2>/dev/null
    if [ ! -f apiserver.crt ]; then
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
            -days 3650 -extfile san.ext 2>/dev/null
    fi
    [ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
    [ -f admin.token ] || openssl rand -hex 16 >admin.token
    echo "$(cat admin.token),gp-admin,gp-admin,system:masters" >tokens.csv
    chmod 600 ca.key apiserver.key sa.key admin.token tokens.csv
)
write_kubeconfig "$D/kubeconfig"
rm -rf "$D/etcd-data"

etcd --name gp-test --data-dir "$D/etcd-data" \
    --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster gp-test=http://127.0.0.1:12380 --listen-metrics-urls http://127.0.0.1:12381 \
    >"$D/logs/etcd.log" 2>&1 </dev/null 9>&- &
echo $! >"$D/etcd.pid"
: >"$D/logs/kube-apiserver.log"
start_apiserver
"$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
    --leader-elect=false --service-account-private-key-file="$D/pki/sa.key" --root-ca-file="$D/pki/ca.crt" \
    --use-service-account-credentials=false --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route' \
    >"$D/logs/kube-controller-manager.log" 2>&1 </dev/null 9>&- &
echo $! >"$D/kube-controller-manager.pid"
"$BIN/kube-scheduler" --kubeconfig="$D/kubeconfig" --bind-address=127.0.0.1 --secure-port=10259 --port=0 \
    --leader-elect=false >"$D/logs/kube-scheduler.log" 2>&1 </dev/null 9>&- &
echo $! >"$D/kube-scheduler.pid"
mkdir -p "$D/kubelet" "$D/kubelet-pki" "$D/manifests"
# Image garbage collection is off (thresholds 100 %): the dockerd is shared, its images are not the kubelet's.
"$BIN/kubelet" --kubeconfig="$D/kubeconfig" --root-dir="$D/kubelet" --cert-dir="$D/kubelet-pki" \
    --container-runtime=docker --docker-endpoint=unix:///var/run/docker.sock \
    --pod-infra-container-image=gp/pause:3.2 --image-pull-progress-deadline=10s \
    --address=127.0.0.1 --port=10250 --read-only-port=0 --healthz-bind-address=127.0.0.1 --healthz-port=10248 \
    --fail-swap-on=false --cgroup-driver="$CGROUP_DRIVER" --oom-score-adj=0 --pod-manifest-path="$D/manifests" \
    --eviction-hard='memory.available<100Mi,nodefs.available<2%,imagefs.available<2%' \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --register-node=true --hostname-override="$NODE" \
    >"$D/logs/kubelet.log" 2>&1 </dev/null 9>&- &
echo $! >"$D/kubelet.pid"
wait_for "node $NODE Ready" 120 node_ready || { tail -30 "$D/logs/kubelet.log" >&2; die "node not Ready (log: $D/logs/kubelet.log)"; }
# pods need the default service account, which the controller-manager creates
wait_for "default service account" 60 eval 'api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1' \
    || die "the default service account did not appear (log: $D/logs/kube-controller-manager.log)"
echo "$BIN" >"$D/bin-dir"
echo "$KEY" >"$D/cluster-key"
[ -z "$kubeconfig_out" ] || write_kubeconfig "$kubeconfig_out"
log "cluster ready in $((SECONDS - t0)) s ($APISERVER, state $D)"
