"""gp_core.StatusSource: one listing (and watch) serving many kernels' status."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gp_core import BackendError, StatusSource, WatchFeed


class _Api:
    """A fake cluster API: a dict of entries, counting list calls, optionally slow or down."""

    def __init__(self, entries: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.entries = dict(entries or {})
        self.delay = delay
        self.down = False
        self.lists = 0
        self.threads: set[str] = set()

    def list(self) -> dict[str, str]:
        self.lists += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.down:
            raise ConnectionRefusedError("apiserver down")
        return dict(self.entries)


async def test_concurrent_polls_share_one_list_call_off_the_event_loop():
    api = _Api({f"k{i}": "running" for i in range(50)}, delay=0.05)
    source = StatusSource("fake", api.list, max_age=1.0)
    statuses = await asyncio.gather(*(source.get(f"k{i}") for i in range(50)))
    assert statuses == ["running"] * 50
    assert api.lists == 1 == source.fetches
    assert threading.main_thread().name not in api.threads


async def test_max_age_bounds_requests_not_the_number_of_kernels():
    api = _Api({f"k{i}": "running" for i in range(10)})
    source = StatusSource("fake", api.list, max_age=0.2)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # ten kernels polled on their own clocks
        await asyncio.gather(*(source.get(f"k{i}") for i in range(10)))
        await asyncio.sleep(0.01)
    assert 4 <= api.lists <= 7  # ~1 s / 0.2 s, whatever the kernel count


async def test_a_resource_created_after_the_listing_is_not_reported_missing():
    api = _Api({})
    source = StatusSource("fake", api.list, max_age=60)
    assert await source.get("new") is None
    created = time.monotonic()
    api.entries["new"] = "pending"
    assert await source.get("new") is None  # no not_before: the cached listing answers
    assert await source.get("new", not_before=created) == "pending"
    assert api.lists == 2


async def test_invalidate_forces_the_next_listing():
    api = _Api({"k": "running"})
    source = StatusSource("fake", api.list, max_age=60)
    assert await source.get("k") == "running"
    api.entries["k"] = "exited"
    source.invalidate()
    assert await source.get("k") == "exited"


async def test_an_outage_raises_backend_error_once_per_max_age():
    api = _Api({"k": "running"})
    source = StatusSource("fake pods", api.list, max_age=0.3)
    api.down = True
    for _ in range(20):
        with pytest.raises(BackendError, match="Could not list fake pods: apiserver down"):
            await source.get("k")
    assert api.lists == 1  # the outage is not hammered by every poller
    api.down = False
    await asyncio.sleep(0.35)
    assert await source.get("k") == "running"


class _Watched(_Api):
    """A fake API with a WATCH stream the test drives through a queue."""

    def __init__(self, entries: dict[str, str]) -> None:
        super().__init__(entries)
        self.events: list[tuple[str, str, str | None]] = []
        self.wake = threading.Event()
        self.watches = 0
        self.stopped = threading.Event()

    def watch(self, feed: WatchFeed[str]) -> None:
        self.watches += 1
        feed.on_stop(self.wake.set)
        started = time.monotonic()
        feed.synced(self.list(), started)
        while not feed.stopping.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            while self.events:
                kind, key, value = self.events.pop(0)
                if kind == "put":
                    feed.put(key, value or "")
                elif kind == "delete":
                    feed.delete(key)
                elif kind == "fail":
                    raise ConnectionResetError("stream broke")
        self.stopped.set()

    def send(self, kind: str, key: str = "", value: str | None = None) -> None:
        self.events.append((kind, key, value))
        self.wake.set()


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_live_watch_serves_status_without_api_requests():
    api = _Watched({f"k{i}": "running" for i in range(10)})
    source = StatusSource("fake", api.list, watch=api.watch, max_age=0.05, idle_stop=30)
    try:
        await source.get("k0")
        await _until(lambda: source.watching)
        lists = api.lists
        for _ in range(20):  # many polls of many kernels, well past max_age
            await asyncio.gather(*(source.get(f"k{i}") for i in range(10)))
            await asyncio.sleep(0.01)
        assert api.lists == lists  # served from the stream
        api.send("put", "k3", "exited")
        await _until(lambda: source._entries.get("k3") == "exited")
        assert await source.get("k3") == "exited"
        api.send("delete", "k4")
        await _until(lambda: "k4" not in source._entries)
        assert await source.get("k4", not_before=time.monotonic() - 10) is None
        assert api.lists == lists
    finally:
        await source.close()
    await _until(api.stopped.is_set)


async def test_a_broken_watch_falls_back_to_listing_and_reconnects():
    api = _Watched({"k": "running"})
    source = StatusSource("fake", api.list, watch=api.watch, max_age=0.05, retry_delay=0.2)
    try:
        await source.get("k")
        await _until(lambda: source.watching)
        api.send("fail")
        await _until(lambda: not source.watching)
        api.entries["k"] = "exited"
        await asyncio.sleep(0.06)
        assert await source.get("k") == "exited"  # listing while the stream is down
        await _until(lambda: api.watches == 2 and source.watching)
    finally:
        await source.close()


async def test_the_watch_stops_when_idle():
    api = _Watched({"k": "running"})
    source = StatusSource("fake", api.list, watch=api.watch, idle_stop=0.3)
    await source.get("k")
    await _until(lambda: source.watching)
    await _until(api.stopped.is_set, timeout=10)
    assert not source.watching
    assert await source.get("k") == "running"  # asked again: it starts again
    await _until(lambda: api.watches == 2)
    await source.close()


def test_the_watch_stops_with_its_event_loop():
    api = _Watched({"k": "running"})
    source = StatusSource("fake", api.list, watch=api.watch, idle_stop=3600)

    async def use() -> None:
        await source.get("k")
        await _until(lambda: source.watching)

    asyncio.run(use())  # asyncio.run cancels the source's supervisor task as the loop shuts down
    assert api.stopped.wait(5)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("gp-watch")]
    deadline = time.monotonic() + 5
    while threads and time.monotonic() < deadline:
        time.sleep(0.05)
        threads = [t.name for t in threading.enumerate() if t.name.startswith("gp-watch")]
    assert threads == []
    # and a new loop gets a working source again
    assert asyncio.run(source.get("k")) == "running"
