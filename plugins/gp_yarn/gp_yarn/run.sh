#!/usr/bin/env bash
# gp-yarn kernelspec: start the kernel as a YARN application (spark-submit --master yarn --deploy-mode cluster).
#
#   run.sh [SPARK-SUBMIT-OPTION ...] -- LAUNCHER-ARGUMENT ...
#
# gp's yarn backend puts the options it derives for the kernel (application name = kernel id, properties
# file, queue, node label, proxy user, the request's checked extra options) before "--", one argument each;
# they reach spark-submit quoted, never parsed by a shell. SPARK_OPTS comes from the kernelspec's env
# (written by `jupyter yarn-spec install`, not by a request) and is split on whitespace, without globbing.
set -euo pipefail
set -f
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
opts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    opts+=("$1")
    shift
done
[ $# -gt 0 ] && shift
: "${SPARK_HOME:?SPARK_HOME is not set (the kernelspec env sets it)}"
# shellcheck disable=SC2086
exec "$SPARK_HOME/bin/spark-submit" --master yarn --deploy-mode cluster ${SPARK_OPTS:-} "${opts[@]}" \
    "$here/scripts/launch_ipykernel.py" "$@"
