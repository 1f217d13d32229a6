#!/usr/bin/env bash
# A pip-installed Spark (PyPI pyspark, its bundled jars) for the ssh Spark tests and the Toree kernels:
#   bash scripts/setup-pyspark.sh        -> .ci-state/pyspark-$VERSION/pyspark is a SPARK_HOME (needs a JDK)
# Env: GP_PYSPARK_VERSION (default 3.4.4: Scala 2.12, what Apache Toree 0.5 runs on).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${GP_PYSPARK_VERSION:-3.4.4}
DEST="$ROOT/.ci-state/pyspark-$VERSION"
PY="$ROOT/.venv/bin/python"
if [ -x "$DEST/pyspark/bin/spark-submit" ]; then
    echo "$DEST/pyspark"
    exit 0
fi
rm -rf "$DEST.tmp"
"$PY" -m pip install -q --no-deps --target "$DEST.tmp" "pyspark==$VERSION" >&2
mv "$DEST.tmp" "$DEST"
echo "$DEST/pyspark"
