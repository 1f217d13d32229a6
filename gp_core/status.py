"""One status source per backend: every kernel's status from one listing (and optionally one watch).

A backend whose ``poll`` asks a cluster API about a kernel should not make one API call per kernel per
poll: jupyter_server's restarter polls every kernel on its own clock, so N kernels would cost N calls per
interval. A :class:`StatusSource` serves all of them from one list call (``fetch``), shared by concurrent
callers and cached for ``max_age`` seconds; with a ``watch`` (an event stream: Kubernetes WATCH, docker
events), it serves from what the stream keeps current and calls the API only when the stream says
something changed it cannot describe, or every ``resync`` seconds. So API requests per poll interval do
not grow with the number of kernels.

Life cycle: the source binds to the running event loop on its first ``get`` (a new loop starts it again),
and its watch thread stops when the source has not been asked for ``idle_stop`` seconds, when its loop
closes, or on :meth:`StatusSource.close`. Nothing outlives the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from .errors import BackendError

T = TypeVar("T")

log = logging.getLogger("gp_core.status")

_NEVER = float("-inf")


class WatchFeed(Generic[T]):
    """What a ``watch`` function (running in the source's own thread) reports through.

    Every method is thread-safe and cheap; after the source stopped they do nothing.
    """

    def __init__(self, source: StatusSource[T], loop: asyncio.AbstractEventLoop, stopping: threading.Event):
        self._source = source
        self._loop = loop
        #: Set when the source stops: the watch function must return promptly (see :meth:`on_stop`).
        self.stopping = stopping
        self._on_stop: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        #: Kept across the watch function's calls in this thread: where the next stream resumes (a
        #: resourceVersion, an event time), so a reconnect leaves no gap and needs no fresh listing.
        self.resume: dict[str, Any] = {}

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from another thread) when the source stops, e.g. to close the HTTP response
        a blocked read waits on. Runs at once if the source has stopped already."""
        with self._lock:
            if not self.stopping.is_set():
                self._on_stop.append(callback)
                return
        _quietly(callback)

    def connected(self, gapless: bool = False) -> None:
        """The stream is live: cached entries stay valid until it reports a change (then refetched).

        ``gapless``: the stream resumed where the previous one ended (nothing happened unseen), so the
        entries need no fresh listing; otherwise the next ``get`` fetches once."""
        self._send(self._source._on_connected, None if gapless else time.monotonic())

    def synced(self, entries: Mapping[str, T], started: float) -> None:
        """A full listing (e.g. the LIST before a WATCH), fetched from ``started`` (``time.monotonic()``)
        on; marks the stream live."""
        self._send(self._source._on_synced, dict(entries), started)

    def put(self, key: str, value: T) -> None:
        self._send(self._source._on_put, key, value, time.monotonic())

    def delete(self, key: str) -> None:
        self._send(self._source._on_delete, key, time.monotonic())

    def invalidate(self) -> None:
        """Something changed that the stream does not describe: the next ``get`` fetches."""
        self._source.invalidate()

    def _send(self, method: Callable[..., None], *args: object) -> None:
        if self.stopping.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(method, *args)
        except RuntimeError:  # the loop is closed: nothing will ever read this source on it again
            self._stop()

    def _stop(self) -> None:
        with self._lock:
            self.stopping.set()
            callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            _quietly(callback)


def _quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception as exc:
        log.debug("status watch stop callback failed: %s", exc)


class StatusSource(Generic[T]):
    """Status entries (kernel resource key -> ``T``) for every kernel of one backend in this process.

    :param name: What is listed, for logs and errors (``"docker containers"``).
    :param fetch: Blocking; ONE list call returning every kernel's entry (run in a worker thread).
        Raise :class:`gp_core.BackendError` when the API cannot be reached; callers get it.
    :param watch: Optional, blocking, run in the source's own thread: follows the API's event stream and
        reports through its :class:`WatchFeed` (``synced``/``connected``, then ``put``/``delete`` or
        ``invalidate``). It should return at least every minute or so (e.g. a server-side timeout), and
        promptly once ``feed.stopping`` is set; it is called again after ``retry_delay`` when it returns
        or raises, and the source fetches meanwhile.
    :param max_age: Without a live watch, how old (seconds) a listing may be to serve a ``get``.
    :param resync: With a live watch, how often a full listing is fetched anyway.
    :param idle_stop: Seconds without a ``get`` after which the watch stops (it restarts on the next).
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Mapping[str, T]],
        *,
        watch: Callable[[WatchFeed[T]], None] | None = None,
        max_age: float = 1.0,
        resync: float = 300.0,
        idle_stop: float = 120.0,
        retry_delay: float = 1.0,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._watch = watch
        self.max_age = max_age
        self.resync = resync
        self.idle_stop = idle_stop
        self.retry_delay = retry_delay
        self._entries: dict[str, T] = {}
        self._listed_at = _NEVER  # monotonic start of the listing the entries come from
        self._known_at: dict[str, float] = {}  # when the watch last put or deleted a key
        self._stale_before = _NEVER  # set by invalidate(), possibly from another thread
        self._connected = False
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_started = _NEVER
        self._failure: tuple[float, BaseException] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: threading.Event | None = None
        self._feed: WatchFeed[T] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._last_get = _NEVER
        #: List calls made so far (tests and benchmarks count API requests with it).
        self.fetches = 0

    # ------------------------------------------------------------------ reading

    @property
    def watching(self) -> bool:
        """Whether a watch stream is live now (gets are then served without API calls)."""
        return self._connected

    async def get(self, key: str, *, not_before: float = _NEVER, max_age: float | None = None) -> T | None:
        """The entry for ``key``, or ``None`` when the API has none.

        ``not_before`` (``time.monotonic()``, e.g. when the caller created the resource): an answer about
        ``key`` from before then is not trusted, so a resource just created is never reported missing (or
        in the state of a predecessor of the same name) from a listing that predates it. ``max_age``
        overrides the source's freshness rule for this call, even while a watch is live (e.g. while a
        kernel starts, when its state may change without an event the stream reports).
        """
        while True:
            entries = await self.entries(max_age=max_age)
            if max(self._listed_at, self._known_at.get(key, _NEVER)) >= not_before:
                return entries.get(key)
            await self._refreshed(not_before)

    async def entries(self, *, max_age: float | None = None) -> Mapping[str, T]:
        """Every entry, from a listing fresh enough (see the class docstring)."""
        self._bind()
        now = time.monotonic()
        self._last_get = now
        if max_age is None:
            max_age = self.resync if self._connected else self.max_age
        allowed_age = max_age
        oldest = max(now - allowed_age, self._stale_before)
        if self._listed_at < oldest:
            await self._refreshed(oldest)
        return self._entries

    def invalidate(self) -> None:
        """Something changed: the next ``get`` needs a listing started from now on. Thread-safe."""
        self._stale_before = time.monotonic()

    async def _refreshed(self, oldest: float) -> None:
        """Wait for a listing started at ``oldest`` (monotonic) or later, one shared by concurrent callers."""
        oldest = min(oldest, time.monotonic())
        while self._listed_at < oldest:
            failure = self._failure
            if failure is not None and time.monotonic() - failure[0] < self.max_age:
                # The API failed just now: callers within max_age get that answer, not a new request each.
                raise failure[1]
            refresh = self._refresh
            if refresh is None or self._refresh_started < oldest:
                refresh = self._start_refresh()
            # shield: one poller being cancelled must not cancel the refresh the others await
            await asyncio.shield(refresh)

    def _start_refresh(self) -> asyncio.Task[None]:
        started = time.monotonic()
        self.fetches += 1

        async def refresh() -> None:
            try:
                entries = dict(await asyncio.to_thread(self._fetch))
            except Exception as exc:
                failure = (
                    exc
                    if isinstance(exc, BackendError)
                    else BackendError(f"Could not list {self.name}: {exc}")
                )
                self._failure = (time.monotonic(), failure)
                if failure is exc:
                    raise
                raise failure from exc
            finally:
                if self._refresh is task:
                    self._refresh = None
            self._failure = None
            if started >= self._listed_at:
                self._entries, self._listed_at = entries, started

        task = asyncio.get_running_loop().create_task(refresh())
        self._refresh, self._refresh_started = task, started
        return task

    # ------------------------------------------------------------------ watch callbacks (on the loop)

    def _on_connected(self, at: float | None) -> None:
        self._connected = True
        if at is not None:  # what happened before the stream: refetch once
            self._stale_before = max(self._stale_before, at)

    def _on_synced(self, entries: dict[str, T], started: float) -> None:
        if started >= self._listed_at:
            self._entries, self._listed_at = entries, started
            self._known_at = {k: t for k, t in self._known_at.items() if t > started}
        self._connected = True

    def _on_put(self, key: str, value: T, at: float) -> None:
        self._entries = {**self._entries, key: value}  # copy: callers may hold the previous mapping
        self._known_at[key] = at

    def _on_delete(self, key: str, at: float) -> None:
        if key in self._entries:
            self._entries = {k: v for k, v in self._entries.items() if k != key}
        self._known_at[key] = at
        if len(self._known_at) > 10_000:  # tombstones of long-gone keys
            for old in sorted(self._known_at, key=self._known_at.__getitem__)[:5_000]:
                del self._known_at[old]

    def _on_disconnected(self) -> None:
        self._connected = False

    # ------------------------------------------------------------------ life cycle

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._stop_watch()
            self._loop = loop
            self._refresh = None
            self._refresh_started = _NEVER
            self._failure = None
            self._connected = False
        if self._watch is not None and self._stopping is None:
            self._start_watch(loop)

    def _start_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        stopping = threading.Event()
        feed = WatchFeed(self, loop, stopping)
        self._stopping, self._feed = stopping, feed
        thread = threading.Thread(
            target=self._follow, args=(feed, loop), name=f"gp-watch {self.name}", daemon=True
        )
        thread.start()
        self._supervisor = loop.create_task(self._supervise(feed))

    def _follow(self, feed: WatchFeed[T], loop: asyncio.AbstractEventLoop) -> None:
        assert self._watch is not None
        while not feed.stopping.is_set() and not loop.is_closed():
            try:
                self._watch(feed)
            except Exception as exc:  # the API or the stream failed: fetch meanwhile, then retry
                log.debug("%s watch interrupted: %s", self.name, exc)
            feed._send(self._on_disconnected)
            feed.stopping.wait(self.retry_delay)
        feed._stop()

    async def _supervise(self, feed: WatchFeed[T]) -> None:
        """Stop the watch when nobody asks any more, or when the loop shuts down (this task is cancelled)."""
        try:
            while not feed.stopping.is_set():
                await asyncio.sleep(min(self.idle_stop, 5.0))
                if time.monotonic() - self._last_get > self.idle_stop:
                    log.debug("%s: idle for %g s, stopping its watch", self.name, self.idle_stop)
                    break
        finally:
            if self._feed is feed:
                self._stop_watch()

    def _stop_watch(self) -> None:
        feed, self._feed, self._stopping = self._feed, None, None
        self._connected = False
        if feed is not None:
            feed._stop()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and not supervisor.done():
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                supervisor.cancel()

    async def close(self) -> None:
        """Stop the watch and forget the entries (the next ``get`` starts afresh)."""
        self._stop_watch()
        refresh, self._refresh = self._refresh, None
        if refresh is not None and not refresh.done():
            refresh.cancel()
            with contextlib.suppress(BaseException):
                await refresh
        self._entries, self._listed_at, self._known_at = {}, _NEVER, {}
        self._loop = None


__all__ = ["StatusSource", "WatchFeed"]
