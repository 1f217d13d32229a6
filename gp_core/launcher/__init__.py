"""The kernel-side launcher, shipped as a plain script (package data) to be copied where kernels run."""

from __future__ import annotations

from pathlib import Path

#: ``launch_ipykernel.py``: run it as ``python launch_ipykernel.py --kernel-id ... --response-address ...``.
LAUNCHER_PATH: Path = Path(__file__).with_name("launch_ipykernel.py")

#: The launcher's arguments that carry the placeholders core fills at launch time (see docs/protocol.md).
PLACEHOLDER_ARGS: tuple[str, ...] = (
    "--kernel-id",
    "{kernel_id}",
    "--port-range",
    "{port_range}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
)

__all__ = ["LAUNCHER_PATH", "PLACEHOLDER_ARGS"]
