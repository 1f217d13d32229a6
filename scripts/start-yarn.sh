#!/usr/bin/env bash
# A real YARN for the gp-yarn tests: a MiniYARNCluster (ResourceManager + NodeManager in one background JVM)
# on 127.0.0.1, and Spark (PyPI pyspark) to submit kernels to it.
#
#   bash scripts/start-yarn.sh            start the single-RM cluster (idempotent: a live one is kept)
#   bash scripts/start-yarn.sh --ha       start the HA pair (rm0 active, rm1 standby) instead
#   bash scripts/start-yarn.sh [--ha] --status   exit 0 if that cluster is running
#   bash scripts/start-yarn.sh [--ha] --stop     stop it
#   bash scripts/start-yarn.sh --env      print the variables the tests read (after a start)
#
# Cached in $GP_YARN_CACHE (default /var/cache/gp-ci/yarn, outside the clone, so a fresh CI clone on the same
# machine reuses it; cold, everything is fetched and built from scratch): the Maven repository and the jars
# of scripts/yarn/pom.xml (`mvn dependency:copy-dependencies`), GpMiniYarn compiled with javac, and pyspark
# (pip install --target). Each lives in a directory named after a hash of what made it, filled atomically.
# State per cluster in .ci-state/yarn (HA: .ci-state/yarn-ha): conf/ (yarn-site.xml + core-site.xml: use it as
# HADOOP_CONF_DIR), work/, staging/ (spark.yarn.stagingDir), <jvm>.pid and <jvm>.log per JVM (single: yarn;
# HA: rm0, rm1, nm: one RM per JVM, see scripts/yarn/GpMiniYarn.java).
#
# Ports (all on 127.0.0.1): single RM web app/REST 8088, RPC 18030-18033, control 18099;
# HA pair: web apps 18088 (rm0) and 18089 (rm1), RPC 18130-18133 / 18140-18143, control 18199 / 18200.
# A control port takes "state", "active", "standby", "stop" (see scripts/yarn/GpMiniYarn.java).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/scripts/yarn"
CACHE=${GP_YARN_CACHE:-/var/cache/gp-ci/yarn}
PYSPARK_VERSION=${GP_PYSPARK_VERSION:-4.0.1}
PY=${GP_TEST_PYTHON:-$ROOT/.venv/bin/python}
NM_MB=${GP_TEST_YARN_NM_MB:-6144}

log() { echo "[start-yarn] $*" >&2; }
die() { echo "[start-yarn] ERROR: $*" >&2; exit 1; }

ha=0
action=start
for arg in "$@"; do
    case "$arg" in
        --ha) ha=1 ;;
        --status | --stop | --env) action=${arg#--} ;;
        *) echo "usage: $0 [--ha] [--status|--stop|--env]" >&2; exit 2 ;;
    esac
done

if [ "$ha" = 1 ]; then
    STATE="$ROOT/.ci-state/yarn-ha" WEB_PORT=18088 RPC_BASE=18130 CONTROL_PORT=18199 JVMS=(rm0 rm1 nm)
else
    STATE="$ROOT/.ci-state/yarn" WEB_PORT=8088 RPC_BASE=18030 CONTROL_PORT=18099 JVMS=(yarn)
fi

java_home() {   # Debian's OpenJDK 17 (what CI installs), else whatever java is on PATH
    local j
    for j in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
        [ -x "$j/bin/javac" ] && { echo "$j"; return; }
    done
    j=$(readlink -f "$(command -v javac)") || die "no javac (install openjdk-17-jdk-headless)"
    dirname "$(dirname "$j")"
}

jvm_pid() {   # the pid of this checkout's JVM $1 (yarn, rm0, rm1, nm), if alive
    local pid
    [ -s "$STATE/$1.pid" ] || return 1
    pid=$(cat "$STATE/$1.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "GpMiniYarn .*$STATE/conf " || return 1
    echo "$pid"
}

running() {   # every JVM of the cluster is alive
    local j
    for j in "${JVMS[@]}"; do jvm_pid "$j" >/dev/null || return 1; done
}

control() {   # control PORT COMMAND: one control command; prints the answer
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as s:
    s.sendall(sys.argv[2].encode() + b"\n")
    print(s.makefile().readline().strip())
PYEOF
}

descendants() {   # pids of every process below $1 (the NodeManager's containers), from /proc
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]; if (q == root && p != root) print p } }'
}

stop_jvm() {   # stop_jvm NAME [CONTROL_PORT]
    local pid children
    pid=$(jvm_pid "$1") || { rm -f "$STATE/$1.pid"; return 0; }
    log "stopping $1 (pid $pid)"
    children=$(descendants "$pid")
    { [ -n "${2:-}" ] && control "$2" stop >/dev/null 2>&1; } || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$1 did not stop within 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Containers the NodeManager started run in their own sessions: none may outlive the cluster.
    # shellcheck disable=SC2086
    [ -n "$children" ] && kill -KILL $children 2>/dev/null
    rm -f "$STATE/$1.pid"
}

