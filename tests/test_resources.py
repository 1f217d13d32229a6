"""gp_core.resources: one grammar for quantities and one rule for the limits a request may set."""

from __future__ import annotations

import pytest

from gp_core import BackendError, parse_cpus, parse_memory, request_limit

MIB = 2**20


def test_memory_grammar() -> None:
    assert parse_memory("512m", "m") == 512 * MIB
    assert parse_memory("512Mi", "m") == 512 * MIB
    assert parse_memory("1.5GiB", "m") == 3 * 2**29
    assert parse_memory("2 g", "m") == 2 * 2**30
    assert parse_memory("1024", "m") == 1024
    assert parse_memory("1024b", "m") == 1024
    assert parse_memory("", "m") == 0
    assert parse_memory("0.0001k", "m") == 0  # rounds to no bytes at all
    for bad in ("1 gallon", "-1m", "1e3", "nan", "inf", "1_000", "\u0663m", "1m\n", "0x10", "1.m", "m"):
        with pytest.raises(ValueError, match="memory size"):
            parse_memory(bad, "KERNEL_MEMORY_LIMIT")


def test_cpu_grammar() -> None:
    assert parse_cpus("1.5", "c") == 1_500_000_000
    assert parse_cpus("500m", "c") == 500_000_000
    assert parse_cpus("2", "c", per_cpu=1000) == 2000
    assert parse_cpus("1e-10", "c") == 0  # a tenth of a nano-CPU: nothing
    assert parse_cpus("0", "c") == 0 and parse_cpus("", "c") == 0
    for bad in ("lots", "-1", "nan", "inf", "1e400", "1e6", "1_0", "\u0661", "1\n", "0x1"):
        with pytest.raises(ValueError, match="CPUs"):
            parse_cpus(bad, "KERNEL_CPUS_LIMIT")


def limit(requested: str | None, configured: str = "512m", maximum: str = "") -> int:
    return request_limit(
        "KERNEL_MEMORY_LIMIT",
        requested,
        parse_memory,
        configured=parse_memory(configured, "memory"),
        maximum=parse_memory(maximum, "max_memory"),
    )


def test_no_request_gets_the_configured_limit() -> None:
    assert limit(None) == 512 * MIB
    assert limit(None, configured="") == 0


def test_a_request_stays_within_the_configured_limit() -> None:
    assert limit("256m") == 256 * MIB
    assert limit("512m") == 512 * MIB
    assert limit("1g", maximum="2g") == 2**30
    with pytest.raises(BackendError, match=r"KERNEL_MEMORY_LIMIT='513m' refused.*at most"):
        limit("513m")
    with pytest.raises(BackendError, match="at most"):
        limit("3g", maximum="2g")


@pytest.mark.parametrize("unlimited", ["0", "0b", "0.0001k", "0m", "0.4"])
def test_zero_or_what_rounds_to_zero_is_no_limit_and_refused_under_a_limit(unlimited: str) -> None:
    with pytest.raises(BackendError, match="no limit"):
        limit(unlimited)
    with pytest.raises(BackendError, match="no limit"):
        limit(unlimited, configured="", maximum="1g")  # a cap alone is a configured limit too
    assert limit(unlimited, configured="") == 0  # nothing configured: no limit is what it had anyway


def test_cpus_under_a_limit() -> None:
    def cpus(requested: str) -> int:
        return request_limit(
            "KERNEL_CPUS_LIMIT", requested, parse_cpus, configured=parse_cpus("1", "cpus"), maximum=0
        )

    assert cpus("0.5") == 500_000_000
    for unlimited in ("1e-10", "0", "0.0000000001"):
        with pytest.raises(BackendError, match="no limit"):
            cpus(unlimited)
    with pytest.raises(BackendError, match="not a number of CPUs"):
        cpus("lots")
