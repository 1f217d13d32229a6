"""Options of the ``k8s`` backend: kernel.json keys, ``c.K8sOptions.<name>`` in server config, ``GP_*`` env.

The ``GP_*`` names are Gateway Provisioners' (``GP_NAMESPACE``, ``GP_SHARED_NAMESPACE``,
``GP_KERNEL_CLUSTER_ROLE``, ``GP_IMAGE_NAME``, ...). A request (its ``KERNEL_*`` values) may override only
what an option here allows: the image within ``allowed_images``, resources up to the ``max_*`` caps, the
namespace only with ``allow_kernel_namespace``.
"""

from __future__ import annotations

import re
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Integer, List, TraitError, Unicode, default, validate

from gp_core import BackendOptions, env_default, pattern_within
from gp_core.choices import id_list_option, id_option

#: Value of the ``app`` label on everything gp-k8s creates; the status watch selects on it.
APP_LABEL = "gp"
#: The highest uid/gid a pod may run as (a 32-bit id; Kubernetes takes int64 but the kernel does not).
#: Kinds a template may create when ``allowed_kinds`` allows them (the pod is always allowed).
KNOWN_KINDS = ("Pod", "PersistentVolumeClaim", "Secret", "ConfigMap", "Service")
#: Volume types allowed by default (none of them reaches the node's filesystem).
DEFAULT_VOLUME_TYPES = [
    "configMap",
    "secret",
    "emptyDir",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
]
PULL_POLICIES = ("Always", "IfNotPresent", "Never")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]+)?")


_QUANTITY_FACTORS = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_quantity(value: str, what: str) -> float:
    """Parse a Kubernetes quantity (``"500m"``, ``"2"``, ``"1.5Gi"``) into a number, to compare with a cap.

    :raises ValueError: When it is not a quantity.
    """
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{what}={value!r} is not a Kubernetes quantity like 500m, 2 or 4Gi")
    suffix = match.group(2) or ""
    number = float(text[: len(text) - len(suffix)] if suffix else text)
    if suffix.startswith("e"):
        return number  # the exponent is part of the float literal
    return number * _QUANTITY_FACTORS[suffix]


def is_dns_label(text: str) -> bool:
    return bool(_DNS_LABEL.fullmatch(text))


def _loosens_when_false(value: bool) -> int:
    """The policy level of an option whose ``true`` is the stricter setting: kernel.json may only raise it."""
    return 0 if value else 1


