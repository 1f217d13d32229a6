"""The ``docker-swarm`` backend without a daemon: the service it asks for (one task, never restarted) and
how task states map to a kernel's status, driven through the backend's own hooks with task rows as the
daemon's ``GET /tasks`` returns them, served by a fake API client."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from docker.errors import NotFound
from gp_docker import _client, swarm

from gp_core import LaunchError
from gp_core.plugins import get_backend

from .conftest import QuietEvents, quiet_listing

KERNEL_ID = "5a0c9f1e-8b7d-4c2a-9e3f-1d2c3b4a5f6e"
SERVICE_ID = "svc-kernel-1"
CONTAINER_ID = "c0ffee" * 10 + "abcd"
LOCAL_NODE = "node-local"
LOG = logging.getLogger("test")
HANDLE = {"service_id": SERVICE_ID, "name": f"alice-{KERNEL_ID}", "kernel_id": KERNEL_ID}

#: Every state the swarm reports for a task (docker's api/types/swarm TaskState), and whether gp counts a
#: kernel whose task is in it as still running (or on its way there).
ACTIVE = ["new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting", "running"]
FINAL = ["complete", "shutdown", "failed", "rejected", "remove", "orphaned"]


def task_row(
    state: str,
    *,
    error: str = "",
    exit_code: int | None = None,
    container_id: str = CONTAINER_ID,
    index: int = 10,
    service_id: str = SERVICE_ID,
) -> dict[str, Any]:
    """A task as ``GET /tasks`` lists it (only the fields gp reads, spelled as the daemon spells them)."""
    status: dict[str, Any] = {"State": state, "Message": state, "Timestamp": "2024-01-01T00:00:00Z"}
    if error:
        status["Err"] = error
    if container_id or exit_code is not None:
        container: dict[str, Any] = {"ContainerID": container_id, "PID": 0}
        if exit_code is not None:
            container["ExitCode"] = exit_code
        status["ContainerStatus"] = container
    return {
        "ID": f"task-{index}",
        "Version": {"Index": index},
        "ServiceID": service_id,
        "NodeID": LOCAL_NODE,
        "Labels": {},
        "Status": status,
        "DesiredState": "running",
    }


class FakeAPI:
    """The few docker APIClient calls the swarm backend's status path makes, answered from memory."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.services = {SERVICE_ID}
        self.log = b"line 1\ngp-task-log-marker\n"
        self.created: list[dict[str, Any]] = []
        self.task_filters: list[Any] = []

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        self.task_filters.append(filters)
        return list(self.rows)

    def inspect_service(self, service: str) -> dict[str, Any]:
        if service not in self.services:
            raise NotFound(f"service {service} not found")
        return {"ID": service, "Spec": {"Labels": {}}}

    def service_logs(self, service: str, **_: Any) -> list[bytes]:
        return [self.log]

    def create_service(self, **kwargs: Any) -> dict[str, str]:
        self.created.append(kwargs)
        return {"ID": SERVICE_ID}

    def events(self, **_: Any) -> Any:
        raise RuntimeError("no event stream in unit tests")  # the event thread just retries later


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    fake = FakeAPI()
    monkeypatch.setattr(_client, "get_api", lambda: fake)
    tasks = quiet_listing(_client._list_tasks)
    monkeypatch.setattr(_client, "TASKS", tasks)
    monkeypatch.setattr(_client, "EVENTS", QuietEvents((tasks,)))
    monkeypatch.setattr(_client, "created_at", {})
    monkeypatch.setattr(swarm, "_reported_pending", set())
    return fake


@pytest.fixture
def backend(no_docker_env: None) -> Any:
    """The docker-swarm backend (this module's own: conftest's ``backend`` is the e2e parametrisation)."""
    return get_backend("docker-swarm")


async def poll(backend: Any, launching: bool) -> int | None:
    options = backend.make_options({"image": "gp/kernel-py:test"})
    return await backend.call("poll", handle=dict(HANDLE), options=options, launching=launching, log=LOG)


