#!/usr/bin/env bash
# Stop what the test scripts started (for developers; CI machines are simply thrown away).
#
#   bash scripts/stop-backends.sh                 remove leftover kernel containers/services/pods, stop the test
#                                                 sshd, the test Kubernetes cluster and YARN clusters, and stop dockerd if
#                                                 scripts/start-docker.sh started it
#   bash scripts/stop-backends.sh --keep-docker   the same, but leave dockerd running
#   bash scripts/stop-backends.sh --kernels       only remove leftover kernel containers/services/pods
#   bash scripts/stop-backends.sh --k8s           only stop the test Kubernetes cluster (scripts/stop-k8s.sh)
#                                                 (and the Spark Operator, which runs against it)
#   bash scripts/stop-backends.sh --spark-operator  only stop the Spark Operator
#
# Kernel containers/services are those labelled component=kernel. A dockerd that these scripts did not start
# (no live .ci-state/dockerd.pid) is never stopped; the swarm is not left (it persists across restarts).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.ci-state"
PIDFILE="$STATE/dockerd.pid"

log() { echo "[stop-backends] $*" >&2; }

mode=${1:-all}
case "$mode" in
    all | --keep-docker | --kernels | --k8s | --spark-operator) ;;
    *) echo "usage: $0 [--keep-docker|--kernels|--k8s|--spark-operator]" >&2; exit 2 ;;
esac

remove_kernels() {
    command -v docker >/dev/null && docker info >/dev/null 2>&1 || return 0
    local svcs ctrs
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
        svcs=$(docker service ls -q --filter label=component=kernel)
        if [ -n "$svcs" ]; then
            log "removing kernel services:"
            docker service ls --filter label=component=kernel >&2
            # shellcheck disable=SC2086
            docker service rm $svcs >/dev/null
        fi
    fi
    # kernel pods' containers (labelled io.kubernetes.pod.uid) are the kubelet's to remove, see remove_pods
    ctrs=$(comm -23 <(docker ps -aq --filter label=component=kernel | sort) \
        <(docker ps -aq --filter label=io.kubernetes.pod.uid | sort))
    if [ -n "$ctrs" ]; then
        log "removing kernel containers:"
        docker ps -a --filter label=component=kernel >&2
        # shellcheck disable=SC2086
        docker rm -f $ctrs >/dev/null
    fi
}

stop_dockerd() {
    local pid
    [ -s "$PIDFILE" ] || { log "dockerd was not started by these scripts; leaving it alone"; return 0; }
    pid=$(cat "$PIDFILE")
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd did not stop within 60 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        log "dockerd from $PIDFILE is not running"
    fi
    rm -f "$PIDFILE"
}

remove_pods() {   # kernel pods / namespaces / RoleBindings gp-k8s left on the test cluster
    local kubeconfig="$STATE/k8s/kubeconfig"
    [ -f "$kubeconfig" ] && [ -x "$ROOT/.venv/bin/python" ] || return 0
    bash "$ROOT/scripts/start-k8s.sh" --status 2>/dev/null || return 0
    local found
    found=$("$ROOT/.venv/bin/python" "$ROOT/scripts/k8s-kernel-objects.py" "$kubeconfig" --delete) || return 0
    [ -z "$found" ] || { log "removed from the test cluster:"; echo "$found" >&2; }
}

if [ "$mode" = --spark-operator ]; then
    bash "$ROOT/scripts/start-spark-operator.sh" --stop
    exit 0
fi
if [ "$mode" = --k8s ]; then
    bash "$ROOT/scripts/start-spark-operator.sh" --stop
    bash "$ROOT/scripts/stop-k8s.sh"
    exit 0
fi
remove_kernels
remove_pods
[ "$mode" = --kernels ] && exit 0
bash "$ROOT/scripts/start-sshd.sh" --stop
bash "$ROOT/scripts/start-spark-operator.sh" --stop
bash "$ROOT/scripts/stop-k8s.sh"
bash "$ROOT/scripts/start-yarn.sh" --stop
bash "$ROOT/scripts/start-yarn.sh" --ha --stop
rm -f "$STATE/ssh/started-by-test"
[ "$mode" = --keep-docker ] || stop_dockerd
log "done"
