"""Print one line per kernel object gp-k8s created on the test cluster ("<kind> <namespace/name>"):
pods labelled component=kernel,app=gp (kernels) or component=kernel-pool,app=gp (parked), and namespaces and
RoleBindings labelled component=kernel,app=gp.

    python scripts/k8s-kernel-objects.py KUBECONFIG

Used by scripts/test.sh's leftover check and scripts/stop-backends.sh (--kernels removes them with --delete).
"""

from __future__ import annotations

import sys

from kubernetes import client, config


def main() -> int:
    kubeconfig = sys.argv[1]
    delete = "--delete" in sys.argv[2:]
    api = config.new_client_from_config(config_file=kubeconfig)
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    selector = "component=kernel,app=gp"
    for pod in core.list_pod_for_all_namespaces(label_selector=selector, _request_timeout=10).items:
        print(f"k8s-pod {pod.metadata.namespace}/{pod.metadata.name}")
        if delete:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
    for pod in core.list_pod_for_all_namespaces(
        label_selector="component=kernel-pool,app=gp", _request_timeout=10
    ).items:
        print(f"k8s-parked-pod {pod.metadata.namespace}/{pod.metadata.name}")
        if delete:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
    for namespace in core.list_namespace(label_selector=selector, _request_timeout=10).items:
        print(f"k8s-namespace {namespace.metadata.name}")
        if delete:
            core.delete_namespace(namespace.metadata.name)
    for binding in rbac.list_role_binding_for_all_namespaces(
        label_selector=selector, _request_timeout=10
    ).items:
        print(f"k8s-rolebinding {binding.metadata.namespace}/{binding.metadata.name}")
        if delete:
            rbac.delete_namespaced_role_binding(binding.metadata.name, binding.metadata.namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
