"""The docker SDK side of gp-docker: one client per process, the shared status listings, and the
blocking create/inspect/remove calls.

The docker SDK blocks, so every function here that talks to the daemon is plain (sync) and is run by the
hook modules in a worker thread (``asyncio.to_thread``, or core's ``Rollback.create_in_thread``); status
comes from the :class:`gp_core.StatusSource` listings ``CONTAINERS`` and ``TASKS``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from gp_core import BackendError, Handle, Resources, StatusSource, WatchFeed, log_tail

from ._kernelspec import IMAGE_LAUNCHER
from ._options import APP_LABEL, OWNER_LABEL

#: Label of the containers gp_docker._pool parks (defined here: both modules need it).
POOL_LABEL = "gp.pool"
#: Filter of every listing: what gp-docker created, and nothing else on the daemon.
KERNEL_FILTER = {"label": ["component=kernel", f"app={APP_LABEL}", "=".join(OWNER_LABEL)]}
LOG_TAIL_LINES = 40
#: How long terminate waits for the daemon to report a kernel's resources gone before giving up.
GONE_TIMEOUT = 30.0

#: Swarm task states on the way to running, and running itself; every other state is final.
TASK_ACTIVE_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting", "running"}
)

_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")

_api: docker.APIClient | None = None
_api_lock = threading.Lock()
_local_node_id: str | None = None


def get_api() -> docker.APIClient:
    """The process's docker API client, created on first use from the server's ``DOCKER_*`` environment.

    One client for every kernel: its version negotiation (``GET /version``) and its connection pool are
    paid once per process, not once per call.
    """
    global _api
    with _api_lock:
        if _api is None:
            try:
                _api = docker.from_env().api
            except DockerException as exc:
                raise BackendError(
                    f"Cannot reach the docker daemon: {exc}. Is dockerd running, and DOCKER_HOST right?"
                ) from exc
        return _api


def reset_client() -> None:
    """Forget the client (tests; or after the daemon was restarted elsewhere)."""
    global _api, _local_node_id
    with _api_lock:
        if _api is not None:
            _api.close()
        _api = None
        _local_node_id = None


def describe(exc: BaseException) -> str:
    """The daemon's own words for an error, without the request URL the SDK prefixes."""
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)


#: SDK failures worth a user-facing BackendError (connection errors come from requests, not the SDK).
SDK_ERRORS = (DockerException, requests.RequestException)


# ---------------------------------------------------------------------------------------------------------
# Status: one listing per kind for every kernel, kept fresh by the daemon's event stream (gp_core.StatusSource)


@dataclass(frozen=True)
class ContainerStatus:
    state: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int | None
    name: str


@dataclass(frozen=True)
class TaskStatus:
    state: str  # new ... running, complete, shutdown, failed, rejected, remove, orphaned
    error: str
    exit_code: int | None
    container_id: str
    node_id: str


def _list_containers() -> dict[str, ContainerStatus]:
    try:
        rows = get_api().containers(all=True, filters=KERNEL_FILTER)
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not list kernel containers: {describe(exc)}") from exc
    statuses = {}
    for row in rows:
        match = _EXIT_CODE.match(row.get("Status") or "")
        names = row.get("Names") or ["?"]
        statuses[row["Id"]] = ContainerStatus(
            state=(row.get("State") or "").lower(),
            exit_code=int(match.group(1)) if match else None,
            name=names[0].lstrip("/"),
        )
    return statuses


def _list_tasks() -> dict[str, TaskStatus]:
    """The newest task of every kernel service, by service id."""
    try:
        rows = get_api().tasks(filters=KERNEL_FILTER)
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not list kernel service tasks: {describe(exc)}") from exc
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        service_id = row.get("ServiceID", "")
        current = newest.get(service_id)
        if current is None or row.get("Version", {}).get("Index", 0) > current.get("Version", {}).get(
            "Index", 0
        ):
            newest[service_id] = row
    return {service_id: _task_status(row) for service_id, row in newest.items()}


def _task_status(row: dict[str, Any]) -> TaskStatus:
    status = row.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    exit_code = container.get("ExitCode")
    return TaskStatus(
        state=(status.get("State") or "").lower(),
        error=status.get("Err") or "",
        exit_code=int(exit_code) if exit_code is not None else None,
        container_id=container.get("ContainerID") or "",
        node_id=row.get("NodeID") or "",
    )


