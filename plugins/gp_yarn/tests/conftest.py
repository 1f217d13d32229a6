"""Fixtures for gp-yarn's end-to-end tests against the test YARN (``scripts/start-yarn.sh``).

The ResourceManager and NodeManager run on this machine, so the kernels' application masters (where gp's
launcher runs) are local processes too: a test can look at the RM's REST API, the local spark-submit
processes and the staging directory directly. Without the test YARN the tests skip, or fail when
``GP_REQUIRED_BACKENDS`` names ``yarn``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gp_core.testing import require_backend

SPARK_INIT = "lazy"


async def close_listener() -> None:
    """Close this loop's response listener: a module-scoped loop's listener would otherwise only be
    released (with a ResourceWarning) when the interpreter exits."""
    from gp_core.listener import ResponseListener

    await (await ResponseListener.instance()).close()


def rm_get(endpoint: str, path: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(endpoint + path, timeout=timeout) as response:
        return json.load(response)


def apps_named(endpoint: str, name: str) -> list[dict[str, Any]]:
    apps = (rm_get(endpoint, "/ws/v1/cluster/apps").get("apps") or {}).get("app") or []
    return [app for app in apps if app.get("name") == name]


def kill_app(endpoint: str, app_id: str) -> None:
    """Kill an application from outside gp, as an operator would (RM REST API)."""
    request = urllib.request.Request(
        f"{endpoint}/ws/v1/cluster/apps/{app_id}/state",
        data=b'{"state": "KILLED"}',
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def alive_apps(endpoint: str) -> list[dict[str, Any]]:
    states = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"
    return (rm_get(endpoint, f"/ws/v1/cluster/apps?states={states}").get("apps") or {}).get("app") or []


def control(address: str, command: str) -> str:
    """One command to a test RM's control port (scripts/yarn/GpMiniYarn.java): state, active, standby."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(command.encode() + b"\n")
        return sock.makefile().readline().strip()


def _problem(endpoint: str, conf_dir: str, spark_home: str) -> str | None:
    if not endpoint or not conf_dir or not spark_home:
        return "GP_TEST_YARN_ENDPOINT / GP_TEST_YARN_CONF_DIR / GP_TEST_SPARK_HOME are not set (bash scripts/start-yarn.sh)"
    if not Path(conf_dir, "yarn-site.xml").is_file():
        return f"{conf_dir}/yarn-site.xml is missing"
    if not Path(spark_home, "bin", "spark-submit").is_file():
        return f"no spark-submit in {spark_home}/bin"
    try:
        nodes = rm_get(endpoint, "/ws/v1/cluster/nodes", timeout=5)
    except OSError as exc:
        return f"no ResourceManager at {endpoint} ({exc})"
    if not any(node.get("state") == "RUNNING" for node in (nodes.get("nodes") or {}).get("node") or []):
        return f"the ResourceManager at {endpoint} has no running NodeManager"
    return None


@pytest.fixture(scope="session")
def yarn() -> dict[str, Any]:
    """The test YARN's coordinates, or a skip (a failure when yarn is a required backend)."""
    env = os.environ
    info = {
        "endpoint": env.get("GP_TEST_YARN_ENDPOINT", ""),
        "conf_dir": env.get("GP_TEST_YARN_CONF_DIR", ""),
        "spark_home": env.get("GP_TEST_SPARK_HOME", ""),
        "java_home": env.get("GP_TEST_JAVA_HOME", ""),
        "control": env.get("GP_TEST_YARN_CONTROL", ""),
        "staging_dir": env.get("GP_TEST_YARN_STAGING_DIR", ""),
        "python": env.get("GP_TEST_PYTHON") or sys.executable,
    }
    problem = _problem(info["endpoint"], info["conf_dir"], info["spark_home"])
    if problem:
        require_backend("yarn", problem)
    return info


