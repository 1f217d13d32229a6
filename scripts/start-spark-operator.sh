#!/usr/bin/env bash
# Start (or reuse) the real Spark Operator (kubeflow/spark-operator v2) against the test cluster, out of cluster.
#
#   bash scripts/start-spark-operator.sh --kubeconfig FILE   build it when missing, apply its CRDs, start it
#   bash scripts/start-spark-operator.sh --status            exit 0 when it runs and is healthy
#   bash scripts/start-spark-operator.sh --stop              stop it (the CRDs stay)
#
# The operator (module github.com/kubeflow/spark-operator/v2) is fetched with `go mod download -json` from the
# Go module proxy and built with `go build ./cmd/operator` in the downloaded module directory (its go.mod has
# replace directives, so `go install module@version` is refused), with Go under /usr/local/go. The binary is
# cached in /var/cache/gp-ci/spark-operator/<version>/ (a warm machine skips the build), and its own
# SparkApplication / ScheduledSparkApplication / SparkConnect CRD manifests, from the same module, are
# applied to the cluster (minus their `default: ""` schema entries, which Kubernetes 1.20 rejects).
#
# It runs as `spark-operator controller start --kubeconfig FILE`: no leader election, no webhook (the
# controller alone submits plain driver pods; gp passes pod settings through pod templates, not through the
# webhook's pod mutation), metrics and pprof off, its health probe on 127.0.0.1 only. Its controller runs
# $SPARK_HOME/bin/spark-submit itself: SPARK_HOME is the host's Spark (scripts/build-spark-image.sh), and
# KUBERNETES_SERVICE_HOST/PORT name the apiserver (loopback) for spark-submit's k8s:// master.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${GP_SPARK_OPERATOR_VERSION:-v2.3.0}
MODULE=github.com/kubeflow/spark-operator/v2
CACHE=${GP_SPARK_OPERATOR_CACHE:-/var/cache/gp-ci/spark-operator}
BIN="$CACHE/$VERSION/spark-operator"
D=${GP_SPARK_OPERATOR_STATE:-/var/lib/gp-ci/spark-operator}
HEALTH_ADDR=127.0.0.1:18081
GO=${GP_GO:-/usr/local/go/bin/go}
log() { echo "[start-spark-operator] $*" >&2; }
die() { echo "[start-spark-operator] ERROR: $*" >&2; exit 1; }

mode=start kubeconfig=""
while [ $# -gt 0 ]; do
    case "$1" in
        --kubeconfig) kubeconfig=${2:?--kubeconfig needs a file}; shift 2 ;;
        --status) mode=status; shift ;;
        --stop) mode=stop; shift ;;
        *) echo "usage: $0 --kubeconfig FILE | --status | --stop" >&2; exit 2 ;;
    esac
done
mkdir -p "$D"

running() {
    local pid
    pid=$(cat "$D/operator.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = spark-operator ]
}
healthy() { running && curl -fsS --max-time 2 "http://$HEALTH_ADDR/healthz" >/dev/null 2>&1; }

case "$mode" in
    status) healthy; exit $? ;;
    stop)
        if running; then
            pid=$(cat "$D/operator.pid")
            log "stopping the Spark Operator (pid $pid)"
            kill -TERM "$pid"
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$D/operator.pid"
        exit 0
        ;;
esac
[ -n "$kubeconfig" ] && [ -f "$kubeconfig" ] || die "--kubeconfig FILE is required (scripts/start-k8s.sh writes it)"

exec 9>"$CACHE.lock"
flock 9

# ---- 1. the operator's module and binary (cached per version) -------------------------------------------
export GOPATH="$CACHE/gopath" GOMODCACHE="$CACHE/gopath/pkg/mod" GOCACHE="$CACHE/gocache" GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local CGO_ENABLED=0
[ -x "$GO" ] || die "Go not found at $GO (set GP_GO)"
t0=$SECONDS
info=$("$GO" mod download -json "$MODULE@$VERSION") || die "go mod download $MODULE@$VERSION failed: $info"
SRC=$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
[ -d "$SRC/cmd/operator" ] || die "the module $MODULE@$VERSION has no cmd/operator ($SRC)"
if [ ! -x "$BIN" ]; then
    log "building $MODULE@$VERSION (go build ./cmd/operator; minutes when cold) ..."
    mkdir -p "$(dirname "$BIN")"
    (cd "$SRC" && "$GO" build -o "$BIN.tmp" ./cmd/operator) >"$CACHE/build.log" 2>&1 \
        || { tail -n 30 "$CACHE/build.log" >&2; die "go build ./cmd/operator failed (log: $CACHE/build.log)"; }
    mv "$BIN.tmp" "$BIN"
    log "built $BIN in $((SECONDS - t0)) s"
