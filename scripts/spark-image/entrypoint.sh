#!/bin/bash
# Entrypoint of gp's Spark kernel image (gp's own, doing what Spark's Kubernetes entrypoint does).
#
# Spark on Kubernetes starts its pods with this image's entrypoint and these arguments:
#   driver <spark-submit args>  the driver pod (spark-submit --deploy-mode cluster made it): run spark-submit
#                               in client mode inside the pod with those args (the kernel launcher is the app)
#   executor                    an executor pod: run the executor backend with the SPARK_* env Spark set
#   anything else               run it as it is (e.g. python3 -c ...)
#
# The driver advertises an address instead of its Service's DNS name (clusters without cluster DNS work) and
# takes free ports (fixed ones collide between kernels sharing a node's network): the pod IP Spark passes,
# or GP_SPARK_ADVERTISE_ADDRESS when set (e.g. 127.0.0.1 for hostNetwork pods on a single-node test cluster,
# whose node address must not be used). Executors register under the same address.
set -euo pipefail

export SPARK_HOME=${SPARK_HOME:-/opt/spark}
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-/opt/venv/bin/python3}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PYSPARK_PYTHON}
SPARK_CLASSPATH="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*"
# A pod runs as whatever uid the template says, usually without a passwd entry: give it a HOME it can write
# and tell the JVM (which would take "?" from the missing passwd entry).
if [ ! -w "${HOME:-/}" ] || [ "${HOME:-/}" = / ]; then export HOME=/tmp; fi
# Hadoop's login fails for a uid without a passwd entry: add one when /etc/passwd lets this group write it.
if ! getent passwd "$(id -u)" >/dev/null && [ -w /etc/passwd ]; then
    echo "kernel:x:$(id -u):$(id -g):gp kernel:$HOME:/usr/sbin/nologin" >>/etc/passwd
fi
export SPARK_SUBMIT_OPTS="${SPARK_SUBMIT_OPTS:+$SPARK_SUBMIT_OPTS }-Duser.home=$HOME"

case "${1:-}" in
    driver)
        shift
        bind=${GP_SPARK_ADVERTISE_ADDRESS:-${SPARK_DRIVER_BIND_ADDRESS:?SPARK_DRIVER_BIND_ADDRESS is not set (Spark sets it on driver pods)}}
        exec "$SPARK_HOME/bin/spark-submit" \
            --conf "spark.driver.bindAddress=$bind" \
            --conf "spark.driver.host=$bind" \
            --conf "spark.driver.port=0" \
            --conf "spark.blockManager.port=0" \
            --conf "spark.driver.blockManager.port=0" \
            --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$bind" \
            --conf "spark.jars.ivy=$HOME/.ivy2" \
            --deploy-mode client \
            "$@"
        ;;
    executor)
        shift
        # SPARK_JAVA_OPT_<n>: the executor's JVM options, in order (Spark sets them on the pod).
        java_opts=()
        while IFS= read -r name; do
            java_opts+=("${!name}")
        done < <(compgen -e | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n)
        exec "$JAVA_HOME/bin/java" "${java_opts[@]}" -Duser.home="$HOME" \
            -Xms"${SPARK_EXECUTOR_MEMORY:?}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
            -cp "$SPARK_CLASSPATH${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}" \
            org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
            --driver-url "${SPARK_DRIVER_URL:?}" \
            --executor-id "${SPARK_EXECUTOR_ID:?}" \
            --cores "${SPARK_EXECUTOR_CORES:?}" \
            --app-id "${SPARK_APPLICATION_ID:?}" \
            --hostname "${GP_SPARK_ADVERTISE_ADDRESS:-${SPARK_EXECUTOR_POD_IP:?}}" \
            --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
            --podName "${SPARK_EXECUTOR_POD_NAME:-}" \
            "$@"
        ;;
    "")
        exec /bin/bash
        ;;
    *)
        exec "$@"
        ;;
esac
