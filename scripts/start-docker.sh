#!/usr/bin/env bash
# Make sure a usable dockerd is running and is a (single-node) swarm manager. Idempotent.
#
#   bash scripts/start-docker.sh
#
# - If `docker info` already works, that daemon is used as it is (nothing is restarted).
# - Otherwise dockerd is started in the background, detached from this shell (its own session, stdio
#   redirected), logging to .ci-state/dockerd.log; its pid goes to .ci-state/dockerd.pid so
#   scripts/stop-backends.sh can stop it. Extra dockerd flags: GP_DOCKERD_ARGS.
# - Then `docker swarm init --advertise-addr 127.0.0.1` (listening on 127.0.0.1:${GP_SWARM_PORT:-2377} only)
#   if the swarm is inactive, and waits until the node is a Ready manager.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.ci-state"
LOG="$STATE/dockerd.log"
PIDFILE="$STATE/dockerd.pid"
WAIT=${GP_DOCKERD_WAIT:-90}
SWARM_PORT=${GP_SWARM_PORT:-2377}

log() { echo "[start-docker] $*" >&2; }
die() {
    echo "[start-docker] ERROR: $*" >&2
    if [ -f "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 30 "$LOG" >&2
    fi
    exit 1
}

command -v docker >/dev/null || die "docker CLI not found (run scripts/setup-system.sh)"
mkdir -p "$STATE"

our_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    echo "$pid"
}

# One starter at a time (two concurrent test runs must not both start a dockerd).
exec 9>"$STATE/start-docker.lock"
flock 9

if docker info >/dev/null 2>&1; then
    log "dockerd is running"
else
    DOCKERD=$(command -v dockerd || true)
    [ -n "$DOCKERD" ] || die "dockerd not found (run scripts/setup-system.sh to install docker.io)"
    if pid=$(our_pid); then
        log "dockerd (pid $pid) is starting; waiting"
    else
        log "starting dockerd (log: $LOG)"
        # containerd/runc must be found by dockerd; sbin dirs may be missing from a CI user's PATH
        export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
        echo "==== $(date -Is) start-docker.sh: dockerd ${GP_DOCKERD_ARGS:-}" >>"$LOG"
        # Own session, no inherited stdio and no other inherited fds (lock files, a CI job's output pipe):
        # the daemon outlives this script and must not hold any of them open.
        (
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                [ "$fd" -gt 2 ] && { eval "exec $fd>&-" 2>/dev/null || true; }
            done
            # shellcheck disable=SC2086
            exec setsid "$DOCKERD" ${GP_DOCKERD_ARGS:-} </dev/null >>"$LOG" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$PIDFILE"
    fi
    t0=$SECONDS
    until docker info >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "dockerd (pid $pid) exited during start-up"
        [ $((SECONDS - t0)) -lt "$WAIT" ] || die "dockerd not ready after ${WAIT}s"
        sleep 0.5
    done
    log "dockerd ready after $((SECONDS - t0)) s (pid $pid)"
fi

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }
state=$(swarm_state)
case "$state" in
    active) log "swarm active" ;;
    inactive | "")
        log "initialising a single-node swarm on 127.0.0.1:$SWARM_PORT"
        out=$(docker swarm init --advertise-addr "127.0.0.1:$SWARM_PORT" --listen-addr "127.0.0.1:$SWARM_PORT" 2>&1) || {
            # another process may have initialised it in the meantime
            [ "$(swarm_state)" = active ] || die "docker swarm init failed: $out"
        }
        ;;
    pending)
        t0=$SECONDS
        while [ "$(swarm_state)" = pending ] && [ $((SECONDS - t0)) -lt 30 ]; do sleep 0.5; done
        ;;
    *) die "swarm is in state '$state'; fix it by hand (e.g. docker swarm leave --force, then re-run)" ;;
esac
[ "$(swarm_state)" = active ] || die "swarm is not active (state: $(swarm_state))"

# The swarm node must be a Ready manager before services can be scheduled.
t0=$SECONDS
until [ "$(docker node ls --format '{{.Self}} {{.Status}}' 2>/dev/null | grep '^true ' | cut -d' ' -f2)" = Ready ]; do
    [ $((SECONDS - t0)) -lt 30 ] || die "swarm node not Ready after 30 s: $(docker node ls 2>&1)"
    sleep 0.5
done
log "docker + swarm ready"