stop_cluster() {
    if [ "${#JVMS[@]}" = 1 ]; then
        stop_jvm yarn "$CONTROL_PORT"
    else
        stop_jvm nm
        stop_jvm rm1 $((CONTROL_PORT + 1))
        stop_jvm rm0 "$CONTROL_PORT"
    fi
    rm -f "$STATE"/conf/ready*
}

print_env() {
    local suffix=""
    [ "$ha" = 1 ] && suffix="_HA"
    echo "GP_TEST_YARN${suffix}_CONF_DIR=$STATE/conf"
    if [ "$ha" = 1 ]; then
        echo "GP_TEST_YARN_HA_ENDPOINTS=http://127.0.0.1:$WEB_PORT,http://127.0.0.1:$((WEB_PORT + 1))"
    else
        echo "GP_TEST_YARN_ENDPOINT=http://127.0.0.1:$WEB_PORT"
        echo "GP_TEST_SPARK_HOME=$(cat "$CACHE/pyspark-current" 2>/dev/null)/pyspark"
        echo "GP_TEST_JAVA_HOME=$(java_home)"
    fi
    if [ "$ha" = 1 ]; then
        echo "GP_TEST_YARN_HA_CONTROL=127.0.0.1:$CONTROL_PORT,127.0.0.1:$((CONTROL_PORT + 1))"
    else
        echo "GP_TEST_YARN_CONTROL=127.0.0.1:$CONTROL_PORT"
    fi
    echo "GP_TEST_YARN${suffix}_STAGING_DIR=$STATE/staging"
}

case "$action" in
    status) running && exit 0 || exit 1 ;;
    stop) stop_cluster; exit 0 ;;
    env) print_env; exit 0 ;;
esac

# ---- cached artefacts (serialised between concurrent runs) -------------------------------------------------
mkdir -p "$CACHE" "$STATE"
exec 9>"$CACHE/.lock"
flock 9
JAVA_HOME=$(java_home)
export JAVA_HOME
command -v mvn >/dev/null || die "no mvn (install maven)"

pom_hash=$(cat "$SRC/pom.xml" | sha256sum | cut -c1-16)
JARS="$CACHE/jars-$pom_hash"
if [ ! -d "$JARS" ]; then
    log "fetching the minicluster jars with Maven (scripts/yarn/pom.xml) ..."
    rm -rf "$JARS.tmp"
    (cd "$SRC" && mvn -q -B -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
        -DoutputDirectory="$JARS.tmp") >"$CACHE/mvn.log" 2>&1 || { tail -n 30 "$CACHE/mvn.log" >&2; die "mvn failed"; }
    mv "$JARS.tmp" "$JARS"
fi

classes_hash=$(cat "$SRC/pom.xml" "$SRC/GpMiniYarn.java" "$SRC/log4j.properties" "$SRC/capacity-scheduler.xml" | sha256sum | cut -c1-16)
CLASSES="$CACHE/classes-$classes_hash"
if [ ! -d "$CLASSES" ]; then
    log "compiling GpMiniYarn.java ..."
    rm -rf "$CLASSES.tmp"
    mkdir -p "$CLASSES.tmp"
    "$JAVA_HOME/bin/javac" -nowarn -d "$CLASSES.tmp" -cp "$JARS/*" "$SRC/GpMiniYarn.java" 2>&1 | grep -v '^Note:' >&2 || true
    [ -f "$CLASSES.tmp/GpMiniYarn.class" ] || die "javac failed"
    cp "$SRC/log4j.properties" "$SRC/capacity-scheduler.xml" "$CLASSES.tmp/"
    mv "$CLASSES.tmp" "$CLASSES"
fi

PYSPARK="$CACHE/pyspark-$PYSPARK_VERSION"
if [ ! -d "$PYSPARK" ]; then
    [ -x "$PY" ] || die "no python at $PY (run scripts/test.sh, or set GP_TEST_PYTHON)"
    log "installing pyspark $PYSPARK_VERSION into $PYSPARK (pip --target) ..."
    rm -rf "$PYSPARK.tmp"
    "$PY" -m pip install -q --target "$PYSPARK.tmp" "pyspark==$PYSPARK_VERSION" >"$CACHE/pip.log" 2>&1 \
        || { tail -n 30 "$CACHE/pip.log" >&2; die "pip install pyspark failed"; }
    mv "$PYSPARK.tmp" "$PYSPARK"
fi
echo "$PYSPARK" >"$CACHE/pyspark-current"
exec 9>&-

