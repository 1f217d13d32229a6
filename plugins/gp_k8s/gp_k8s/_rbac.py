"""The RBAC rules the gp *server's* identity needs in each namespace mode (documented in the README and
granted, exactly these, by the tests)."""

from __future__ import annotations

from typing import Any

#: Shared mode: a Role in GP_NAMESPACE (the status watch lists and watches that namespace only).
POD_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]
#: Extra rules when allowed_kinds lets templates create more than the pod.
OBJECT_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "persistentvolumeclaims"],
        "verbs": ["create", "get", "delete"],
    }
]


def automatic_rules(kernel_cluster_role: str) -> list[dict[str, Any]]:
    """Automatic mode: a ClusterRole (kernel namespaces appear anywhere; the watch is cluster-wide)."""
    rules = [
        *POD_RULES,
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create", "get", "delete"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
    ]
    if kernel_cluster_role:
        # binding a role needs either every permission in it, or 'bind' on it
        rules.append(
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": [kernel_cluster_role],
            }
        )
    return rules
