"""The shared status listing: many kernels' polls cost one list call per interval."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from gp_docker._client import SharedListing


class CountingFetch:
    """A stand-in for the docker list call: counts calls, can block until released, can fail."""

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


async def test_concurrent_polls_share_one_call():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    fetch.release.clear()
    polls = [asyncio.create_task(listing.get(max_age=60)) for _ in range(50)]
    await asyncio.sleep(0.05)  # every poll is now waiting on the one refresh
    fetch.release.set()
    results = await asyncio.gather(*polls)
    assert fetch.calls == 1 and listing.fetches == 1
    assert all(result == {"kernel": 1} for result in results)


async def test_a_fresh_listing_is_reused_and_a_stale_one_refreshed():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    await listing.get(max_age=60)
    await listing.get(max_age=60)
    assert fetch.calls == 1
    assert await listing.get(max_age=0) == {"kernel": 2}  # max_age 0: always older than asked
    assert fetch.calls == 2


async def test_not_before_forces_a_listing_that_can_know_a_new_resource():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    await listing.get(max_age=60)
    created = time.monotonic()  # a container created after that listing started
    assert await listing.get(max_age=60, not_before=created) == {"kernel": 2}
    assert await listing.get(max_age=60, not_before=created) == {"kernel": 2}
    assert fetch.calls == 2


async def test_a_refresh_started_before_a_creation_is_not_joined():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    fetch.release.clear()
    early = asyncio.create_task(listing.get(max_age=60))
    await asyncio.sleep(0.02)
    created = time.monotonic()
    late = asyncio.create_task(listing.get(max_age=60, not_before=created))
    await asyncio.sleep(0.02)
    fetch.release.set()
    await early  # served by either refresh: both started within its max_age
    assert fetch.started[(await late)["kernel"]] >= created
    assert fetch.calls == 2


async def test_failures_reach_every_waiter_and_the_next_poll_retries():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    fetch.fail = RuntimeError("daemon down")
    fetch.release.clear()
    polls = [asyncio.create_task(listing.get(max_age=60)) for _ in range(3)]
    await asyncio.sleep(0.02)
    fetch.release.set()
    results = await asyncio.gather(*polls, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results) and fetch.calls == 1
    fetch.fail = None
    assert await listing.get(max_age=60) == {"kernel": 2}


async def test_a_cancelled_poller_does_not_cancel_the_shared_refresh():
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    fetch.release.clear()
    impatient = asyncio.create_task(listing.get(max_age=60))
    patient = asyncio.create_task(listing.get(max_age=60))
    await asyncio.sleep(0.02)
    impatient.cancel()
    fetch.release.set()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == {"kernel": 1} and fetch.calls == 1


def test_listings_survive_event_loop_changes():
    """Each test (and jupyter_server restarts) may run on a new loop: an in-flight refresh of a closed
    loop must not be awaited from another."""
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    assert asyncio.run(listing.get(max_age=60)) == {"kernel": 1}
    assert asyncio.run(listing.get(max_age=60)) == {"kernel": 1}  # cached data outlives the loop
    assert asyncio.run(listing.get(max_age=0)) == {"kernel": 2}


async def test_invalidate_outdates_even_a_refresh_already_running():
    """An event (say, a container died) during a refresh: that refresh may not have seen it."""
    fetch = CountingFetch()
    listing = SharedListing(fetch)
    await listing.get(max_age=60)
    fetch.release.clear()
    running = asyncio.create_task(listing.get(max_age=0))
    await asyncio.sleep(0.02)
    listing.invalidate()  # from the event thread, in real life
    fetch.release.set()
    await running
    assert fetch.started[(await listing.get(max_age=60))["kernel"]] >= fetch.started[2]
    assert fetch.calls == 3