# ---- the cluster ---------------------------------------------------------------------------------------------
rest_ok() {   # the active RM's REST API answers with a RUNNING node
    "$PY" - "$WEB_PORT" <<'PYEOF' 2>/dev/null
import json, sys, urllib.request
nodes = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ws/v1/cluster/nodes", timeout=5))
sys.exit(0 if any(n["state"] == "RUNNING" for n in (nodes.get("nodes") or {}).get("node", [])) else 1)
PYEOF
}

if running && rest_ok; then
    log "YARN minicluster already running ($STATE)"
    print_env
    exit 0
fi
stop_cluster
if "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $WEB_PORT), timeout=1)" 2>/dev/null; then
    die "port 127.0.0.1:$WEB_PORT is taken by another process (another checkout's YARN?): stop it first"
fi
getent hosts "$(hostname)" >/dev/null || die "the hostname $(hostname) does not resolve (add it to /etc/hosts)"

rm -rf "$STATE/work" "$STATE/conf"
mkdir -p "$STATE/work" "$STATE/conf" "$STATE/staging"
# Java 17: Hadoop's reflection (and the NodeManager) needs these packages opened.
OPENS=()
for p in java.lang java.lang.invoke java.lang.reflect java.io java.net java.nio java.util java.util.concurrent \
         sun.nio.ch sun.nio.cs sun.security.action sun.util.calendar; do
    OPENS+=("--add-opens=java.base/$p=ALL-UNNAMED")
done

start_jvm() {   # start_jvm NAME GpMiniYarn-args...: a background JVM in its own session, log NAME.log
    local name=$1
    shift
    # The minicluster puts its NodeManager dirs under ./target: run it in the work dir. setsid: its own
    # session, so a test run's signals never reach it.
    (cd "$STATE/work" && exec setsid "$JAVA_HOME/bin/java" -Xmx768m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        "${OPENS[@]}" -Djava.net.preferIPv4Stack=true -cp "$JARS/*:$CLASSES" GpMiniYarn "$@" \
        </dev/null >"$STATE/$name.log" 2>&1 & echo $! >"$STATE/$name.pid")
}

wait_for() {   # wait_for FILE WHAT: until FILE exists, while every started JVM lives (120 s at most)
    local j
    for _ in $(seq 1 240); do
        [ -f "$1" ] && return 0
        for j in "${JVMS[@]}"; do
            # kill -0, not jvm_pid: right after the start the pid may still be the subshell about to exec.
            if [ -s "$STATE/$j.pid" ] && ! kill -0 "$(cat "$STATE/$j.pid")" 2>/dev/null; then
                tail -n 40 "$STATE/$j.log" >&2
                die "$j exited before $2 (log: $STATE/$j.log)"
            fi
        done
        sleep 0.5
    done
    die "$2 did not happen within 120 s (logs: $STATE/*.log)"
}

# A start that fails part-way stops what it started.
trap 'rc=$?; [ "$rc" = 0 ] || stop_cluster; exit "$rc"' EXIT
t0=$SECONDS
if [ "$ha" = 1 ]; then
    log "starting the YARN HA pair (web apps 127.0.0.1:$WEB_PORT and :$((WEB_PORT + 1))) ..."
    start_jvm rm0 ha-rm 0 "$STATE/conf" "$STATE/work" "$WEB_PORT" "$RPC_BASE" "$CONTROL_PORT"
    start_jvm rm1 ha-rm 1 "$STATE/conf" "$STATE/work" "$WEB_PORT" "$RPC_BASE" "$CONTROL_PORT"
    wait_for "$STATE/conf/ready-rm0" "rm0 became active"
    start_jvm nm ha-nm "$STATE/conf" "$STATE/work" "$WEB_PORT" "$RPC_BASE" "$NM_MB"
    wait_for "$STATE/conf/ready-rm1" "rm1 started"
    wait_for "$STATE/conf/ready-nm" "the NodeManager started"
    for _ in $(seq 1 120); do rest_ok && break; sleep 0.5; done
    rest_ok || die "the NodeManager did not register with the active RM within 60 s"
    touch "$STATE/conf/ready"
    log "YARN HA pair up in $((SECONDS - t0)) s: rm0 $(control "$CONTROL_PORT" state), rm1 $(control $((CONTROL_PORT + 1)) state)"
else
    log "starting the YARN minicluster (web app 127.0.0.1:$WEB_PORT) ..."
    start_jvm yarn cluster "$STATE/conf" "$STATE/work" "$WEB_PORT" "$RPC_BASE" "$CONTROL_PORT" "$NM_MB"
    wait_for "$STATE/conf/ready" "the NodeManager registered"
    rest_ok || die "the RM REST API does not list the NodeManager"
    log "YARN minicluster up in $((SECONDS - t0)) s: $(control "$CONTROL_PORT" state)"
fi
print_env
