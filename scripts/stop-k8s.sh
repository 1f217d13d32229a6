#!/usr/bin/env bash
# Stop what scripts/start-k8s.sh started (by pid file only), remove the pod containers its kubelet left on dockerd,
# and unmount the kubelet's directories.
#
#   bash scripts/stop-k8s.sh               the whole cluster
#   bash scripts/stop-k8s.sh --apiserver   only the kube-apiserver (an outage; scripts/start-k8s.sh --apiserver
#                                          brings it back)
set -euo pipefail
D=${GP_K8S_STATE:-/var/lib/gp-ci/k8s-cluster}
log() { echo "[stop-k8s] $*" >&2; }

stop() {   # stop NAME: TERM the process in NAME.pid (only if it is that program), wait, then KILL
    local pid
    pid=$(cat "$D/$1.pid" 2>/dev/null) || return 0
    rm -f "$D/$1.pid"
    [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1:0:15}" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || { log "stopped $1"; return 0; }; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    log "killed $1"
}

[ -d "$D" ] || exit 0
# start-k8s.sh calls this while it holds the lock (GP_K8S_LOCK_HELD=1): taking it again would deadlock.
if [ "${GP_K8S_LOCK_HELD:-0}" != 1 ]; then
    exec 9>"$D/start.lock"
    flock 9
fi
case "${1:-}" in
    --apiserver) stop kube-apiserver; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--apiserver]" >&2; exit 2 ;;
esac
for c in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
rm -f "$D/cluster-key"
# containers of kubelet pods carry this label; nothing else on the shared dockerd does
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=io.kubernetes.pod.namespace)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || { docker rm -f $ids >/dev/null; log "removed $(echo "$ids" | wc -w) pod containers"; }
fi
# the kubelet bind-mounts its --root-dir onto itself (and pod volumes below it)
awk -v p="$D/kubelet" 'index($2,p)==1{print $2}' /proc/mounts | sort -r | xargs -r -n1 umount
true
