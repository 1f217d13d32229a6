"""Where a kernel lives: the three namespace modes (shared, bring-your-own, automatic)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from gp_core import BackendError

from ._names import kernel_name
from ._options import K8sOptions, is_dns_label, is_dns_subdomain
from ._render import requested

SHARED = "shared"
BRING_YOUR_OWN = "byo"
AUTOMATIC = "auto"
#: Name of the RoleBinding gp creates in an automatic namespace.
ROLE_BINDING_NAME = "gp-kernel"


@dataclass(frozen=True)
class NamespacePlan:
    mode: str
    name: str
    service_account: str

    @property
    def created_by_gp(self) -> bool:
        return self.mode == AUTOMATIC


def plan(
    kernel_id: str, env: dict[str, str], options: K8sOptions, request_env: dict[str, str] | None = None
) -> NamespacePlan:
    """The kernel's namespace and service account (pure: creates nothing).

    :raises BackendError: For a KERNEL_NAMESPACE the options do not allow, or an invalid name.
    """
    asked = requested(env, "KERNEL_NAMESPACE", request_env)
    asked_account = requested(env, "KERNEL_SERVICE_ACCOUNT_NAME", request_env)
    if asked is not None:
        asked = asked.strip()
        if not options.allow_kernel_namespace:
            raise BackendError(
                f"KERNEL_NAMESPACE={asked!r} refused: this kernel does not let requests choose their namespace "
                "(allow_kernel_namespace / GP_ALLOW_KERNEL_NAMESPACE)"
            )
        if not is_dns_label(asked):
            raise BackendError(f"KERNEL_NAMESPACE={asked!r} is not a namespace name (DNS-1123 label)")
        if options.allowed_kernel_namespaces and not any(
            fnmatchcase(asked, pattern) for pattern in options.allowed_kernel_namespaces
        ):
            raise BackendError(
                f"KERNEL_NAMESPACE={asked!r} refused; allowed: {', '.join(options.allowed_kernel_namespaces)}"
            )
        account = (asked_account or options.service_account_name).strip()
        if not is_dns_subdomain(account):
            raise BackendError(f"KERNEL_SERVICE_ACCOUNT_NAME={account!r} is not a service account name")
        return NamespacePlan(BRING_YOUR_OWN, asked, account)
    if asked_account is not None and asked_account.strip() != options.service_account_name:
        raise BackendError(
            f"KERNEL_SERVICE_ACCOUNT_NAME={asked_account!r} refused: a request may choose its service account "
            "only in a namespace of its own (KERNEL_NAMESPACE with allow_kernel_namespace)"
        )
    if options.shared_namespace:
        return NamespacePlan(SHARED, options.namespace, options.service_account_name)
    return NamespacePlan(
        AUTOMATIC, kernel_name(env.get("KERNEL_USERNAME", ""), kernel_id), options.service_account_name
    )
