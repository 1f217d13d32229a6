"""CurveZMQ transport encryption of gp kernels, as jupyter_client >= 8.9 and Gateway Provisioners 0.5.0 do it.

The policy is the kernel manager's ``transport_encryption`` (``disabled`` | ``auto`` | ``required``;
jupyter_client itself refuses ``required`` for a kernelspec without ``"curve"`` in
``metadata.supported_encryption``). When it asks for encryption, the *launcher* generates the kernel's
CurveZMQ key pair where the kernel runs (``GP_TRANSPORT_ENCRYPTION=curve`` in its environment, or the
``{transport_encryption}`` argv placeholder) and reports it inside the encrypted launch payload; the
server checks both keys (40-character Z85, the public key derived from the secret one) and hands them to
jupyter_client, whose clients then speak CurveZMQ with the kernel's server key. ``auto`` falls back to
plain ZMQ, with a warning, for a kernel that reports no keys; ``required`` fails the launch.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .errors import LaunchError, ProtocolError

POLICIES = ("disabled", "auto", "required")
#: The launcher's environment variable (and placeholder value) asking for CurveZMQ.
ENV_VAR = "GP_TRANSPORT_ENCRYPTION"
_Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def kernel_declares_curve(kernel_spec: Any) -> bool:
    """Whether the kernelspec lists ``"curve"`` in ``metadata.supported_encryption``."""
    metadata = getattr(kernel_spec, "metadata", None) or {}
    declared = metadata.get("supported_encryption")
    if isinstance(declared, str):
        declared = [declared]
    return isinstance(declared, list | tuple | set) and "curve" in {str(x).strip().lower() for x in declared}


def policy_of(kernel_manager: Any) -> str:
    """The kernel manager's ``transport_encryption`` (``disabled`` where jupyter_client has none)."""
    value = str(getattr(kernel_manager, "transport_encryption", "disabled") or "disabled").lower()
    return value if value in POLICIES else "disabled"


def wanted(policy: str, kernel_spec: Any) -> bool:
    """Whether to ask the launcher for CurveZMQ: ``required``, or ``auto`` with a kernelspec declaring it."""
    if policy == "required":
        return True
    return policy == "auto" and kernel_declares_curve(kernel_spec)


def check_keys(info: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The reported (public, secret) CurveZMQ keys, or ``None`` when the kernel reported none.

    :raises ProtocolError: Only one key, or keys that are not a Z85 CurveZMQ key pair.
    """
    public, secret = info.get("curve_publickey"), info.get("curve_secretkey")
    if public is None and secret is None:
        return None
    for name, key in (("curve_publickey", public), ("curve_secretkey", secret)):
        if not isinstance(key, str) or not _Z85_KEY.fullmatch(key):
            raise ProtocolError(f"{name} must be a 40-character Z85 CurveZMQ key")
    assert isinstance(public, str) and isinstance(secret, str)
    import zmq

    if zmq.curve_public(secret.encode("ascii")) != public.encode("ascii"):
        raise ProtocolError("curve_publickey is not the public key of curve_secretkey")
    return public.encode("ascii"), secret.encode("ascii")


def apply(
    info: dict[str, Any], policy: str, asked: bool, kernel_manager: Any, kernel_id: str, log: logging.Logger
) -> dict[str, Any]:
    """Check the kernel's reported keys against the policy; return its connection info with them (or
    without any). The kernel manager's keys follow: stale ones of a previous launch are dropped.

    :raises LaunchError: ``required`` and the kernel did not encrypt; or keys it reported are invalid.
    """
    try:
        keys = check_keys(info)
    except ProtocolError as exc:
        raise LaunchError(f"Kernel {kernel_id} reported unusable transport encryption keys: {exc}") from exc
    info = {k: v for k, v in info.items() if k not in ("curve_publickey", "curve_secretkey")}
    if keys is not None and not asked:
        keys = None  # a kernel encrypting unasked: jupyter_client's clients would not speak curve to it
        log.warning("Kernel %s reported CurveZMQ keys it was not asked for; ignoring them", kernel_id)
    if keys is None and asked:
        message = (
            f"Kernel {kernel_id} did not enable CurveZMQ transport encryption (its launcher reported no "
            "keys: an older gp launcher, a kernel without CurveZMQ such as IRkernel, or pyzmq without "
            "libsodium)"
        )
        if policy == "required":
            raise LaunchError(message + "; transport_encryption is 'required'")
        log.warning("%s; transport_encryption is 'auto': the kernel runs unencrypted", message)
    if kernel_manager is not None and hasattr(kernel_manager, "curve_publickey"):
        kernel_manager.curve_publickey, kernel_manager.curve_secretkey = keys or (None, None)
    if keys is not None:  # text, as jupyter_client's own connection info holds them
        info["curve_publickey"], info["curve_secretkey"] = (key.decode("ascii") for key in keys)
    return info
