"""Pools of parked kernel containers for the ``docker`` backend (option ``pool_size``).

A parked container is started ahead of any request, running gp's launcher with ``--park``: it imports
ipykernel, IPython, debugpy and the payload crypto (most of a kernel's start-up), then waits on its stdin.
A launch whose container would look exactly like a pooled one (same image, user, network, mounts,
limits, working directory and launcher) takes a parked container instead of starting one: gp renames it
to the kernel's name and writes the kernel's launcher arguments and environment to its stdin, through the
docker API (docs/protocol.md §4). From there it is an ordinary kernel container.

The stdin is attached once, when the container is parked, and held open by this process; the container
is created with ``StdinOnce``, so if this process dies its parked launchers read end-of-input and exit.
Such leftovers (exited and still named ``gp-pool-*``) are removed when a pool next starts, and at exit
this process removes the containers it still has parked.

Pools refill in a background thread, a moment after each take: the kernel just assigned gets the CPU
for its own start first.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, NotFound

from gp_core import BackendError, Handle, Resources

from . import _client

POOL_LABEL = _client.POOL_LABEL
PARKED_PREFIX = "gp-pool-"
#: At most this many pools (distinct container shapes) per process; the least recently used goes first.
MAX_POOLS = 8
#: Seconds between a take and the refill it triggers.
REFILL_DELAY = 1.0
#: Variables read as the interpreter starts, before any assignment: a parked container is started with
#: the kernel's values of these, and only a launch with the same values may take it.
_STARTUP_ENV = re.compile(r"PYTHON.*|LANG|LC_.*|LANGUAGE")
_LAUNCHER_SCRIPT = "launch_ipykernel.py"
#: Request variables that change what a container fixes at creation (image, user, working directory,
#: limits), beside the start-up variables above.
_SHAPING_REQUEST_VARS = frozenset(
    {
        "KERNEL_IMAGE",
        "KERNEL_UID",
        "KERNEL_GID",
        "KERNEL_WORKING_DIR",
        "KERNEL_CPUS_LIMIT",
        "KERNEL_MEMORY_LIMIT",
    }
)
#: What a container gets when it is created and keeps: a parked one has the kernel's values of these.
_FIXED_AT_CREATION = (
    "image",
    "network",
    "user",
    "working_dir",
    "volumes",
    "init",
    "nano_cpus",
    "memory_bytes",
)

log = logging.getLogger(__name__)


@dataclass
class Parked:
    container_id: str
    name: str
    ip: str | None
    stdin: Any  # the held attach socket
    created: float  # time.monotonic()
    image_id: str  # what the image reference named when it was parked


def shaped_by_request(request_env: Mapping[str, str]) -> bool:
    """Whether the start request set anything a parked container fixes at creation. Such a launch may
    take a parked container of its shape, but never creates a pool: what the server parks ahead of time
    is decided by the kernelspec and the server's configuration alone, never by request values."""
    return any(name in _SHAPING_REQUEST_VARS or _STARTUP_ENV.fullmatch(name) for name in request_env)


def pool_shape(resources: Resources) -> dict[str, Any] | None:
    """What a pooled container shares with every kernel it may serve; None when the launch cannot be
    pooled (its argv does not run gp's launcher as ``<python> <path>/launch_ipykernel.py ...``)."""
    cmd = resources.get("cmd") or []
    if resources.get("kind") != "container" or len(cmd) < 2 or not cmd[1].endswith(_LAUNCHER_SCRIPT):
        return None
    return {
        "launcher": list(cmd[:2]),
        "startup_env": {k: v for k, v in resources["env"].items() if _STARTUP_ENV.fullmatch(k)},
        **{key: resources[key] for key in _FIXED_AT_CREATION},
    }


class ContainerPool:
    """Up to ``size`` parked containers of one shape."""

    def __init__(self, shape: dict[str, Any], size: int) -> None:
        self.shape = shape
        self.size = size
        self._parked: list[Parked] = []
        self._lock = threading.Lock()
        self._filling: threading.Thread | None = None
        self._closed = False
        self.failure: str | None = None  # why the last refill failed, if it did

    # -------------------------------------------------------------- taking

    def take(self) -> Parked | None:
        """A parked container still alive, or None; either way a refill follows."""
        taken = None
        with self._lock:
            while self._parked and taken is None:
                candidate = self._parked.pop(0)
                if _client.EVENTS.exit_code(candidate.container_id) is None:
                    taken = candidate
                else:
                    threading.Thread(target=_discard, args=(candidate,), daemon=True).start()
        self.fill(delay=REFILL_DELAY)
        return taken

    # -------------------------------------------------------------- filling

    def fill(self, delay: float = 0.0) -> None:
        """Start a background refill up to ``size``, unless one is running."""
        with self._lock:
            if self._closed or (self._filling is not None and self._filling.is_alive()):
                return
            self._filling = threading.Thread(
                target=self._fill, args=(delay,), name="gp-docker-pool", daemon=True
            )
            self._filling.start()

    def _fill(self, delay: float) -> None:
        time.sleep(delay)
        while True:
            with self._lock:
                if self._closed or len(self._parked) >= self.size:
                    return
            try:
                parked = park_container(self.shape)
            except Exception as exc:  # the pool stays short; launches start cold, the next take retries
                self.failure = str(exc)
                log.warning("Could not park a kernel container for the pool: %s", exc)
                return
            self.failure = None
            with self._lock:
                if not self._closed:
                    self._parked.append(parked)
                    continue
            _discard(parked)
            return

    def settled(self) -> bool:
        """Full (or failing) and not filling: what benchmarks wait for between runs."""
        with self._lock:
            filling = self._filling is not None and self._filling.is_alive()
            return not filling and (len(self._parked) >= self.size or self.failure is not None)

    def close(self) -> None:
        """Remove every parked container (blocking)."""
        with self._lock:
            self._closed = True
            parked, self._parked = self._parked, []
            filling = self._filling
        if filling is not None and filling is not threading.current_thread():
            filling.join(30)
        with self._lock:  # a container the refill parked while we waited for it
            parked += self._parked
            self._parked = []
        for item in parked:
            _discard(item)


