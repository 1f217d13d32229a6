#!/bin/sh
# Kernel image entrypoint, written by `jupyter image-bootstrap install`.
#
# Starts gp's kernel launcher from the environment a gp provisioner gives the container, so an image can
# run kernels without a command line: KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY (required), PORT_RANGE,
# KERNEL_LANGUAGE, KERNEL_CLASS_NAME, KERNEL_SPARK_CONTEXT_INIT_MODE, KERNEL_LAUNCHERS_DIR. The launch
# token stays in GP_LAUNCH_TOKEN, where the launcher reads it (never on a command line).
#
# Every value is passed as one quoted argument: request data is never parsed by this shell.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
launchers_dir=${KERNEL_LAUNCHERS_DIR:-$here/kernel-launchers}
language=$(printf '%s' "${KERNEL_LANGUAGE:-python}" | tr '[:upper:]' '[:lower:]')

fail() {
    echo "bootstrap-kernel.sh: $*" >&2
    exit 2
}

[ -n "${KERNEL_ID:-}" ] || fail "KERNEL_ID is not set"
[ -n "${RESPONSE_ADDRESS:-}" ] || fail "RESPONSE_ADDRESS is not set"
[ -n "${PUBLIC_KEY:-}" ] || fail "PUBLIC_KEY is not set"

case "$language" in
python | python3)
    launcher="$launchers_dir/python/launch_ipykernel.py"
    [ -f "$launcher" ] || fail "launcher $launcher is missing (run jupyter image-bootstrap install)"
    exec python3 "$launcher" \
        --kernel-id "$KERNEL_ID" \
        --port-range "${PORT_RANGE:-0..0}" \
        --response-address "$RESPONSE_ADDRESS" \
        --public-key "$PUBLIC_KEY" \
        --spark-context-initialization-mode "${KERNEL_SPARK_CONTEXT_INIT_MODE:-none}" \
        --kernel-class-name "${KERNEL_CLASS_NAME:-ipykernel.ipkernel.IPythonKernel}"
    ;;
r)
    # launch_irkernel.py speaks gp's protocol, then execs Rscript: R keeps this process's pid.
    launcher="$launchers_dir/r/launch_irkernel.py"
    [ -f "$launcher" ] || fail "launcher $launcher is missing (run jupyter image-bootstrap install --languages r)"
    exec python3 "$launcher" \
        --kernel-id "$KERNEL_ID" \
        --port-range "${PORT_RANGE:-0..0}" \
        --response-address "$RESPONSE_ADDRESS" \
        --public-key "$PUBLIC_KEY" \
        --spark-context-initialization-mode "${KERNEL_SPARK_CONTEXT_INIT_MODE:-none}"
    ;;
scala)
    # launch_toree.py speaks gp's protocol, then execs spark-submit with Apache Toree (SPARK_HOME, SPARK_OPTS).
    launcher="$launchers_dir/scala/launch_toree.py"
    [ -f "$launcher" ] || fail "launcher $launcher is missing (run jupyter image-bootstrap install --languages scala)"
    exec python3 "$launcher" \
        --kernel-id "$KERNEL_ID" \
        --port-range "${PORT_RANGE:-0..0}" \
        --response-address "$RESPONSE_ADDRESS" \
        --public-key "$PUBLIC_KEY" \
        --spark-context-initialization-mode "${KERNEL_SPARK_CONTEXT_INIT_MODE:-none}"
    ;;
*)
    fail "no gp launcher for kernel language '$language' (supported: python, r, scala)"
    ;;
esac