class K8sOptions(BackendOptions):
    """Options of the ``k8s`` backend."""

    request_variables = {
        "KERNEL_USERNAME": "First part of the pod's (and an automatic namespace's) name, {user}-{kernel_id} as a "
        "DNS-1123 label; kept whole in the pod's gp/kernel-username annotation.",
        "KERNEL_IMAGE": "Another kernel image, only one allowed_images matches.",
        "KERNEL_NAMESPACE": "An existing namespace of the request's own, only with allow_kernel_namespace "
        "(and allowed_kernel_namespaces); never deleted by gp.",
        "KERNEL_SERVICE_ACCOUNT_NAME": "The pod's service account, only with KERNEL_NAMESPACE.",
        "KERNEL_UID": "User id the kernel runs as (a number; prohibited_uids and 0 refused; default default_uid).",
        "KERNEL_GID": "Group id the kernel runs as (a number; prohibited_gids refused; default default_gid).",
        "KERNEL_WORKING_DIR": "The kernel's working directory, only with mirror_working_dirs (absolute path).",
        "KERNEL_CPUS": "CPU request of the kernel container, at most max_resources['cpu'].",
        "KERNEL_MEMORY": "Memory request, at most max_resources['memory'].",
        "KERNEL_GPUS": "nvidia.com/gpu request, at most max_resources['nvidia.com/gpu'].",
        "KERNEL_CPUS_LIMIT": "CPU limit, at most max_resources['cpu'].",
        "KERNEL_MEMORY_LIMIT": "Memory limit, at most max_resources['memory'].",
        "KERNEL_GPUS_LIMIT": "nvidia.com/gpu limit, at most max_resources['nvidia.com/gpu'].",
        "KERNEL_EXECUTOR_IMAGE": "Set by gp in the kernel's env from executor_image (Spark executors).",
        "KERNEL_POD_NAME": "Set by gp in the kernel's env: the pod's name.",
    }

    kubeconfig = Unicode(
        config=True,
        help="kubeconfig file the server talks to the cluster with (env GP_KUBECONFIG, else KUBECONFIG); "
        "unset, in a pod: its service account (in-cluster config), else ~/.kube/config.",
    )
    context = Unicode(config=True, help="kubeconfig context to use (env GP_K8S_CONTEXT; default: current).")
    image = Unicode(
        config=True,
        help="Kernel image (env GP_IMAGE_NAME). A request's KERNEL_IMAGE may pick another only from "
        "allowed_images.",
    )
    allowed_images = List(
        Unicode(),
        config=True,
        help="Images a request may choose with KERNEL_IMAGE, as fnmatch patterns (env GP_ALLOWED_IMAGES, "
        "comma list). Empty: requests cannot change the image.",
    ).tag(policy="allow", covers=pattern_within)
    executor_image = Unicode(
        config=True,
        help="Image of Spark executors, passed as KERNEL_EXECUTOR_IMAGE (env GP_EXECUTOR_IMAGE_NAME).",
    )
    image_pull_policy = Enum(
        PULL_POLICIES, config=True, help="imagePullPolicy of the kernel container (env GP_IMAGE_PULL_POLICY)."
    )
    image_pull_secrets = List(
        Unicode(),
        config=True,
        help="Names of the Secrets the pod pulls its image with (env GP_IMAGE_PULL_SECRETS).",
    )
    namespace = Unicode(
        config=True,
        help="Namespace of kernel pods in shared mode (env GP_NAMESPACE, default 'default').",
    )
    shared_namespace = Bool(
        config=True,
        help="Run every kernel in `namespace` (env GP_SHARED_NAMESPACE, default true). false: each kernel "
        "gets its own namespace plus a RoleBinding of kernel_cluster_role, created at start and deleted at "
        "shutdown (automatic mode).",
    )
    allow_kernel_namespace = Bool(
        config=True,
        help="Let a request run its kernel in an existing namespace of its own with KERNEL_NAMESPACE (and "
        "KERNEL_SERVICE_ACCOUNT_NAME); gp never deletes that namespace (env GP_ALLOW_KERNEL_NAMESPACE, "
        "default false).",
    ).tag(policy="cap")
    allowed_kernel_namespaces = List(
        Unicode(),
        config=True,
        help="fnmatch patterns a request's KERNEL_NAMESPACE must match when allow_kernel_namespace is on "
        "(env GP_ALLOWED_KERNEL_NAMESPACES; empty: any).",
    ).tag(policy="allow", covers=pattern_within, empty_allows_all=True)
    kernel_cluster_role = Unicode(
        config=True,
        help="ClusterRole bound (by a RoleBinding in the kernel's own namespace) to the kernel's service "
        "account in automatic mode (env GP_KERNEL_CLUSTER_ROLE, default 'view': read-only, no Secrets); "
        "'' = no RoleBinding.",
    )
    service_account_name = Unicode(
        config=True,
        help="Service account of kernel pods (env GP_KERNEL_SERVICE_ACCOUNT_NAME, default 'default').",
    )
    default_uid = Unicode(
        "1000", config=True, help="User id of the kernel when the request sets no KERNEL_UID."
    )
    default_gid = Unicode(
        "100", config=True, help="Group id of the kernel when the request sets no KERNEL_GID."
    )
    prohibited_uids = List(
        Unicode(),
        config=True,
        help="User ids a request may not run the kernel as (env GP_PROHIBITED_UIDS, default 0).",
    ).tag(policy="deny")
    prohibited_gids = List(
        Unicode(),
        config=True,
        help="Group ids a request may not run the kernel as (env GP_PROHIBITED_GIDS, default 0).",
    ).tag(policy="deny")
    mirror_working_dirs = Bool(
        config=True,
        help="Honour a request's KERNEL_WORKING_DIR as the kernel's working directory "
        "(env GP_MIRROR_WORKING_DIRS, default false).",
    )
    working_dir = Unicode(
        config=True, help="The kernel's working directory unless mirrored; '' = the image's."
    )
    host_network = Bool(
        config=True,
        help="Run kernel pods on the node's network (hostNetwork; env GP_K8S_HOST_NETWORK, default false). "
        "Needed where pod IPs do not route to the server (e.g. a single-node test cluster).",
    )
    resources = Dict(
        config=True,
        help="Default resource requests/limits, e.g. {'requests': {'cpu': '500m'}, 'limits': {'memory': '2Gi'}}; "
        "a request overrides them with KERNEL_CPUS/KERNEL_MEMORY/KERNEL_GPUS and their _LIMIT forms.",
    )
    max_resources = Dict(
        config=True,
        help="Caps on what a request may ask for, per resource, e.g. {'cpu': '4', 'memory': '8Gi', "
        "'nvidia.com/gpu': '1'}; a resource without a cap cannot be requested.",
    )
    node_selector = Dict(config=True, help="nodeSelector of kernel pods.")
    tolerations = List(Dict(), config=True, help="tolerations of kernel pods.")
    affinity = Dict(config=True, help="affinity of kernel pods.")
    priority_class_name = Unicode(config=True, help="priorityClassName of kernel pods.")
    extra_labels = Dict(config=True, help="Labels added to everything gp creates for a kernel.")
    extra_annotations = Dict(
        config=True,
        help="Annotations on kernel pods, e.g. {'sidecar.istio.io/inject': 'false'} to keep a mesh "
        "sidecar out.",
    )
    volumes = List(
        Dict(),
        config=True,
        help="Pod volumes (Kubernetes volume objects), checked against allowed_volume_types.",
    )
    volume_mounts = List(Dict(), config=True, help="volumeMounts of the kernel container.")
    allowed_volume_types = List(
        Unicode(),
        DEFAULT_VOLUME_TYPES,
        config=True,
        help="Volume types a kernel pod may use (from options or its template); hostPath only with "
        "allow_host_path.",
    ).tag(policy="allow")
    allowed_claims = List(
        Unicode(),
        config=True,
        help="fnmatch patterns of PersistentVolumeClaim names a pod may mount; empty: any.",
    ).tag(policy="allow", covers=pattern_within, empty_allows_all=True)
    allow_host_path = Bool(False, config=True, help="Allow hostPath volumes (never by default).").tag(
        policy="cap"
    )
    allowed_kinds = List(
        Unicode(),
        ["Pod"],
        config=True,
        help="Kinds the pod template may create, from Pod, PersistentVolumeClaim, Secret, ConfigMap, "
        "Service (env GP_K8S_ALLOWED_KINDS; default Pod only). Each gets the kernel's labels and is "
        "deleted at shutdown.",
    ).tag(policy="allow")
    pod_template = Unicode(
        config=True,
        help="Pod template, relative to the kernelspec's directory or absolute (default "
        "scripts/kernel-pod.yaml.j2, else gp-k8s's own).",
    )
    mount_service_account_token = Bool(
        config=True,
        help="Mount the service account token into kernel pods in shared mode (automatic and bring-your-own "
        "namespaces always mount it: that is what their RoleBinding is for; env "
        "GP_K8S_MOUNT_SERVICE_ACCOUNT_TOKEN).",
    ).tag(policy="cap")
    run_as_non_root = Bool(
        True,
        config=True,
        help="Pods meet the 'restricted' Pod Security Standard: runAsNonRoot, no privilege escalation, all "
        "capabilities dropped, RuntimeDefault seccomp.",
    ).tag(policy="cap", parse=_loosens_when_false)
    pool_size = Integer(
        config=True,
        help="Pods kept parked (running, ipykernel imported) for launches of this kernel, so a kernel starts "
        "faster than a new pod can; shared namespace mode only; 0 = none (env GP_K8S_POOL_SIZE, default 0).",
    )
    spark = Bool(
        False,
        config=True,
        help="Spark flavour: kernel.json's argv runs spark-submit --master k8s://... --deploy-mode cluster "
        "on the server with the launcher as the application; the kernel lives in the Spark driver pod "
        "(jupyter k8s-spec install --spark writes it).",
    )
    spark_advertise_address = Unicode(
        "",
        config=True,
        help="Spark flavour: the address drivers and executors advertise instead of their pod IP (env "
        "GP_SPARK_ADVERTISE_ADDRESS), e.g. 127.0.0.1 for hostNetwork pods on a single-node cluster.",
    )
    stop_timeout = Float(5.0, config=True, help="Grace period (seconds) of a graceful pod deletion.")
    delete_timeout = Float(
        60.0, config=True, help="Seconds terminate waits for the kernel's pod (and namespace) to be gone."
    )

    _kubeconfig_default = default("kubeconfig")(env_default(("GP_KUBECONFIG", "KUBECONFIG"), ""))
    _context_default = default("context")(env_default("GP_K8S_CONTEXT", ""))
    _image_default = default("image")(env_default("GP_IMAGE_NAME", ""))
    _allowed_images_default = default("allowed_images")(env_default("GP_ALLOWED_IMAGES", []))
    _executor_image_default = default("executor_image")(env_default("GP_EXECUTOR_IMAGE_NAME", ""))
    _pull_policy_default = default("image_pull_policy")(env_default("GP_IMAGE_PULL_POLICY", "IfNotPresent"))
    _pull_secrets_default = default("image_pull_secrets")(env_default("GP_IMAGE_PULL_SECRETS", []))
    _namespace_default = default("namespace")(env_default("GP_NAMESPACE", "default"))
    _shared_default = default("shared_namespace")(env_default("GP_SHARED_NAMESPACE", True))
    _allow_ns_default = default("allow_kernel_namespace")(env_default("GP_ALLOW_KERNEL_NAMESPACE", False))
    _allowed_ns_default = default("allowed_kernel_namespaces")(
        env_default("GP_ALLOWED_KERNEL_NAMESPACES", [])
    )
    _role_default = default("kernel_cluster_role")(env_default("GP_KERNEL_CLUSTER_ROLE", "view"))
    _sa_default = default("service_account_name")(env_default("GP_KERNEL_SERVICE_ACCOUNT_NAME", "default"))
    _prohibited_uids_default = default("prohibited_uids")(env_default("GP_PROHIBITED_UIDS", ["0"]))
    _prohibited_gids_default = default("prohibited_gids")(env_default("GP_PROHIBITED_GIDS", ["0"]))
    _mirror_default = default("mirror_working_dirs")(env_default("GP_MIRROR_WORKING_DIRS", False))
    _host_network_default = default("host_network")(env_default("GP_K8S_HOST_NETWORK", False))
    _advertise_default = default("spark_advertise_address")(env_default("GP_SPARK_ADVERTISE_ADDRESS", ""))
    _kinds_default = default("allowed_kinds")(env_default("GP_K8S_ALLOWED_KINDS", ["Pod"]))
    _token_default = default("mount_service_account_token")(
        env_default("GP_K8S_MOUNT_SERVICE_ACCOUNT_TOKEN", False)
    )
    _pool_size_default = default("pool_size")(env_default("GP_K8S_POOL_SIZE", 0))

    @validate("pool_size")
    def _check_pool_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 16:
            raise TraitError(f"pool_size must be within 0..16, not {value!r}")
        return value

    @validate("default_uid", "default_gid")
    def _check_default_id(self, proposal: Any) -> str:
        return id_option(proposal)

    @validate("prohibited_uids", "prohibited_gids")
    def _check_prohibited(self, proposal: Any) -> list[str]:
        return id_list_option(proposal)

    @validate("namespace")
    def _check_namespace(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not is_dns_label(value):
            raise TraitError(f"namespace {value!r} is not a DNS-1123 label (a-z, 0-9, '-', at most 63)")
        return value

    @validate("service_account_name")
    def _check_service_account(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not is_dns_subdomain(value):
            raise TraitError(f"service_account_name {value!r} is not a DNS-1123 name")
        return value

    @validate("kernel_cluster_role")
    def _check_role(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value and not re.fullmatch(r"[A-Za-z0-9:._-]{1,253}", value):
            raise TraitError(f"kernel_cluster_role {value!r} is not a ClusterRole name")
        return value

    @validate("allowed_kinds")
    def _check_kinds(self, proposal: Any) -> list[str]:
        kinds = [str(kind).strip() for kind in proposal["value"]]
        unknown = sorted(set(kinds) - set(KNOWN_KINDS))
        if unknown:
            raise TraitError(f"allowed_kinds {unknown} unknown; allowed: {', '.join(KNOWN_KINDS)}")
        return sorted(set(kinds) | {"Pod"})

    @validate("resources")
    def _check_resources(self, proposal: Any) -> dict[str, Any]:
        value = dict(proposal["value"])
        for section, amounts in value.items():
            if section not in ("requests", "limits") or not isinstance(amounts, dict):
                raise TraitError("resources takes {'requests': {...}, 'limits': {...}}")
            for name, amount in amounts.items():
                try:
                    parse_quantity(str(amount), f"resources.{section}.{name}")
                except ValueError as exc:
                    raise TraitError(str(exc)) from None
        return value

    @validate("max_resources")
    def _check_max_resources(self, proposal: Any) -> dict[str, Any]:
        value = dict(proposal["value"])
        for name, amount in value.items():
            try:
                parse_quantity(str(amount), f"max_resources.{name}")
            except ValueError as exc:
                raise TraitError(str(exc)) from None
        return value

    @validate("working_dir")
    def _check_working_dir(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and not value.startswith("/"):
            raise TraitError(f"working_dir {value!r} must be an absolute path")
        return value

    @validate("stop_timeout", "delete_timeout")
    def _check_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 3600:
            raise TraitError(f"{proposal['trait'].name} must be within 0..3600 seconds, not {value!r}")
        return value

    @validate("extra_labels")
    def _check_labels(self, proposal: Any) -> dict[str, str]:
        value = {str(k): str(v) for k, v in dict(proposal["value"]).items()}
        for key, item in value.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(item):
                raise TraitError(f"extra_labels {key}={item!r} is not a valid Kubernetes label")
        return value

    @validate("extra_annotations")
    def _check_annotations(self, proposal: Any) -> dict[str, str]:
        value = {str(k): str(v) for k, v in dict(proposal["value"]).items()}
        for key in value:
            if not _LABEL_KEY.fullmatch(key):
                raise TraitError(f"extra_annotations key {key!r} is not a valid annotation key")
        return value


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def is_dns_subdomain(text: str) -> bool:
    return bool(_DNS_SUBDOMAIN.fullmatch(text))


def is_label_value(text: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(text))