class KernelEvents:
    """What the daemon's event stream tells about gp's kernel containers.

    The stream (one long-lived request per listing, filtered by the same labels) makes the listings
    refetch whenever a kernel container starts, dies or is destroyed, so with it live a poll costs no API
    call; without it (or while it reconnects) the listings refresh every ``max_age``. It also remembers
    the exit codes of containers that died: the daemon sends ``die`` before its listing stops saying
    running, and a swarm task reports the code only a while later.
    """

    EVENTS = ("start", "die", "destroy", "oom")
    #: Each stream request ends after this long (the daemon's ``until``), so a stopped source's thread ends.
    STREAM_SECONDS = 60
    MAX_REMEMBERED_EXITS = 1000

    def __init__(self, listings: tuple[StatusSource[Any], ...] = ()) -> None:
        self._listings = listings
        self._lock = threading.Lock()
        self._exits: dict[str, int] = {}  # container id -> exit code, for containers seen to die
        self.seen = 0  # events received (tests compare it with the listings' fetches)

    def exit_code(self, container_id: str) -> int | None:
        """The exit code of ``container_id`` if this process saw it die, else None."""
        return self._exits.get(container_id) if container_id else None

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._exits.pop(container_id, None)

    def follow(self, feed: WatchFeed[Any]) -> None:
        """A listing's watch: follow the event stream until it ends (see :class:`gp_core.StatusSource`)."""
        filters = {"type": "container", "label": KERNEL_FILTER["label"], "event": list(self.EVENTS)}
        # Each stream resumes where the previous one ended (the daemon replays events since then; one
        # second of overlap, as its times are whole seconds), so a reconnect needs no fresh listing.
        since = feed.resume.get("until")
        until = int(time.time()) + self.STREAM_SECONDS
        events = get_api().events(
            filters=filters, decode=True, since=None if since is None else since - 1, until=until
        )
        feed.on_stop(events.close)  # a blocked read returns once the source stops
        feed.connected(gapless=since is not None)
        for event in events:
            self.seen += 1
            self._remember_exit(event)
            self._invalidate()
            if feed.stopping.is_set():
                return
        feed.resume["until"] = until

    def _invalidate(self) -> None:
        for listing in self._listings:
            listing.invalidate()

    def _remember_exit(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id") or ""
        with self._lock:
            if event.get("Action") == "die" and container_id:
                try:
                    code = int((actor.get("Attributes") or {}).get("exitCode", 0))
                except ValueError:
                    code = 0
                if len(self._exits) >= self.MAX_REMEMBERED_EXITS:
                    self._exits.pop(next(iter(self._exits)), None)  # oldest first: dicts keep insertion order
                self._exits[container_id] = code
            elif event.get("Action") == "start":
                self._exits.pop(container_id, None)


def _follow_events(feed: WatchFeed[Any]) -> None:
    EVENTS.follow(feed)


#: Status of every kernel container / swarm task of this process, one listing each (see KernelEvents).
CONTAINERS: StatusSource[ContainerStatus] = StatusSource(
    "docker kernel containers", _list_containers, watch=_follow_events, max_age=0.45
)
#: A task on another swarm node changes without an event on this daemon: resync its listing often.
TASKS: StatusSource[TaskStatus] = StatusSource(
    "docker kernel service tasks", _list_tasks, watch=_follow_events, max_age=0.45, resync=10.0
)
EVENTS = KernelEvents((CONTAINERS, TASKS))

#: When this process created a kernel's container/service (monotonic): a listing older than that cannot
#: know it, so a poll must not read its absence as "gone".
created_at: dict[str, float] = {}


# ---------------------------------------------------------------------------------------------------------
# Helpers


def missing_launcher_hint(tail: str) -> str:
    """What to do when the log says the image has no gp launcher (e.g. one built for Gateway Provisioners)."""
    if "can't open file" not in tail or "/python/launch_ipykernel.py" not in tail:  # gp's path (no scripts/)
        return ""
    return (
        "\nThe image has no gp launcher at the kernelspec's path: build it with gp's launcher (jupyter "
        f"image-bootstrap install puts it at {IMAGE_LAUNCHER}). An image built for Gateway Provisioners "
        "carries that project's launcher under kernel-launchers/python/scripts/, which gp cannot use; "
        "see docs/migration.md."
    )


def wait_until(
    gone: Callable[[], bool], what: str, log: logging.Logger, timeout: float = GONE_TIMEOUT
) -> None:
    """Block (in a worker thread) until ``gone()`` holds, checking every 50 ms up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while not gone():
        if time.monotonic() > deadline:
            log.warning("%s is still present %g s after removal; giving up waiting", what, timeout)
            return
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------
# Containers (backend "docker")


def create_container(resources: Resources, log: logging.Logger, stdin_once: bool = False) -> Handle:
    """Create and start the kernel's container; return its handle. Removes it again if starting fails.

    ``stdin_once``: the container's stdin is open, and closes when its first attached client detaches
    (a parked container's, see :mod:`gp_docker._pool`).
    """
    api = get_api()
    network = resources["network"]
    volumes = resources["volumes"]
    host_config = api.create_host_config(
        network_mode=network,
        binds=[f"{v['source']}:{v['target']}:{'ro' if v['read_only'] else 'rw'}" for v in volumes] or None,
        nano_cpus=resources["nano_cpus"] or None,
        mem_limit=resources["memory_bytes"] or None,
        init=resources["init"] or None,
    )
    create_args = {
        "image": resources["image"],
        "command": resources["cmd"] or None,  # empty: the image's own command (e.g. bootstrap-kernel.sh)
        "name": resources["name"],
        "hostname": resources["hostname"],
        "environment": resources["env"],
        "labels": resources["labels"],
        "user": resources["user"] or "",
        "working_dir": resources["working_dir"],
        "volumes": [v["target"] for v in volumes] or None,
        "host_config": host_config,
        "detach": True,
        "use_config_proxy": False,  # the server's ~/.docker proxy settings are not the kernel's business
    }

    def create() -> str:
        if not stdin_once:
            return str(api.create_container(**create_args)["Id"])
        # docker-py has no StdinOnce argument: build the config, then set it
        config_args = {k: v for k, v in create_args.items() if k not in ("name", "use_config_proxy")}
        config = api.create_container_config(**config_args, stdin_open=True)
        config["StdinOnce"] = True
        return str(api.create_container_from_config(config, resources["name"])["Id"])

    try:
        try:
            container_id = create()
        except APIError as exc:
            if exc.status_code != 409 or not _remove_stale_container(resources, log):
                raise
            container_id = create()
    except ImageNotFound as exc:
        raise BackendError(
            f"Kernel image {resources['image']!r} is not on the docker host: build or pull it there first "
            f"({describe(exc)})"
        ) from exc
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not create kernel container {resources['name']}: {describe(exc)}") from exc
    created_at[container_id] = time.monotonic()
    handle: Handle = {"container_id": container_id, "name": resources["name"]}
    if "kernel_id" in resources["labels"]:  # a parked container has none yet
        handle["kernel_id"] = resources["labels"]["kernel_id"]
    try:
        api.start(container_id)
        if network not in ("host", "none"):
            networks: dict[str, Any] = (
                api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
            )
            attachment: dict[str, Any] = networks.get(network) or next(iter(networks.values()), {})
            ip = attachment.get("IPAddress")
            if ip:
                handle["ip"] = ip
    except BaseException as exc:
        remove_container(handle, graceful=False, stop_timeout=0, keep=False, log=log)
        if isinstance(exc, SDK_ERRORS):
            raise BackendError(
                f"Could not start kernel container {resources['name']}: {describe(exc)}"
            ) from exc
        raise
    return handle


def _remove_stale_container(resources: Resources, log: logging.Logger) -> bool:
    """A container already has the kernel's name: remove it if it is this kernel's (left by a crashed
    server, or kept by ``remove_container=false``) and return True; refuse if it is anyone else's."""
    api = get_api()
    try:
        labels = api.inspect_container(resources["name"])["Config"].get("Labels") or {}
    except NotFound:
        return True  # gone meanwhile: just retry
    # A pooled kernel's container has no kernel_id label (it was parked first); it bears the name.
    ours = labels.get("kernel_id") == resources["labels"]["kernel_id"] or (
        "kernel_id" not in labels and POOL_LABEL in labels
    )
    if not ours or labels.get("app") != APP_LABEL or labels.get(OWNER_LABEL[0]) != OWNER_LABEL[1]:
        raise BackendError(
            f"A container named {resources['name']} already exists and is not this kernel's; not touching it"
        )
    log.info("Removing %s, left over from an earlier run of this kernel", resources["name"])
    remove_container({"name": resources["name"]}, graceful=False, stop_timeout=0, keep=False, log=log)
    return True


def container_failure(handle: Handle) -> str:
    """Why a kernel container stopped: exit code, daemon error and the tail of its log."""
    api = get_api()
    ref = handle.get("container_id") or handle["name"]
    try:
        state = api.inspect_container(ref).get("State") or {}
        raw_log = api.logs(ref, stdout=True, stderr=True, tail=LOG_TAIL_LINES)
    except NotFound:
        return f"Kernel container {handle['name']} disappeared during start-up (removed by someone else?)"
    except SDK_ERRORS as exc:
        return f"Kernel container {handle['name']} stopped during start-up ({describe(exc)})"
    reason = f"exited with code {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        reason += " (killed: out of memory)"
    if state.get("Error"):
        reason += f": {state['Error']}"
    return (
        f"Kernel container {handle['name']} {reason} during start-up. "
        f"Last lines of its log:\n{log_tail(raw_log)}{missing_launcher_hint(log_tail(raw_log))}"
    )


def remove_container(
    handle: Handle, graceful: bool, stop_timeout: float, keep: bool, log: logging.Logger
) -> None:
    """Stop the kernel's container (SIGTERM + ``stop_timeout`` when graceful, else SIGKILL) and remove it
    (unless ``keep``), returning only once the daemon no longer has it. Gone already is success."""
    api = get_api()
    ref = handle.get("container_id") or handle["name"]
    try:
        if graceful:
            api.stop(ref, timeout=max(int(stop_timeout + 0.999), 0))
        if keep:
            if not graceful:
                api.kill(ref)
            return
        api.remove_container(ref, v=True, force=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code == 409 and keep:
            return  # kill on a container that is not running
        if exc.status_code != 409:  # 409: a removal already in progress, which the wait below sees through
            raise BackendError(
                f"Could not remove kernel container {handle['name']}: {describe(exc)}"
            ) from exc
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not remove kernel container {handle['name']}: {describe(exc)}") from exc
    finally:
        created_at.pop(handle.get("container_id", ""), None)
        EVENTS.forget(handle.get("container_id", ""))
    if not keep:
        wait_until(lambda: not _container_exists(ref), f"Kernel container {handle['name']}", log)


def _container_exists(ref: str) -> bool:
    try:
        get_api().inspect_container(ref)
    except NotFound:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Services (backend "docker-swarm")


def create_service(resources: Resources, log: logging.Logger) -> Handle:
    """Create the kernel's swarm service (one task, never restarted); return its handle."""
    from docker.types import (
        ContainerSpec,
        EndpointSpec,
        Mount,
        NetworkAttachmentConfig,
        Placement,
        RestartPolicy,
        TaskTemplate,
    )
    from docker.types import Resources as TaskResources

    api = get_api()
    mounts = [
        Mount(v["target"], v["source"], type=v["type"], read_only=v["read_only"])
        for v in resources["volumes"]
    ]
    container_spec = ContainerSpec(
        resources["image"],
        args=resources["cmd"] or None,  # Args, like `docker run IMAGE CMD`: the image's entrypoint stays
        env=resources["env"],
        labels=resources["labels"],
        user=resources["user"],
        workdir=resources["working_dir"],
        hostname=resources["hostname"],
        mounts=mounts or None,
        init=resources["init"] or None,
    )
    limits = None
    if resources["nano_cpus"] or resources["memory_bytes"]:
        limits = TaskResources(
            cpu_limit=resources["nano_cpus"] or None, mem_limit=resources["memory_bytes"] or None
        )
    task_template = TaskTemplate(
        container_spec,
        resources=limits,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=resources["placement_constraints"])
        if resources["placement_constraints"]
        else None,
        networks=[NetworkAttachmentConfig(target=resources["network"])],
    )
    create_args = {
        "task_template": task_template,
        "name": resources["name"],
        "labels": resources["labels"],
        "endpoint_spec": EndpointSpec(mode="dnsrr"),  # no virtual IP: nothing load-balances a kernel
    }
    try:
        try:
            service_id = api.create_service(**create_args)["ID"]
        except APIError as exc:
            if exc.status_code != 409 or not _remove_stale_service(resources, log):
                raise
            service_id = api.create_service(**create_args)["ID"]
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not create kernel service {resources['name']}: {describe(exc)}") from exc
    created_at[service_id] = time.monotonic()
    return {
        "service_id": service_id,
        "name": resources["name"],
        "kernel_id": resources["labels"]["kernel_id"],
    }


def _remove_stale_service(resources: Resources, log: logging.Logger) -> bool:
    api = get_api()
    try:
        service = api.inspect_service(resources["name"])
    except NotFound:
        return True
    labels = (service.get("Spec") or {}).get("Labels") or {}
    if (
        labels.get("kernel_id") != resources["labels"]["kernel_id"]
        or labels.get("app") != APP_LABEL
        or labels.get(OWNER_LABEL[0]) != OWNER_LABEL[1]
    ):
        raise BackendError(
            f"A swarm service named {resources['name']} already exists and is not this kernel's; "
            "not touching it"
        )
    log.info("Removing service %s, left over from an earlier run of this kernel", resources["name"])
    stale = {"service_id": service["ID"], "name": resources["name"], "kernel_id": labels["kernel_id"]}
    remove_service(stale, graceful=False, stop_timeout=0, log=log)
    return True


def service_exists(handle: Handle) -> bool:
    try:
        get_api().inspect_service(handle["service_id"])
    except NotFound:
        return False
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not inspect kernel service {handle['name']}: {describe(exc)}") from exc
    return True


def service_failure(handle: Handle, task: TaskStatus) -> str:
    """Why a kernel service's task failed: its state, the swarm's error, exit code and log tail."""
    reason = f"task {task.state}"
    if task.error:
        reason += f": {task.error}"
    if task.exit_code is not None and task.container_id:
        reason += f" (exit code {task.exit_code})"
    try:
        raw_log = b"".join(
            get_api().service_logs(handle["service_id"], stdout=True, stderr=True, tail=LOG_TAIL_LINES)
        )
        tail = log_tail(raw_log)
    except SDK_ERRORS as exc:
        tail = f"(log unavailable: {describe(exc)})"
    return (
        f"Kernel service {handle['name']} failed to start: {reason}. Last lines of its log:\n{tail}"
        + missing_launcher_hint(tail)
    )


def signal_container(container_id: str, signum: int) -> bool:
    """Send ``signum`` to the container's main process (docker's init passes it on to the kernel).

    False when the container is gone or no longer running: there is nothing to signal.
    """
    try:
        get_api().kill(container_id, signal=int(signum))
    except NotFound:
        return False
    except APIError as exc:
        if exc.status_code == 409:  # not running
            return False
        raise BackendError(f"Could not signal kernel container {container_id[:12]}: {describe(exc)}") from exc
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not signal kernel container {container_id[:12]}: {describe(exc)}") from exc
    return True


def signal_service(handle: Handle, signum: int) -> bool:
    """Signal the kernel service's task container, when it runs on this docker host's node.

    A task on another node is out of this daemon's reach: False.
    """
    task = _list_tasks().get(handle["service_id"])
    if task is None or not task.container_id or task.node_id != _local_node():
        return False
    return signal_container(task.container_id, signum)


def _local_node() -> str:
    global _local_node_id
    if _local_node_id is None:
        _local_node_id = (get_api().info().get("Swarm") or {}).get("NodeID") or ""
    return _local_node_id


def remove_service(handle: Handle, graceful: bool, stop_timeout: float, log: logging.Logger) -> None:
    """Remove the kernel's service and return once its task and container are gone.

    Removing a service only asks the swarm to stop its task, which takes seconds; a task container on
    this node is therefore stopped (gracefully if asked) and removed here directly.
    """
    api = get_api()
    service_id = handle["service_id"]
    try:
        tasks = api.tasks(filters={"service": service_id})
    except NotFound:
        tasks = []
    except SDK_ERRORS as exc:
        raise BackendError(
            f"Could not list the tasks of kernel service {handle['name']}: {describe(exc)}"
        ) from exc
    local = _local_node()
    local_containers = [
        status.container_id
        for status in map(_task_status, tasks)
        if status.container_id and status.node_id == local
    ]
    try:
        if graceful:
            for container_id in local_containers:
                try:
                    api.stop(container_id, timeout=max(int(stop_timeout + 0.999), 0))
                except NotFound:
                    pass
        try:
            api.remove_service(service_id)
        except NotFound:
            pass
        for container_id in local_containers:
            try:
                api.remove_container(container_id, v=True, force=True)
            except NotFound:
                pass
            except APIError as exc:
                if exc.status_code != 409:  # 409: the swarm is removing it already
                    raise
    except SDK_ERRORS as exc:
        raise BackendError(f"Could not remove kernel service {handle['name']}: {describe(exc)}") from exc
    finally:
        created_at.pop(service_id, None)
        for container_id in local_containers:
            EVENTS.forget(container_id)

    def gone() -> bool:
        # The task records outlive their containers (the swarm deletes them lazily), so they only
        # matter on other nodes, where they are the one sign of whether the kernel still runs.
        remaining_containers = api.containers(
            all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}
        )
        kernel_tasks = api.tasks(filters={"label": f"kernel_id={handle['kernel_id']}"})
        running_elsewhere = [
            row
            for row in kernel_tasks
            if row.get("ServiceID") == service_id
            and row.get("NodeID") != local
            and (row.get("Status") or {}).get("State") in TASK_ACTIVE_STATES
        ]
        return not remaining_containers and not running_elsewhere

    wait_until(gone, f"Kernel service {handle['name']}", log)