fi
exec 9>&-

# ---- 2. its CRDs, from the same module -------------------------------------------------------------------
PY=${GP_PYTHON:-$ROOT/.venv/bin/python}
"$PY" - "$kubeconfig" "$SRC"/config/crd/bases/*.yaml <<'PYEOF' || die "applying the operator's CRDs failed"
import sys, yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
api = client.ApiextensionsV1Api(config.new_client_from_config(config_file=sys.argv[1]))

def strip_empty_defaults(node):
    # Kubernetes 1.20's CRD validation reads a schema's `default: ""` as null and rejects it ("must be of
    # type string"); those defaults only fill object-reference names with "", so they are dropped.
    if isinstance(node, dict):
        if node.get("default") == "":
            del node["default"]
        for value in node.values():
            strip_empty_defaults(value)
    elif isinstance(node, list):
        for value in node:
            strip_empty_defaults(value)

for path in sys.argv[2:]:
    for crd in yaml.safe_load_all(open(path)):
        strip_empty_defaults(crd)
        name = crd["metadata"]["name"]
        try:
            existing = api.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            api.create_custom_resource_definition(crd)
            print(f"[start-spark-operator] created CRD {name}", file=sys.stderr)
            continue
        crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
        api.replace_custom_resource_definition(name, crd)
# the operator's manager maps its kinds at start-up: wait until the API server serves them
import time
names = [c["metadata"]["name"] for p in sys.argv[2:] for c in yaml.safe_load_all(open(p))]
deadline = time.monotonic() + 30
while True:
    conditions = {n: {c.type: c.status for c in (api.read_custom_resource_definition(n).status.conditions or [])} for n in names}
    if all(c.get("Established") == "True" for c in conditions.values()):
        break
    if time.monotonic() > deadline:
        sys.exit(f"CRDs not established within 30 s: {conditions}")
    time.sleep(0.2)
PYEOF

# ---- 3. the operator --------------------------------------------------------------------------------------
SPARK_HOME=${GP_SPARK_HOME:-$(bash "$ROOT/scripts/build-spark-image.sh" --spark-home)}
[ -x "$SPARK_HOME/bin/spark-submit" ] || die "SPARK_HOME=$SPARK_HOME has no bin/spark-submit"
server=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["clusters"][0]["cluster"]["server"])' "$kubeconfig")
hostport=${server#https://}
if healthy && [ "$(cat "$D/operator.key" 2>/dev/null)" = "$BIN $kubeconfig $server $SPARK_HOME" ]; then
    log "the Spark Operator runs (pid $(cat "$D/operator.pid")); reusing it"
    exit 0
fi
running && bash "$0" --stop
cp "$kubeconfig" "$D/kubeconfig"
t0=$SECONDS
SPARK_HOME="$SPARK_HOME" KUBECONFIG="$D/kubeconfig" \
    KUBERNETES_SERVICE_HOST="${hostport%:*}" KUBERNETES_SERVICE_PORT="${hostport##*:}" \
    setsid "$BIN" controller start --kubeconfig "$D/kubeconfig" --leader-election=false \
        --health-probe-bind-address "$HEALTH_ADDR" --metrics-bind-address 0 --pprof-bind-address 0 \
        --enable-ui-service=false --zap-log-level=info \
        </dev/null >>"$D/operator.log" 2>&1 &
echo $! >"$D/operator.pid"
echo "$BIN $kubeconfig $server $SPARK_HOME" >"$D/operator.key"
for _ in $(seq 1 120); do
    healthy && { log "the Spark Operator is up in $((SECONDS - t0)) s (log: $D/operator.log)"; exit 0; }
    running || { tail -n 30 "$D/operator.log" >&2; die "the Spark Operator exited (log: $D/operator.log)"; }
    sleep 0.25
done
tail -n 30 "$D/operator.log" >&2
die "the Spark Operator did not become healthy within 30 s"
