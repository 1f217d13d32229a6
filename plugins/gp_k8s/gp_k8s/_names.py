"""Names and labels of what gp-k8s creates: DNS-1123 labels unique per kernel, for any username."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ._options import APP_LABEL, is_label_value

#: A DNS-1123 label (pod, namespace and container names) has at most 63 characters.
MAX_NAME_LENGTH = 63
_UNSAFE = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    """Lowercase ASCII letters, digits and single dashes ("José.Smith" -> "jose-smith")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", ascii_text.lower()).strip("-")


def kernel_name(username: str, kernel_id: str) -> str:
    """``{username}-{kernel_id}`` as a DNS-1123 label of at most 63 characters.

    The kernel part makes the name unique, so it is kept whole and the user part is shortened (or dropped)
    to fit; a kernel id that does not survive as it is (not lowercase alphanumerics and dashes, or too long)
    is replaced by a digest of it, so two kernels never share a name.
    """
    kernel_part = kernel_id if re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", kernel_id) else ""
    if not kernel_part or len(kernel_part) > 40:
        kernel_part = "k" + hashlib.sha256(kernel_id.encode()).hexdigest()[:32]
    room = MAX_NAME_LENGTH - len(kernel_part) - 1
    user_part = _slug(username)[: max(room, 0)].strip("-")
    return f"{user_part}-{kernel_part}" if user_part else f"kernel-{kernel_part}"


def kernel_id_label(kernel_id: str) -> str:
    """The ``kernel_id`` label value: the id itself when it is a valid label value, else a digest."""
    if is_label_value(kernel_id) and kernel_id:
        return kernel_id
    return "k" + hashlib.sha256(kernel_id.encode()).hexdigest()[:40]


def kernel_labels(kernel_id: str) -> dict[str, str]:
    """The labels on everything gp-k8s creates for a kernel; the status watch selects on the last two."""
    return {"kernel_id": kernel_id_label(kernel_id), "component": "kernel", "app": APP_LABEL}


#: The label selector of the status watch: every kernel pod gp-k8s created, nothing else.
KERNEL_SELECTOR = f"component=kernel,app={APP_LABEL}"
