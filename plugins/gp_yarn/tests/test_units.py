"""gp-yarn's pieces without a cluster: options, endpoint discovery, what reaches spark-submit and YARN."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gp_yarn._options import YarnOptions
from gp_yarn._rm import configured_endpoints, endpoints_from_conf_dir
from gp_yarn._submit import (
    am_environment,
    extra_spark_options,
    process_env,
    properties_text,
    submit_options,
    yarn_env_value,
)

from gp_core import BackendError, InvalidOptionError


def options(**values: object) -> YarnOptions:
    return YarnOptions.from_config("yarn", values)  # type: ignore[return-value]


def test_booleans_from_env_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_YARN_ENDPOINT_SECURITY_ENABLED", "false")
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "False")
    opts = options()
    assert opts.yarn_endpoint_security_enabled is False and opts.impersonation_enabled is False
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "yes")
    assert options().impersonation_enabled is True
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "maybe")
    with pytest.raises(InvalidOptionError, match="GP_IMPERSONATION_ENABLED"):
        options()


def test_endpoints_are_checked_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert options(yarn_endpoint="http://127.0.0.1:8088/").yarn_endpoint == "http://127.0.0.1:8088"
    for bad in ("127.0.0.1:8088", "ftp://rm:8088", "http://rm:8088/ws/v1", "http://user:pw@rm:8088"):
        with pytest.raises(InvalidOptionError, match="yarn_endpoint"):
            options(yarn_endpoint=bad)
    monkeypatch.setenv("GP_ALT_YARN_ENDPOINT", "not a url")
    with pytest.raises(InvalidOptionError, match="GP_ALT_YARN_ENDPOINT"):
        options()


def test_cert_bundle(tmp_path: Path) -> None:
    assert options().verify() is True
    assert options(yarn_cert_bundle="false").verify() is False
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert options(yarn_cert_bundle=str(bundle)).verify() == str(bundle)
    with pytest.raises(InvalidOptionError, match="yarn_cert_bundle"):
        options(yarn_cert_bundle="/no/such/bundle.pem")


def _site(directory: Path, properties: dict[str, str]) -> Path:
    body = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in properties.items())
    (directory / "yarn-site.xml").write_text(f"<configuration>{body}</configuration>")
    return directory


def test_endpoints_from_hadoop_conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = _site(tmp_path, {"yarn.resourcemanager.webapp.address": "127.0.0.1:8088"})
    assert endpoints_from_conf_dir(str(single)) == ["http://127.0.0.1:8088"]
    _site(
        tmp_path,
        {
            "yarn.resourcemanager.ha.enabled": "true",
            "yarn.resourcemanager.ha.rm-ids": "rm1,rm2",
            "yarn.resourcemanager.webapp.address.rm1": "127.0.0.1:18088",
            "yarn.resourcemanager.hostname.rm2": "127.0.0.2",
        },
    )
    assert endpoints_from_conf_dir(str(tmp_path)) == ["http://127.0.0.1:18088", "http://127.0.0.2:8088"]
    _site(
        tmp_path,
        {"yarn.http.policy": "HTTPS_ONLY", "yarn.resourcemanager.webapp.https.address": "127.0.0.1:8090"},
    )
    assert endpoints_from_conf_dir(str(tmp_path)) == ["https://127.0.0.1:8090"]
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert configured_endpoints(options()) == ["https://127.0.0.1:8090"]
    assert configured_endpoints(options(yarn_endpoint="http://127.0.0.1:1")) == ["http://127.0.0.1:1"]
    monkeypatch.delenv("HADOOP_CONF_DIR")
    with pytest.raises(InvalidOptionError, match="needs a ResourceManager"):
        configured_endpoints(options())


def test_extra_spark_options_allowed_and_refused() -> None:
    assert extra_spark_options("--conf 'spark.a=x y' --executor-memory=2g --num-executors 3") == [
        "--conf",
        "spark.a=x y",
        "--executor-memory",
        "2g",
        "--num-executors",
        "3",
    ]
    refused = [
        "--proxy-user root",
        "--files /etc/shadow",
        "--jars /x.jar",
        "--properties-file /etc/x",
        "--conf spark.yarn.keytab=/k",
        "--conf spark.kerberos.principal=p",
        "--conf spark.yarn.queue=q",
        "--conf spark.app.name=other",
        "--conf spark.yarn.appMasterEnv.GP_LAUNCH_TOKEN=t",
        "--conf notspark.x=1",
        "--executor-memory 1g;rm",
        "--num-executors",
        "'unbalanced",
        "--master local",
    ]
    for text in refused:
        with pytest.raises(BackendError, match="KERNEL_EXTRA_SPARK_OPTS"):
            extra_spark_options(text)


def test_submit_options_are_argv_items() -> None:
    opts = options(impersonation_enabled=True, staging_dir="/s")
    env = {
        "KERNEL_QUEUE": "gp",
        "KERNEL_NODE_LABEL": "gpu",
        "KERNEL_USERNAME": "alice",
        "KERNEL_EXTRA_SPARK_OPTS": "--conf 'spark.x=$(id)'",
    }
    argv = submit_options("k1", env, opts, "/p")
    assert argv == [
        "--name",
        "k1",
        "--properties-file",
        "/p",
        "--load-spark-defaults",
        "--conf",
        "spark.yarn.submit.waitAppCompletion=false",
        "--conf",
        "spark.yarn.stagingDir=/s",
        "--queue",
        "gp",
        "--conf",
        "spark.yarn.am.nodeLabelExpression=gpu",
        "--conf",
        "spark.yarn.executor.nodeLabelExpression=gpu",
        "--proxy-user",
        "alice",
        "--conf",
        "spark.x=$(id)",
    ]
    for name, value in (
        ("KERNEL_QUEUE", "a b"),
        ("KERNEL_QUEUE", "gp\nroot"),
        ("KERNEL_NODE_LABEL", "x;y"),
        ("KERNEL_USERNAME", "-root"),
    ):
        with pytest.raises(BackendError, match=name):
            submit_options("k1", {**env, name: value}, opts, "/p")


def test_request_set_variables_never_reach_spark_submit() -> None:
    env = {
        "SPARK_OPTS": "--conf spark.evil=1",
        "SPARK_HOME": "/spark",
        "KERNEL_X": "1",
        "GP_LAUNCH_TOKEN": "t",
    }
    request_env = {"SPARK_OPTS": "--conf spark.evil=1", "KERNEL_X": "1"}
    result = process_env(env, request_env)
    assert "SPARK_OPTS" not in result or result["SPARK_OPTS"] != "--conf spark.evil=1"
    assert result["SPARK_HOME"] == "/spark" and result["KERNEL_X"] == "1" and "GP_LAUNCH_TOKEN" not in result
    assert am_environment(env) == {"KERNEL_X": "1", "GP_LAUNCH_TOKEN": "t"}


@pytest.mark.parametrize(
    "value",
    ["$(touch /tmp/x)", "`id`", 'a"b\\c', "{{PWD}} <CPS> }}{{", "line\nbreak", "${HOME} $PWD", "é ✓", "\\"],
)
def test_yarn_env_values_survive_the_container_launch_script(value: str) -> None:
    # What a Unix NodeManager writes into launch_container.sh (after its own marker expansion).
    line = (
        'export V="' + yarn_env_value(value).replace("{{", "$").replace("}}", "").replace("<CPS>", ":") + '"'
    )
    result = subprocess.run(
        ["bash", "-c", line + '\nprintf %s "$V"'], capture_output=True, text=True, check=True
    )
    assert result.stdout == value


def test_properties_file_escapes() -> None:
    text = properties_text({"KERNEL_A": "x=y: #!\\", "PYSPARK_PYTHON": "/py"})
    assert "spark.yarn.appMasterEnv.KERNEL_A=x\\=y\\: \\#\\!\\\\\\\\" in text
    assert "spark.executorEnv.PYSPARK_PYTHON=/py" in text