# ------------------------------------------------------------------ the process's pools

_pools: OrderedDict[str, ContainerPool] = OrderedDict()
_pools_lock = threading.Lock()
_atexit_registered = False


def pool_for(resources: Resources, size: int, create: bool = True) -> ContainerPool | None:
    """The pool serving launches shaped like ``resources`` (created empty on first use when ``create``:
    its first ``take`` starts the fill); None when such a launch cannot be pooled, or has no pool and
    may not create one."""
    global _atexit_registered
    shape = pool_shape(resources)
    if shape is None:
        return None
    key = json.dumps(shape, sort_keys=True)
    evicted = None
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            if not create:
                return None
            pool = _pools[key] = ContainerPool(shape, size)
            if len(_pools) > MAX_POOLS:
                _, evicted = _pools.popitem(last=False)
            if not _atexit_registered:
                atexit.register(close_pools)
                threading.Thread(target=remove_leftovers, name="gp-docker-pool-sweep", daemon=True).start()
                _atexit_registered = True
        _pools.move_to_end(key)
        pool.size = size
    if evicted is not None:
        threading.Thread(target=evicted.close, daemon=True).start()
    return pool


def close_pools() -> None:
    """Remove every container this process has parked (blocking; also run at exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def pools_settled() -> bool:
    with _pools_lock:
        pools = list(_pools.values())
    return all(pool.settled() for pool in pools)


def remove_leftovers() -> None:
    """Remove parked containers left by gp processes that died (exited, never assigned)."""
    try:
        api = _client.get_api()
        rows = api.containers(all=True, filters={"label": POOL_LABEL, "status": "exited"})
        for row in rows:
            if any(name.lstrip("/").startswith(PARKED_PREFIX) for name in row.get("Names") or []):
                api.remove_container(row["Id"], force=True)
    except Exception as exc:
        log.debug("Could not sweep parked containers left over: %s", exc)


# ------------------------------------------------------------------ docker calls (blocking)


def park_container(shape: dict[str, Any]) -> Parked:
    """Create and start one parked container of ``shape``, and attach (and hold) its stdin."""
    name = PARKED_PREFIX + secrets.token_hex(8)
    resources: Resources = {
        "kind": "container",
        "name": name,
        "cmd": [*shape["launcher"], "--park"],
        "env": dict(shape["startup_env"]),
        "labels": {
            "component": "kernel",
            "app": _client.APP_LABEL,
            POOL_LABEL: "parked",
            _client.OWNER_LABEL[0]: _client.OWNER_LABEL[1],
        },
        "hostname": None,
        **{key: shape[key] for key in _FIXED_AT_CREATION},
    }
    api = _client.get_api()
    handle = _client.create_container(resources, log, stdin_once=True)
    try:
        stdin = api.attach_socket(handle["container_id"], params={"stdin": 1, "stream": 1})
        image_id = api.inspect_container(handle["container_id"])["Image"]
    except BaseException:
        _client.remove_container(handle, graceful=False, stop_timeout=0, keep=False, log=log)
        raise
    return Parked(handle["container_id"], name, handle.get("ip"), stdin, time.monotonic(), image_id)


def assign(parked: Parked, resources: Resources, log: logging.Logger) -> Handle:
    """Make ``parked`` the kernel's container: rename it, then hand its launcher the kernel's arguments
    and environment. On failure the container is removed and BackendError raised."""
    api = _client.get_api()
    handle: Handle = {
        "container_id": parked.container_id,
        "name": resources["name"],
        "kernel_id": resources["labels"]["kernel_id"],
    }
    if parked.ip:
        handle["ip"] = parked.ip
    try:
        if api.inspect_image(resources["image"])["Id"] != parked.image_id:
            raise BackendError(f"{resources['image']} names another image than when {parked.name} was parked")
        try:
            api.rename(parked.container_id, resources["name"])
        except APIError as exc:
            if exc.status_code != 409 or not _client._remove_stale_container(resources, log):
                raise
            api.rename(parked.container_id, resources["name"])
        line = json.dumps({"argv": list(resources["cmd"][2:]), "env": resources["env"]}) + "\n"
        _send_all(parked.stdin, line.encode("utf-8"))
    except BaseException as exc:
        _discard(parked)
        if isinstance(exc, (*_client.SDK_ERRORS, OSError)):
            raise BackendError(
                f"Could not assign parked container {parked.name}: {_client.describe(exc)}"
            ) from exc
        raise
    finally:
        _close_quietly(parked.stdin)
    _client.created_at[parked.container_id] = parked.created  # what poll's listings must know of
    return handle


def _send_all(sock: Any, data: bytes) -> None:
    sendall = getattr(sock, "sendall", None) or getattr(getattr(sock, "_sock", None), "sendall", None)
    if sendall is not None:
        sendall(data)
        return
    view = memoryview(data)
    while view:  # a SocketIO (unix socket): write may be partial
        view = view[sock.write(view) :]


def _close_quietly(sock: Any) -> None:
    try:
        sock.close()
    except Exception:
        pass


def _discard(parked: Parked) -> None:
    _close_quietly(parked.stdin)
    try:
        _client.remove_container(
            {"container_id": parked.container_id, "name": parked.name},
            graceful=False,
            stop_timeout=0,
            keep=False,
            log=log,
        )
    except (BackendError, NotFound) as exc:
        log.debug("Could not remove parked container %s: %s", parked.name, exc)
