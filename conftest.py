"""Shared test set-up for gp core and every plugin's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Test traffic stays on loopback: the response listener must never advertise another address.
os.environ["GP_RESPONSE_IP"] = "127.0.0.1"


def _live_children() -> list[str]:
    """Processes (not zombies) whose parent is this test process: kernels a test left running."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(f"{stat.parent.name}: {cmdline.strip()}")
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running():
    """Fail the run when tests leave kernel processes behind."""
    yield
    leftovers = [p for p in _live_children() if "launch_i" in p or "ipykernel" in p or "IRkernel" in p]
    if leftovers:
        pytest.fail("processes left running by the tests:\n" + "\n".join(leftovers))
