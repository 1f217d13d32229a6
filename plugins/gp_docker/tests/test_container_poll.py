"""The ``docker`` backend's status without a daemon: container rows as ``GET /containers/json`` lists them,
served by a fake API client, and the event stream's exits fed by hand."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from gp_docker import _client

from gp_core import LaunchError
from gp_core.plugins import get_backend

from .conftest import QuietEvents, quiet_listing

CONTAINER_ID = "feed" * 16
LOG = logging.getLogger("test")
HANDLE = {"container_id": CONTAINER_ID, "name": "alice-k1", "kernel_id": "k1"}


class FakeAPI:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.list_calls = 0

    def containers(self, **_: Any) -> list[dict[str, Any]]:
        self.list_calls += 1
        return self.rows

    def inspect_container(self, _ref: str) -> dict[str, Any]:
        return {"State": {"ExitCode": 3}}

    def logs(self, _ref: str, **_: Any) -> bytes:
        return b"Traceback: boom\n"


def row(state: str, status: str) -> dict[str, Any]:
    return {"Id": CONTAINER_ID, "State": state, "Status": status, "Names": ["/alice-k1"]}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    fake = FakeAPI()
    monkeypatch.setattr(_client, "get_api", lambda: fake)
    containers = quiet_listing(_client._list_containers)
    monkeypatch.setattr(_client, "CONTAINERS", containers)
    monkeypatch.setattr(_client, "EVENTS", QuietEvents((containers,)))
    monkeypatch.setattr(_client, "created_at", {})
    return fake


async def poll(launching: bool) -> int | None:
    backend = get_backend("docker")
    options = backend.make_options({"image": "gp/kernel-py:test"})
    return await backend.call("poll", handle=dict(HANDLE), options=options, launching=launching, log=LOG)


def die(container_id: str, code: str) -> None:
    _client.EVENTS._remember_exit(
        {"Action": "die", "Actor": {"ID": container_id, "Attributes": {"exitCode": code}}}
    )
    _client.EVENTS._invalidate()


async def test_the_die_event_wins_over_a_listing_that_still_says_running(api, no_docker_env):
    api.rows = [row("running", "Up 2 seconds")]
    assert await poll(launching=False) is None
    # What the daemon does: "die" first, then a listing fetched at once still says running.
    die(CONTAINER_ID, "0")
    assert await poll(launching=False) == 0
    assert api.list_calls == 2  # the event also made the listing refresh


async def test_a_container_dying_during_start_up_fails_the_launch_with_its_log(api, no_docker_env):
    api.rows = [row("running", "Up 1 second")]
    die(CONTAINER_ID, "3")
    with pytest.raises(LaunchError, match=r"exited with code 3 during start-up(.|\n)*boom"):
        await poll(launching=True)


async def test_another_containers_exit_changes_nothing(api, no_docker_env):
    api.rows = [row("running", "Up 2 seconds")]
    die("other", "1")
    assert await poll(launching=False) is None


async def test_the_listing_alone_reports_an_exit_code(api, no_docker_env):
    api.rows = [row("exited", "Exited (137) 1 second ago")]
    assert await poll(launching=False) == 137
    api.rows = []
    _client.EVENTS._invalidate()
    assert await poll(launching=False) == 0  # removed: gone counts as a clean exit