# ------------------------------------------------------------------ the service spec


def test_rendered_service_is_never_restarted_and_has_no_virtual_ip(api, backend):
    options = backend.make_options({"image": "gp/kernel-py:test", "network": "host"})
    resources = backend.hook.render_resources(
        kernel_id=KERNEL_ID,
        cmd=["python3", "-c", "pass"],
        env={"KERNEL_ID": KERNEL_ID, "KERNEL_USERNAME": "alice"},
        request_env={},
        resource_dir=None,
        options=options,
        namespace=None,
        log=LOG,
    )
    assert resources["kind"] == "service"
    handle = _client.create_service(resources, LOG)
    assert handle == HANDLE
    (created,) = api.created
    template = created["task_template"]
    # The swarm must never start a kernel again on its own: a new task would be a new kernel nobody knows.
    assert template["RestartPolicy"]["Condition"] == "none"
    assert created["endpoint_spec"]["Mode"] == "dnsrr"
    assert created["name"] == f"alice-{KERNEL_ID}"
    assert created["labels"] == {
        "kernel_id": KERNEL_ID,
        "component": "kernel",
        "app": "gateway-provisioners",
        "gp.owner": "gp",
    }
    assert template["ContainerSpec"]["Args"] == ["python3", "-c", "pass"]
    assert template["ContainerSpec"]["Labels"] == created["labels"]
    assert [network["Target"] for network in template["Networks"]] == ["host"]


# ------------------------------------------------------------------ task state -> kernel status


@pytest.mark.parametrize("state", ACTIVE)
@pytest.mark.parametrize("launching", [True, False])
async def test_tasks_on_their_way_to_running_are_alive(api, backend, state, launching):
    api.rows = [task_row(state, container_id="" if state != "running" else CONTAINER_ID)]
    assert await poll(backend, launching) is None


def test_the_active_states_are_exactly_the_swarms_non_final_ones():
    assert set(ACTIVE) == swarm.ALIVE_STATES == _client.TASK_ACTIVE_STATES
    assert not set(FINAL) & swarm.ALIVE_STATES


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (task_row("complete", exit_code=0), ["task complete", "(exit code 0)"]),
        (
            task_row("failed", error="task: non-zero exit (3)", exit_code=3),
            ["task failed: task: non-zero exit (3) (exit code 3)"],
        ),
        (
            task_row("rejected", error="No such image: gp/no-such-image:never", container_id=""),
            ["task rejected: No such image: gp/no-such-image:never"],
        ),
        (task_row("shutdown", exit_code=137), ["task shutdown", "(exit code 137)"]),
        (task_row("orphaned", error="node is down", container_id=""), ["task orphaned: node is down"]),
        (task_row("remove", exit_code=0), ["task remove"]),
    ],
    ids=lambda value: value["Status"]["State"] if isinstance(value, dict) else None,
)
async def test_a_task_in_a_final_state_fails_the_launch_with_the_swarms_reason_and_log(
    api, backend, row, expected
):
    api.rows = [row]
    with pytest.raises(LaunchError) as failure:
        await poll(backend, launching=True)
    message = str(failure.value)
    assert message.startswith(f"Kernel service {HANDLE['name']} failed to start: ")
    for part in expected:
        assert part in message
    assert message.endswith("Last lines of its log:\nline 1\ngp-task-log-marker")
    if not row["Status"].get("ContainerStatus"):
        assert "exit code" not in message  # no container ran: no exit code to speak of


@pytest.mark.parametrize(
    ("row", "status"),
    [
        (task_row("complete", exit_code=0), 0),
        (task_row("failed", exit_code=3), 3),
        (task_row("shutdown", exit_code=143), 143),
        (task_row("rejected", container_id=""), 0),
        (task_row("orphaned", container_id=""), 0),
        (task_row("remove"), 0),
    ],
    ids=lambda value: value["Status"]["State"] if isinstance(value, dict) else str(value),
)
async def test_a_task_in_a_final_state_after_start_up_is_an_exit(api, backend, row, status):
    api.rows = [row]
    assert await poll(backend, launching=False) == status


