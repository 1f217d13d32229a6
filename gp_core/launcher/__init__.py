"""The kernel-side launcher, shipped as a plain script (package data) to be copied where kernels run."""

from __future__ import annotations

from pathlib import Path

#: ``launch_ipykernel.py``: run it as ``python launch_ipykernel.py --kernel-id ... --response-address ...``.
LAUNCHER_PATH: Path = Path(__file__).with_name("launch_ipykernel.py")

__all__ = ["LAUNCHER_PATH"]
