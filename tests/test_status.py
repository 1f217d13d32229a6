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


class _CountingFetch:
    """A list call that counts its calls, can block until released, and can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.fail: Exception | None = None
        self.started: dict[int, float] = {}  # call number -> when that call started

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        call = self.calls
        self.started[call] = time.monotonic()
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return {"kernel": call}


async def test_a_refresh_started_before_a_creation_is_not_joined():
    fetch = _CountingFetch()
    source = StatusSource("fake", fetch, max_age=60)
    fetch.release.clear()
    early = asyncio.create_task(source.get("other"))
    await asyncio.sleep(0.02)
    created = time.monotonic()
    late = asyncio.create_task(source.get("kernel", not_before=created))
    await asyncio.sleep(0.02)
    fetch.release.set()
    await early
    assert fetch.started[await late] >= created
    assert fetch.calls == 2


async def test_failures_reach_every_waiter_and_a_later_poll_retries():
    fetch = _CountingFetch()
    source = StatusSource("fake", fetch, max_age=0.1)
    fetch.fail = RuntimeError("daemon down")
    fetch.release.clear()
    polls = [asyncio.create_task(source.get("kernel")) for _ in range(3)]
    await asyncio.sleep(0.02)
    fetch.release.set()
    results = await asyncio.gather(*polls, return_exceptions=True)
    assert all(isinstance(result, BackendError) for result in results) and fetch.calls == 1
    assert "daemon down" in str(results[0])
    fetch.fail = None
    await asyncio.sleep(0.15)
    assert await source.get("kernel") == 2


async def test_a_cancelled_poller_does_not_cancel_the_shared_refresh():
    fetch = _CountingFetch()
    source = StatusSource("fake", fetch, max_age=60)
    fetch.release.clear()
    impatient = asyncio.create_task(source.get("kernel"))
    patient = asyncio.create_task(source.get("kernel"))
    await asyncio.sleep(0.02)
    impatient.cancel()
    fetch.release.set()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == 1 and fetch.calls == 1


def test_sources_survive_event_loop_changes():
    """Each test (and a restarted jupyter_server) may run on a new loop: an in-flight refresh of a closed
    loop must not be awaited from another."""
    fetch = _CountingFetch()
    source = StatusSource("fake", fetch, max_age=60)
    assert asyncio.run(source.get("kernel")) == 1
    assert asyncio.run(source.get("kernel")) == 1  # cached data outlives the loop
    assert asyncio.run(source.get("kernel", max_age=0)) == 2


async def test_invalidate_outdates_even_a_refresh_already_running():
    """An event (say, a container died) during a refresh: that refresh may not have seen it."""
    fetch = _CountingFetch()
    source = StatusSource("fake", fetch, max_age=60)
    await source.get("kernel")
    fetch.release.clear()
    running = asyncio.create_task(source.get("kernel", max_age=0))
    await asyncio.sleep(0.02)
    source.invalidate()  # from the watch thread, in real life
    fetch.release.set()
    await running
    assert fetch.started[await source.get("kernel")] >= fetch.started[2]
    assert fetch.calls == 3


async def test_a_gapless_reconnect_needs_no_fresh_listing():
    api = _Api({"k": "running"})
    reconnects: list[bool] = []

    def watch(feed: WatchFeed[str]) -> None:
        gapless = "resume_from" in feed.resume  # a real stream resumes from its last event's position
        reconnects.append(gapless)
        feed.connected(gapless=gapless)
        feed.resume["resume_from"] = len(reconnects)
        feed.stopping.wait(0.2)  # the stream ends (a server-side timeout); the source calls watch again

    source = StatusSource("fake", api.list, watch=watch, max_age=0.01, retry_delay=0.01)
    try:
        await source.get("k")
        await _until(lambda: len(reconnects) >= 3)
        lists = api.lists
        for _ in range(20):
            assert await source.get("k") == "running"
            await asyncio.sleep(0.02)
        assert reconnects[:3] == [False, True, True]
        # 20 polls past max_age: listings only in the few milliseconds between two streams
        assert api.lists - lists <= 3
    finally:
        await source.close()
