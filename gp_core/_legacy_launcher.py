"""Recognising Gateway Provisioners' launchers at gp's response listener (docs/migration.md).

An image or host that still carries the anchor's launcher reaches gp's listener in one of three ways:

- **empty**: it connects and closes without sending anything. That is what the anchor's 0.5.0 launcher
  does when handed gp's public key (an X25519 key): it connects first, then fails to import the key as
  RSA, and the connection closes. gp's own launcher never sends an empty payload.
- **v1** (the anchor's 0.5.0 format): ``base64(JSON{"version": 1, "key": base64(RSA(aes key)),
  "conn_info": base64(AES-ECB(connection info))})``, from a launcher given some RSA key. The kernel id
  is inside the RSA-protected part, which gp cannot open.
- **v0** (the older format, no public key): ``base64(AES-ECB(connection info))`` with the AES key
  ``kernel_id[:16]``. Trying each pending kernel id, as the anchor did, names the kernel.

The listener fails the pending launch at once when it can tell which launch the payload belongs to: a
v0 payload that opens with its kernel id (one that opens with none is just garbage), or an empty or v1
one from the address of exactly one pending launch whose backend reported that address
(``PendingLaunch.address``). Otherwise it logs what it saw, and a launch that then times out says so.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from Cryptodome.Cipher import AES

EMPTY = "empty"
V0 = "v0"
V1 = "v1"

REBUILD = (
    "The kernel's image (or host) carries Gateway Provisioners' launcher, which gp cannot use: rebuild the "
    "image with gp's launcher (jupyter image-bootstrap install, then COPY it to /usr/local/bin; see "
    "docs/migration.md), or point the kernelspec's argv at gp's launcher (gp migrate converts the kernelspec)."
)
_DESCRIPTIONS = {
    EMPTY: "connected to the response address and closed without sending anything, as Gateway "
    "Provisioners' launcher does when handed gp's public key (it cannot import it as an RSA key)",
    V1: "sent a Gateway Provisioners 0.5.0 payload (version 1: RSA-wrapped AES key)",
    V0: "sent a legacy Gateway Provisioners payload (version 0: AES keyed by the kernel id)",
}


def recognise(raw: bytes) -> str | None:
    """Which anchor launcher format ``raw`` is, or None (gp's own payloads, or plain garbage)."""
    if raw == b"":
        return EMPTY
    text = raw.strip()
    if text.startswith(b"{"):
        return None  # gp's envelopes are JSON text; the anchor's payloads are base64
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if decoded.startswith(b"{"):
        try:
            payload = json.loads(decoded)
        except ValueError:
            return None
        if isinstance(payload, dict) and {"key", "conn_info"} <= payload.keys():
            return V1
        return None
    return V0 if decoded and len(decoded) % 16 == 0 else None


def v0_kernel_id(raw: bytes, pending: Iterable[str]) -> str | None:
    """The pending kernel id a v0 payload opens with (its connection info names that kernel id)."""
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    for kernel_id in pending:
        key = kernel_id[:16].encode()
        if len(key) != 16:
            continue
        try:
            # Version 0 pads its own way: the anchor kept the text up to the last "}".
            text = AES.new(key, AES.MODE_ECB).decrypt(decoded).decode("utf-8")
            info = json.loads(text.rsplit("}", 1)[0] + "}")
        except ValueError:
            continue
        if isinstance(info, dict) and "shell_port" in info:
            return kernel_id
    return None


def describe(kind: str, peer_ip: str) -> str:
    return f"a launcher at {peer_ip} {_DESCRIPTIONS[kind]}"


def launch_error_message(kernel_id: str, kind: str, peer_ip: str) -> str:
    return f"Kernel {kernel_id} failed to start: {describe(kind, peer_ip)}. {REBUILD}"
