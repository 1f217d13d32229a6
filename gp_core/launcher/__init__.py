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

#: Variables gp's launcher reads where the kernel runs (it cannot import gp_core, so they are listed here for
#: docs/reference.md; tests/test_reference.py checks the launcher's source names each).
LAUNCHER_ENV: dict[str, str] = {
    "KERNEL_ID": "--kernel-id when not given.",
    "RESPONSE_ADDRESS": "--response-address when not given.",
    "PUBLIC_KEY": "--public-key when not given.",
    "PORT_RANGE": "--port-range when not given (default 0..0).",
    "GP_LAUNCH_TOKEN": "The launch token (--launch-token is only a fallback: argv is visible to ps).",
    "GP_KERNEL_IP": "--ip when not given: the address the kernel binds (default 0.0.0.0; the local backend "
    "sets its kernel_ip).",
    "KERNEL_NAME": "The kernel_name reported in the connection info.",
    "GP_CONNECTION_DIR": "Where the launcher makes its private connection directory (it holds the kernel's "
    "key; default the temp dir); the local and ssh backends give one of theirs and remove it with the kernel.",
}

__all__ = ["LAUNCHER_ENV", "LAUNCHER_PATH", "PLACEHOLDER_ARGS"]