@pytest.fixture(scope="session")
def yarn_ha(yarn: dict[str, Any]) -> dict[str, Any]:
    """The HA pair (rm0 active, rm1 standby), or a skip/failure like :func:`yarn`."""
    env = os.environ
    endpoints = [e for e in env.get("GP_TEST_YARN_HA_ENDPOINTS", "").split(",") if e]
    controls = [c for c in env.get("GP_TEST_YARN_HA_CONTROL", "").split(",") if c]
    conf_dir = env.get("GP_TEST_YARN_HA_CONF_DIR", "")
    if len(endpoints) != 2 or len(controls) != 2 or not conf_dir:
        require_backend("yarn", "the HA pair is not running (bash scripts/start-yarn.sh --ha)")
    for address in controls:  # a previous test run may have left rm1 active
        try:
            control(address, "state")
        except OSError as exc:
            require_backend("yarn", f"the HA pair's control port {address} does not answer ({exc})")
    if control(controls[0], "state") != "active":
        control(controls[1], "standby")
        control(controls[0], "active")
    problem = _problem(endpoints[0], conf_dir, yarn["spark_home"])
    if problem:
        require_backend("yarn", problem)
    return {
        **yarn,
        "endpoints": endpoints,
        "controls": controls,
        "conf_dir": conf_dir,
        "staging_dir": env.get("GP_TEST_YARN_HA_STAGING_DIR", ""),
    }


def spark_opts(spark_home: str) -> str:
    """spark-submit options that fit the test YARN: small containers, local jars, loopback only."""
    return " ".join(
        [
            "--driver-memory 512m --executor-memory 512m --num-executors 1",
            # The jars are on the (only) node already: no 300 MB upload per kernel.
            f"--conf spark.yarn.jars=local:{spark_home}/jars/*",
            # Spark's own traffic (driver <-> executors) stays on 127.0.0.1 too.
            "--conf spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
            "--conf spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1",
            "--conf spark.ui.enabled=false",
            "--conf spark.yarn.maxAppAttempts=1",
        ]
    )


def install_spec(
    directory: Path,
    name: str,
    yarn: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    init_mode: str = SPARK_INIT,
    endpoint: bool = True,
) -> Path:
    """``jupyter yarn-spec install`` into ``directory`` (a kernelspec dir), then the test machine's env."""
    from gp_yarn.specapp import YarnInstallSpecApp

    args = [
        f"--prefix={directory}",
        f"--kernel-name={name}",
        f"--python-root={Path(yarn['python']).parent.parent}",
        f"--spark-home={yarn['spark_home']}",
        f"--spark-init-mode={init_mode}",
        f"--extra-spark-opts={spark_opts(yarn['spark_home'])}",
        "--launch-timeout=150",
        "--replace",
    ]
    if endpoint:
        args.append(f"--yarn-endpoint={yarn['endpoint']}")
    app = YarnInstallSpecApp()
    app.initialize(args)
    installed = app.install()
    spec_file = installed / "kernel.json"
    spec = json.loads(spec_file.read_text())
    # PYSPARK_PYTHON must be the test venv's python (ipykernel + pycryptodomex): the NodeManager is local.
    spec["env"]["PYSPARK_PYTHON"] = yarn["python"]
    spec["env"]["HADOOP_CONF_DIR"] = yarn["conf_dir"]
    spec["env"]["SPARK_LOCAL_IP"] = "127.0.0.1"
    if yarn.get("java_home"):
        spec["env"]["JAVA_HOME"] = yarn["java_home"]
    cfg = spec["metadata"]["kernel_provisioner"]["config"]
    cfg.update(
        {"staging_dir": yarn["staging_dir"], "kernel_log_dir": str(directory / "logs"), **(config or {})}
    )
    (directory / "logs").mkdir(exist_ok=True)
    spec_file.write_text(json.dumps(spec, indent=1))
    return installed.parent


def staging_left(staging_dir: str, app_id: str) -> list[str]:
    return [str(p) for p in Path(staging_dir).glob(f"*/.sparkStaging/{app_id}")]


def submit_processes(kernel_id: str) -> list[int]:
    """Live local processes (spark-submit, the AM's python/java) whose command line names ``kernel_id``."""
    found = []
    needle = kernel_id.encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in proc.joinpath("cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found
