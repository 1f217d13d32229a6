"""Which host a kernel runs on: round-robin, least-connection, or the request's KERNEL_REMOTE_HOST.

State is per server process, shared by every ssh kernelspec in it, and guarded by a lock: hooks run on
the event loop, but a placement must also be atomic if a caller ever places from a worker thread.
Least-connection counts kernels placed and not yet released: a kernel counts from the moment its host is
picked, so concurrent launches spread out instead of all seeing the same empty host.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from gp_core import BackendError

from ._options import LEAST_CONNECTION, ROUND_ROBIN


class HostPlacer:
    """Picks hosts and remembers where each kernel id was placed until it is released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_index: dict[tuple[str, ...], int] = {}
        self._host_of: dict[str, str] = {}

    def place(
        self, kernel_id: str, hosts: Sequence[str], algorithm: str, requested: str | None = None
    ) -> str:
        """Pick the host for ``kernel_id`` and count it there (a restart re-places the kernel).

        :raises BackendError: When ``requested`` (KERNEL_REMOTE_HOST) is not one of ``hosts``.
        """
        if not hosts:
            raise BackendError("No remote hosts are configured (remote_hosts / GP_REMOTE_HOSTS)")
        with self._lock:
            self._host_of.pop(kernel_id, None)
            if requested:
                if requested not in hosts:
                    raise BackendError(
                        f"KERNEL_REMOTE_HOST={requested!r} is not one of the configured remote hosts "
                        f"({', '.join(dict.fromkeys(hosts))})"
                    )
                host = requested
            elif algorithm == LEAST_CONNECTION:
                host = self._least_loaded(tuple(dict.fromkeys(hosts)))
            elif algorithm == ROUND_ROBIN:
                host = self._round_robin(tuple(hosts))
            else:
                raise BackendError(f"Unknown load-balancing algorithm {algorithm!r}")
            self._host_of[kernel_id] = host
            return host

    def release(self, kernel_id: str) -> None:
        """Stop counting ``kernel_id`` (idempotent; unknown ids, e.g. adopted kernels, are ignored)."""
        with self._lock:
            self._host_of.pop(kernel_id, None)

    def load(self) -> dict[str, int]:
        """Kernels currently counted per host."""
        with self._lock:
            return dict(Counter(self._host_of.values()))

    def host_of(self, kernel_id: str) -> str | None:
        with self._lock:
            return self._host_of.get(kernel_id)

    def _round_robin(self, hosts: tuple[str, ...]) -> str:
        # One cycle per distinct host list, so kernelspecs with different hosts do not skew each other.
        index = self._next_index.get(hosts, 0)
        self._next_index[hosts] = (index + 1) % len(hosts)
        return hosts[index % len(hosts)]

    def _least_loaded(self, hosts: tuple[str, ...]) -> str:
        counts = Counter(self._host_of.values())
        fewest = min(counts[host] for host in hosts)
        # Ties rotate (round-robin among the least loaded), so short-lived kernels do not all land on
        # the first host of the list.
        start = self._next_index.get(hosts, 0)
        for offset in range(len(hosts)):
            index = (start + offset) % len(hosts)
            if counts[hosts[index]] == fewest:
                self._next_index[hosts] = (index + 1) % len(hosts)
                return hosts[index]
        raise AssertionError("unreachable: some host has the fewest kernels")


#: The server process's placer.
PLACER = HostPlacer()
