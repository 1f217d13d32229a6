"""Host placement: round-robin, least-connection (from the very first launch), the KERNEL_REMOTE_HOST
override, and placements made concurrently."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from gp_ssh._placement import HostPlacer

from gp_core import BackendError

HOSTS = ["h1", "h2", "h3"]


def test_round_robin_cycles() -> None:
    placer = HostPlacer()
    assert [placer.place(f"k{i}", HOSTS, "round-robin") for i in range(7)] == [*HOSTS, *HOSTS, "h1"]


def test_round_robin_keeps_one_cycle_per_host_list() -> None:
    placer = HostPlacer()
    assert placer.place("a1", ["a", "b"], "round-robin") == "a"
    assert placer.place("x1", HOSTS, "round-robin") == "h1"
    assert placer.place("a2", ["a", "b"], "round-robin") == "b"
    assert placer.place("x2", HOSTS, "round-robin") == "h2"


def test_least_connection_works_from_the_first_launch() -> None:
    placer = HostPlacer()  # the anchor's least-connection raised ValueError here (empty host table)
    assert placer.place("k1", HOSTS, "least-connection") == "h1"


def test_least_connection_fills_the_emptiest_host() -> None:
    placer = HostPlacer()
    first = [placer.place(f"k{i}", HOSTS, "least-connection") for i in range(3)]
    assert sorted(first) == HOSTS
    placer.release("k1")  # its host is now the emptiest
    assert placer.place("k9", HOSTS, "least-connection") == first[1]
    assert placer.load() == {"h1": 1, "h2": 1, "h3": 1}


def test_least_connection_rotates_among_ties() -> None:
    placer = HostPlacer()
    hosts = []
    for i in range(6):  # each kernel ends before the next starts: every host is always empty
        hosts.append(placer.place(f"k{i}", HOSTS, "least-connection"))
        placer.release(f"k{i}")
    assert Counter(hosts) == {"h1": 2, "h2": 2, "h3": 2}


def test_release_is_idempotent_and_ignores_unknown_kernels() -> None:
    placer = HostPlacer()
    placer.place("k1", HOSTS, "least-connection")
    placer.release("k1")
    placer.release("k1")
    placer.release("adopted-elsewhere")
    assert placer.load() == {}


def test_a_restart_re_places_without_double_counting() -> None:
    placer = HostPlacer()
    placer.place("k1", HOSTS, "least-connection")
    placer.place("k1", HOSTS, "least-connection")
    assert sum(placer.load().values()) == 1


def test_override_must_be_a_configured_host() -> None:
    placer = HostPlacer()
    assert placer.place("k1", HOSTS, "round-robin", requested="h3") == "h3"
    assert placer.load() == {"h3": 1}  # overrides count for least-connection too
    with pytest.raises(BackendError, match=r"KERNEL_REMOTE_HOST='evil.example' is not one of .*h1, h2, h3"):
        placer.place("k2", HOSTS, "round-robin", requested="evil.example")
    assert placer.host_of("k2") is None


def test_no_hosts() -> None:
    with pytest.raises(BackendError, match="No remote hosts"):
        HostPlacer().place("k", [], "round-robin")


@pytest.mark.parametrize("algorithm", ["round-robin", "least-connection"])
def test_concurrent_placements_spread_evenly(algorithm: str) -> None:
    placer = HostPlacer()
    barrier = threading.Barrier(30)
    placed: list[str] = []

    def place(index: int) -> None:
        barrier.wait()
        placed.append(placer.place(f"k{index}", HOSTS, algorithm))

    threads = [threading.Thread(target=place, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(placed) == {"h1": 10, "h2": 10, "h3": 10}