async def test_states_are_read_case_insensitively(api, backend):
    api.rows = [task_row("Running")]
    assert await poll(backend, launching=False) is None
    api.rows = [task_row("FAILED", exit_code=2, index=11)]
    _client.TASKS.invalidate()
    assert await poll(backend, launching=False) == 2


async def test_the_newest_task_decides(api, backend):
    """A service's older task records linger (the swarm deletes them lazily); the highest version wins,
    whatever the order of the listing."""
    api.rows = [
        task_row("running", index=30),
        task_row("failed", exit_code=1, index=7),
        task_row("shutdown", exit_code=0, index=12),
        task_row("failed", exit_code=9, index=99, service_id="another-kernels-service"),
    ]
    assert await poll(backend, launching=True) is None
    api.rows = [task_row("running", index=30), task_row("complete", exit_code=0, index=31)]
    _client.TASKS.invalidate()
    assert await poll(backend, launching=False) == 0


async def test_the_listing_asks_only_for_gps_kernels(api, backend):
    api.rows = [task_row("running")]
    await poll(backend, launching=False)
    assert api.task_filters == [{"label": ["component=kernel", "app=gateway-provisioners", "gp.owner=gp"]}]


async def test_a_dead_container_counts_before_the_swarm_updates_its_task(api, backend):
    api.rows = [task_row("running")]
    assert await poll(backend, launching=False) is None
    # The event stream saw the task's container die; the task record still says running.
    _client.EVENTS._remember_exit(
        {"Action": "die", "Actor": {"ID": CONTAINER_ID, "Attributes": {"exitCode": "137"}}}
    )
    assert await poll(backend, launching=False) == 137
    with pytest.raises(LaunchError, match=r"task failed \(exit code 137\)"):
        await poll(backend, launching=True)
    _client.EVENTS._remember_exit(
        {"Action": "die", "Actor": {"ID": CONTAINER_ID, "Attributes": {"exitCode": "0"}}}
    )
    with pytest.raises(LaunchError, match=r"task complete \(exit code 0\)"):
        await poll(backend, launching=True)


async def test_an_exit_of_another_container_changes_nothing(api, backend):
    api.rows = [task_row("running")]
    _client.EVENTS._remember_exit(
        {"Action": "die", "Actor": {"ID": "other", "Attributes": {"exitCode": "1"}}}
    )
    assert await poll(backend, launching=True) is None


async def test_no_task_yet_is_alive_while_the_service_exists(api, backend):
    api.rows = []
    assert await poll(backend, launching=True) is None
    assert await poll(backend, launching=False) is None


async def test_a_vanished_service_fails_a_launch_and_is_an_exit_afterwards(api, backend):
    api.rows, api.services = [], set()
    with pytest.raises(LaunchError, match="disappeared during start-up"):
        await poll(backend, launching=True)
    assert await poll(backend, launching=False) == 0


async def test_a_pending_task_that_cannot_be_scheduled_is_logged_once(api, backend, caplog):
    api.rows = [task_row("pending", error="no suitable node (1 node not available)", container_id="")]
    caplog.set_level(logging.WARNING, logger=LOG.name)
    for _ in range(3):
        _client.TASKS.invalidate()
        assert await poll(backend, launching=True) is None
    warnings = [r.getMessage() for r in caplog.records if "cannot be scheduled" in r.getMessage()]
    assert warnings == [
        f"Kernel service {HANDLE['name']} cannot be scheduled yet: no suitable node (1 node not available)"
    ]


def test_task_rows_with_missing_fields_do_not_break_the_mapping():
    status = _client._task_status({"ID": "t"})
    assert status == _client.TaskStatus(state="", error="", exit_code=None, container_id="", node_id="")
    status = _client._task_status(task_row("failed", error="boom", exit_code=-1))
    assert (status.state, status.error, status.exit_code, status.node_id) == (
        "failed",
        "boom",
        -1,
        LOCAL_NODE,
    )
