"""A real PySpark kernel on the ssh backend (client mode, local master): the application is named after
the kernel, the request's KERNEL_EXTRA_SPARK_OPTS reach spark-submit, and with impersonation on the
application runs as the requesting user (--proxy-user). Spark: GP_TEST_SPARK_HOME, a pip-installed
pyspark (``pip install --target .ci-state/pyspark-3.4.4 pyspark==3.4.4``); skipped without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gp_core.spark import spark_launcher_args
from gp_core.testing import TEST_USERNAME, execute, launcher_argv

from .conftest import SshKernels

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parents[3]
SPARK_HOME = Path(os.environ.get("GP_TEST_SPARK_HOME") or ROOT / ".ci-state/pyspark-3.4.4/pyspark")


@pytest.fixture
def spark_env() -> dict[str, str]:
    if not (SPARK_HOME / "bin/spark-submit").is_file():
        pytest.skip(f"no Spark at {SPARK_HOME} (set GP_TEST_SPARK_HOME)")
    py4j = sorted((SPARK_HOME / "python/lib").glob("py4j-*-src.zip"))
    return {
        "SPARK_HOME": str(SPARK_HOME),
        "PYTHONPATH": ":".join([str(SPARK_HOME.parent), *map(str, py4j)]),
        "PYSPARK_SUBMIT_ARGS": "--master local[1] --deploy-mode client --conf spark.ui.enabled=false pyspark-shell",
    }


async def test_spark_kernel_named_after_itself_with_request_options_as_the_user(
    kernels: SshKernels, spark_env: dict[str, str]
) -> None:
    name = kernels.spec(
        "spark",
        argv=[*launcher_argv(kernels.sshd["python"]), *spark_launcher_args("lazy")],
        impersonation_enabled=True,
        launch_timeout=120,
    )
    spec_file = kernels.directory / "specs" / name / "kernel.json"
    import json

    spec = json.loads(spec_file.read_text())
    spec["env"].update(spark_env)
    spec_file.write_text(json.dumps(spec))
    km = kernels.manager(name)
    kernel_id = await kernels.start(km, KERNEL_EXTRA_SPARK_OPTS="--conf spark.gp.marker=42")
    try:
        output, reply = await execute(
            km, "print(sc.appName, spark.conf.get('spark.gp.marker'), sc.sparkUser())", timeout=180
        )
        assert reply["status"] == "ok", output
        assert output.split() == [kernel_id, "42", TEST_USERNAME]
    finally:
        await km.shutdown_kernel(now=True)


async def test_gss_auth_is_refused_with_the_reason_on_this_paramiko(kernels: SshKernels) -> None:
    import paramiko
    from gp_ssh._connections import check_gss_support

    try:
        check_gss_support()
    except Exception:
        pass
    else:
        pytest.skip(f"paramiko {paramiko.__version__} supports GSS-API: needs a Kerberos KDC to test")
    km = kernels.manager(kernels.spec("gss", gss_auth=True))
    with pytest.raises(Exception, match="GSS-API authentication .* not available: paramiko"):
        await kernels.start(km)
