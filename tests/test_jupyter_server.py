"""What a real Jupyter server (jupyter_server 2.x, started here on 127.0.0.1) tells a REST client when gp
fails a kernel start: the status that fits and gp's own message, not 500 "Unhandled error"."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from gp_core import (
    BackendError,
    GPError,
    InvalidOptionError,
    LaunchError,
    LaunchTimeoutError,
    NotAuthorizedError,
    ServerConfigError,
    UnknownBackendError,
)
from gp_core.provisioner import http_error
from gp_core.testing import TEST_USERNAME, kernel_manager, kernelspec_json, start_kernel, write_kernelspec

TOKEN = "gp-test-token-0123456789"
FAILING_ARGV = [sys.executable, "-c", "import sys; print('launcher exploded', file=sys.stderr); sys.exit(3)"]
HANGING_ARGV = [sys.executable, "-c", "import time; time.sleep(600)"]

#: kernelspec name -> (backend, config, argv or None for gp's launcher)
SPECS: dict[str, tuple[str, dict[str, Any], list[str] | None]] = {
    "gp-ok": ("local", {}, None),
    "gp-unknown-backend": ("nope", {}, None),
    "gp-refused-user": ("local", {"authorized_users": ["alice"]}, None),
    "gp-denied-user": ("local", {"unauthorized_users": [TEST_USERNAME]}, None),
    "gp-invalid-option": ("local", {"stop_timeout": "slow"}, None),
    "gp-failed-launch": ("local", {"launch_timeout": 60}, FAILING_ARGV),
    "gp-timed-out-launch": ("local", {"launch_timeout": 1.5}, HANGING_ARGV),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterServer:
    """``python -m jupyter_server`` on 127.0.0.1 with gp kernelspecs, driven over its REST API."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.port = _free_port()
        data = root / "data"
        for name, (backend, config, argv) in SPECS.items():
            spec_dir = data / "kernels" / name
            spec_dir.mkdir(parents=True)
            spec = kernelspec_json(backend, argv=argv, config=config)
            (spec_dir / "kernel.json").write_text(json.dumps(spec))
        (root / "notebooks").mkdir()
        env = {
            **os.environ,
            "JUPYTER_PATH": str(data),
            "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            "JUPYTER_DATA_DIR": str(root / "data-user"),
            # The user kernels are started for (the server's env reaches every start request).
            "KERNEL_USERNAME": TEST_USERNAME,
            "GP_RESPONSE_IP": "127.0.0.1",
            "GP_RESPONSE_PORT": "0",
        }
        env.pop("GP_AUTHORIZED_USERS", None)
        self.log_path = root / "server.log"
        with self.log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
            self.process = self._start(args, env, root, log_file)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/api/status")[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"jupyter_server did not start:\n{self.log()}")
            time.sleep(0.1)

    def _start(self, args: Any, env: dict[str, str], root: Any, log_file: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={TOKEN}",
                "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={root / 'notebooks'}",
                "--allow-root",
                *args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        return status, json.loads(text) if text else None

    def start_kernel(self, name: str) -> tuple[int, Any]:
        return self.request("POST", "/api/kernels", {"name": name})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    started = JupyterServer(tmp_path_factory.mktemp("jupyter-server"))
    yield started
    started.stop()


def test_the_server_starts_gp_kernels(server: JupyterServer) -> None:
    status, model = server.start_kernel("gp-ok")
    assert status == 201, (model, server.log())
    assert server.request("DELETE", f"/api/kernels/{model['id']}")[0] == 204


@pytest.mark.parametrize(
    ("name", "status", "reason", "message"),
    [
        ("gp-unknown-backend", 400, "UnknownBackendError", "Unknown gp backend 'nope'; installed backends: "),
        (
            "gp-refused-user",
            403,
            "NotAuthorizedError",
            f"User '{TEST_USERNAME}' is not authorized to start kernel 'gp local test': only alice may",
        ),
        ("gp-denied-user", 403, "NotAuthorizedError", f"User '{TEST_USERNAME}' is not authorized"),
        (
            "gp-invalid-option",
            400,
            "InvalidOptionError",
            "Invalid option 'stop_timeout' for gp backend 'local' (from kernel.json value 'slow'): ",
        ),
        ("gp-failed-launch", 500, "LaunchError", "Kernel process "),
        ("gp-timed-out-launch", 500, "LaunchTimeoutError", "Kernel "),
    ],
)
def test_a_failed_start_reaches_the_client_with_gps_status_and_message(
    server: JupyterServer, name: str, status: int, reason: str, message: str
) -> None:
    got_status, body = server.start_kernel(name)
    assert (got_status, body["reason"]) == (status, reason), body
    assert body["message"].startswith(message), body
    assert body["message"] != "Unhandled error"


def test_a_failed_launch_says_why(server: JupyterServer) -> None:
    _, body = server.start_kernel("gp-failed-launch")
    assert "exited with status 3 during start-up" in body["message"]
    assert "launcher exploded" in body["message"]  # the backend's reason: the log's tail
    _, body = server.start_kernel("gp-timed-out-launch")
    assert "did not report its connection info within 1.5 s (launch_timeout)" in body["message"]


def test_a_refused_kernel_is_not_listed(server: JupyterServer) -> None:
    server.start_kernel("gp-refused-user")
    status, kernels = server.request("GET", "/api/kernels")
    assert status == 200
    assert [k["name"] for k in kernels if k["name"] != "gp-ok"] == []


def test_a_bad_server_config_is_a_500_naming_it(tmp_path: Path) -> None:
    started = JupyterServer(tmp_path, "--LocalOptions.stop_timout=3")
    try:
        status, body = started.start_kernel("gp-ok")
    finally:
        started.stop()
    assert (status, body["reason"]) == (500, "ServerConfigError"), body
    assert body["message"].startswith(
        "Unknown option(s) 'stop_timout' in server config c.LocalOptions (gp backend 'local') "
        "(did you mean 'stop_timeout'?)"
    )


async def test_a_pending_kernel_shows_gps_message_when_connected(tmp_path: Path) -> None:
    # With pending kernels the server answers POST before the launch: the failure reaches the client in
    # the kernel's model (jupyter_server alone would say "starting" until a client connects) and when it
    # connects to the kernel (websocket: 500 with gp's message).
    started = JupyterServer(tmp_path, "--AsyncMappingKernelManager.use_pending_kernels=True")
    try:
        for name, message in [
            ("gp-refused-user", f"User '{TEST_USERNAME}' is not authorized"),
            ("gp-unknown-backend", "Unknown gp backend 'nope'"),
            ("gp-failed-launch", "Kernel process "),
        ]:
            status, model = started.start_kernel(name)
            assert status == 201, model
            path = f"/api/kernels/{model['id']}"
            deadline = time.monotonic() + 30
            while model["execution_state"] != "dead" and time.monotonic() < deadline:
                time.sleep(0.1)
                model = started.request("GET", path)[1]
            assert model["execution_state"] == "dead", model
            assert model["reason"].startswith(message), model
            url = f"ws://127.0.0.1:{started.port}/api/kernels/{model['id']}/channels?token={TOKEN}"
            with pytest.raises(HTTPClientError) as info:
                await websocket_connect(url)
            assert info.value.code == 500
            status, model = started.request("GET", f"/api/kernels/{model['id']}")
            assert status == 200
            assert model["execution_state"] == "dead"
            assert model["reason"].startswith(message), model
            assert started.request("DELETE", f"/api/kernels/{model['id']}")[0] == 204
    finally:
        started.stop()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownBackendError("nope", ["local"]), 400),
        (InvalidOptionError("bad 100% value"), 400),
        (ServerConfigError("bad server config"), 500),
        (NotAuthorizedError("not you"), 403),
        (BackendError("backend failed"), 500),
        (LaunchError("launch failed"), 500),
        (LaunchTimeoutError("too slow"), 500),
    ],
)
def test_gp_errors_become_http_errors_in_place(error: GPError, status: int) -> None:
    from tornado.web import HTTPError

    cls, message = type(error), str(error)
    assert http_error(error) is error
    assert isinstance(error, HTTPError) and isinstance(error, cls)
    assert type(error).__name__ == cls.__name__ and type(error).__qualname__ == cls.__qualname__
    assert (error.status_code, error.reason) == (status, cls.__name__)
    assert str(error) == message  # not tornado's "HTTP 400: Bad Request (...)"
    assert error.get_message() == message  # what tornado logs
    assert error.log_message % error.args == message  # what jupyter_server's HTML error page shows
    assert http_error(error) is error and type(error).__mro__[1] is cls  # idempotent


async def test_the_provisioner_raises_http_errors(tmp_path: Path) -> None:
    from tornado.web import HTTPError

    write_kernelspec(tmp_path, "k", backend="local", config={"authorized_users": ["alice"]})
    with pytest.raises(NotAuthorizedError) as info:
        await start_kernel(kernel_manager(tmp_path, "k"))
    assert isinstance(info.value, HTTPError) and isinstance(info.value, PermissionError)
    write_kernelspec(tmp_path, "u", backend="nope")
    with pytest.raises(UnknownBackendError) as unknown:
        await start_kernel(kernel_manager(tmp_path, "u"))
    assert isinstance(unknown.value, HTTPError) and unknown.value.status_code == 400


def test_importing_gp_core_imports_no_tornado() -> None:
    code = "import sys, gp_core; assert 'tornado' not in sys.modules, 'tornado imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
