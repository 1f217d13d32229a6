"""Render a kernel's Kubernetes objects from the kernelspec's pod template: pure, creates nothing.

Injection-proof by construction: the template (operator-owned) is rendered in Jinja's immutable sandbox with
every ``{{ expression }}`` emitting an opaque random token instead of its value; the YAML is parsed with the
safe loader; only then does each token in the parsed data get its value back, as data. A request's
``KERNEL_*`` values therefore cannot add keys, objects or documents, change kinds, or run Jinja, wherever a
template puts them. The objects are then checked (allowed kinds, namespace, volumes, Pod Security) and
completed (labels, the kernel's environment, security defaults).
"""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import os
import re
import secrets
import threading
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from gp_core import BackendError, Resources
from gp_core.choices import choose_image, choose_working_dir, refuse_prohibited_ids, request_id

from ._names import kernel_labels, kernel_name
from ._options import K8sOptions, is_dns_subdomain, parse_quantity

#: The template gp-k8s ships (``jupyter k8s-spec install`` copies it into the kernelspec's scripts/).
DEFAULT_TEMPLATE = Path(__file__).with_name("kernel-pod.yaml.j2")
#: Where a kernelspec keeps its own template.
SPEC_TEMPLATE = "scripts/kernel-pod.yaml.j2"
#: Variables gp always sets in the kernel container, whatever the template says (the launch protocol).
PROTOCOL_ENV = ("KERNEL_ID", "GP_LAUNCH_TOKEN", "RESPONSE_ADDRESS", "PUBLIC_KEY", "PORT_RANGE")
#: Kernel-request variables for the kernel's resources: (variable, section, resource name).
RESOURCE_REQUESTS = (
    ("KERNEL_CPUS", "requests", "cpu"),
    ("KERNEL_MEMORY", "requests", "memory"),
    ("KERNEL_GPUS", "requests", "nvidia.com/gpu"),
    ("KERNEL_CPUS_LIMIT", "limits", "cpu"),
    ("KERNEL_MEMORY_LIMIT", "limits", "memory"),
    ("KERNEL_GPUS_LIMIT", "limits", "nvidia.com/gpu"),
)
_TOKEN_STATE: contextvars.ContextVar[_Tokens] = contextvars.ContextVar("gp_k8s_render_tokens")


class _Tokens:
    """The values one render emitted, each behind a random token."""

    def __init__(self) -> None:
        self.prefix = "gpv" + secrets.token_hex(8)
        self.values: list[Any] = []
        self.pattern = re.compile(re.escape(self.prefix) + r"n([0-9]+)z")

    def token_for(self, value: Any) -> str:
        self.values.append(value)
        return f"{self.prefix}n{len(self.values) - 1}z"


def _finalize(value: Any) -> str:
    return _TOKEN_STATE.get().token_for(value)


_env_lock = threading.Lock()
_environment: Any = None
_templates: dict[tuple[str, int, int], Any] = {}


def _jinja() -> Any:
    global _environment
    with _env_lock:
        if _environment is None:
            from jinja2 import StrictUndefined
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            _environment = ImmutableSandboxedEnvironment(
                undefined=StrictUndefined, finalize=_finalize, autoescape=False, keep_trailing_newline=True
            )
        return _environment


def _compiled(path: Path) -> Any:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    template = _templates.get(key)
    if template is None:
        from jinja2 import TemplateError

        try:
            template = _jinja().from_string(path.read_text())
        except TemplateError as exc:
            raise BackendError(f"Pod template {path} is not valid Jinja: {exc}") from exc
        _templates[key] = template
    return template


def template_path(options: K8sOptions, resource_dir: str | None) -> Path:
    """The template a launch renders: ``pod_template`` (relative to the kernelspec), else the kernelspec's
    ``scripts/kernel-pod.yaml.j2``, else gp-k8s's own."""
    if options.pod_template:
        path = Path(options.pod_template)
        if not path.is_absolute():
            if not resource_dir:
                raise BackendError(
                    f"pod_template {options.pod_template!r} is relative, but the kernelspec has no directory"
                )
            path = Path(resource_dir) / path
        if not path.is_file():
            raise BackendError(f"pod_template {str(path)!r} does not exist")
        return path
    if resource_dir and (Path(resource_dir) / SPEC_TEMPLATE).is_file():
        return Path(resource_dir) / SPEC_TEMPLATE
    return DEFAULT_TEMPLATE


def render_documents(path: Path, variables: dict[str, Any]) -> list[Any]:
    """Render ``path`` with ``variables`` as data, and return the YAML documents (see the module doc)."""
    import yaml
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    tokens = _Tokens()
    state = _TOKEN_STATE.set(tokens)
    try:
        text = _compiled(path).render(**variables)
    except SecurityError as exc:
        raise BackendError(f"Pod template {path} tried something the sandbox forbids: {exc}") from exc
    except TemplateError as exc:
        raise BackendError(f"Pod template {path} failed to render: {exc}") from exc
    finally:
        _TOKEN_STATE.reset(state)
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise BackendError(f"Pod template {path} did not render valid YAML: {exc}") from exc
    return [_substitute(document, tokens) for document in documents]


def _substitute(node: Any, tokens: _Tokens) -> Any:
    if isinstance(node, str):
        whole = tokens.pattern.fullmatch(node)
        if whole:
            return copy.deepcopy(tokens.values[int(whole.group(1))])
        return tokens.pattern.sub(lambda m: _as_text(tokens.values[int(m.group(1))]), node)
    if isinstance(node, dict):
        return {
            _substitute(key, tokens) if isinstance(key, str) else key: _substitute(value, tokens)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_substitute(item, tokens) for item in node]
    return node


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------
# what a request may choose


def requested(env: dict[str, str], name: str, request_env: dict[str, str] | None = None) -> str | None:
    """The request's value of ``name``, or None when the request did not set it."""
    if request_env is not None:
        value = request_env.get(name)
    else:
        value = env.get(name)
        if value is not None and value == os.environ.get(name):
            value = None
    return value if value not in (None, "") else None


def select_image(env: dict[str, str], options: K8sOptions, request_env: dict[str, str] | None) -> str:
    asked = requested(env, "KERNEL_IMAGE", request_env)
    return choose_image(asked, options.image, options.allowed_images, "k8s-spec")


def select_user(env: dict[str, str], options: K8sOptions) -> tuple[int | None, int | None]:
    """(uid, gid) of the kernel; compared as numbers, so ``"00"``, ``" 0"``, ``"+0"`` cannot pass for 0."""
    uid = request_id(env, "KERNEL_UID")
    gid = request_id(env, "KERNEL_GID")
    if uid is None and options.default_uid:
        uid = int(options.default_uid)
    if gid is None and options.default_gid:
        gid = int(options.default_gid)
    refuse_prohibited_ids(env, uid, gid, options.prohibited_uids, options.prohibited_gids)
    if uid == 0 and options.run_as_non_root:
        raise BackendError("KERNEL_UID=0 refused: kernel pods run as non-root (run_as_non_root)")
    return uid, gid


def select_working_dir(env: dict[str, str], options: K8sOptions, log: logging.Logger) -> str | None:
    return choose_working_dir(
        env.get("KERNEL_WORKING_DIR"), options.mirror_working_dirs, options.working_dir, log
    )


def select_resources(
    env: dict[str, str], options: K8sOptions, request_env: dict[str, str] | None
) -> dict[str, dict[str, str]]:
    """The kernel container's resources: the defaults, overridden by the request within ``max_resources``."""
    result: dict[str, dict[str, str]] = {
        section: {str(k): str(v) for k, v in (options.resources.get(section) or {}).items()}
        for section in ("requests", "limits")
    }
    for variable, section, resource in RESOURCE_REQUESTS:
        value = requested(env, variable, request_env)
        if value is None:
            continue
        value = value.strip()
        try:
            amount = parse_quantity(value, variable)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        cap = options.max_resources.get(resource)
        if cap is None:
            raise BackendError(
                f"{variable}={value!r} refused: this kernel does not let requests choose {resource} "
                "(max_resources has no cap for it)"
            )
        if amount > parse_quantity(str(cap), f"max_resources.{resource}"):
            raise BackendError(
                f"{variable}={value!r} refused: this kernel allows at most {cap} of {resource}"
            )
        result[section][resource] = value
    return {section: amounts for section, amounts in result.items() if amounts}


# ---------------------------------------------------------------------------------------------------------
# checks and completion of the rendered objects


def _check_volumes(volumes: list[Any], options: K8sOptions, where: str) -> None:
    for volume in volumes:
        if not isinstance(volume, dict) or not isinstance(volume.get("name"), str):
            raise BackendError(f"{where}: a volume must be a mapping with a name: {volume!r}")
        types = [key for key in volume if key != "name"]
        for kind in types:
            if kind == "hostPath":
                if not options.allow_host_path:
                    raise BackendError(
                        f"{where}: volume {volume['name']!r} is a hostPath, which allow_host_path forbids"
                    )
            elif kind not in options.allowed_volume_types:
                raise BackendError(
                    f"{where}: volume {volume['name']!r} of type {kind!r} refused; allowed: "
                    f"{', '.join(options.allowed_volume_types)}"
                )
            if kind == "persistentVolumeClaim" and options.allowed_claims:
                claim = str((volume[kind] or {}).get("claimName", ""))
                if not any(fnmatchcase(claim, pattern) for pattern in options.allowed_claims):
                    raise BackendError(
                        f"{where}: claim {claim!r} refused; allowed: {', '.join(options.allowed_claims)}"
                    )


_PRIVILEGED_KEYS = ("hostPID", "hostIPC")


def _secure_pod(spec: dict[str, Any], options: K8sOptions, where: str) -> None:
    """Apply (and enforce) the 'restricted' Pod Security Standard's container settings."""
    if not options.run_as_non_root:
        return
    for key in _PRIVILEGED_KEYS:
        if spec.get(key):
            raise BackendError(f"{where}: {key} is not allowed for kernel pods (run_as_non_root)")
    pod_security = spec.setdefault("securityContext", {}) or {}
    spec["securityContext"] = pod_security
    if pod_security.get("runAsUser") == 0:
        raise BackendError(f"{where}: runAsUser 0 is not allowed for kernel pods (run_as_non_root)")
    pod_security["runAsNonRoot"] = True
    pod_security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        security = container.setdefault("securityContext", {}) or {}
        container["securityContext"] = security
        if (
            security.get("privileged")
            or security.get("allowPrivilegeEscalation")
            or security.get("runAsUser") == 0
        ):
            raise BackendError(
                f"{where}: container {container.get('name')!r} asks for privileges kernel pods may not have "
                "(run_as_non_root)"
            )
        added = set((security.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            raise BackendError(
                f"{where}: container {container.get('name')!r} may not add capabilities {sorted(added)}"
            )
        security["allowPrivilegeEscalation"] = False
        capabilities = security.setdefault("capabilities", {}) or {}
        security["capabilities"] = capabilities
        capabilities["drop"] = ["ALL"]


def _merge_env(container: dict[str, Any], env: dict[str, str]) -> None:
    """Every variable of the kernel's environment reaches the container: the template's own entries stay,
    except the launch protocol's, which gp always sets."""
    existing = container.get("env") or []
    if not isinstance(existing, list):
        raise BackendError("the kernel container's env must be a list")
    protocol = set(PROTOCOL_ENV)
    kept = [item for item in existing if isinstance(item, dict) and item.get("name") not in protocol]
    names = {item.get("name") for item in kept}
    kept += [{"name": name, "value": value} for name, value in env.items() if name not in names]
    container["env"] = kept


def finish_objects(
    documents: list[Any],
    *,
    path: Path,
    kernel_id: str,
    namespace: str,
    pod_name: str,
    env: dict[str, str],
    options: K8sOptions,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check the rendered documents and complete them: returns (the pod, the other objects)."""
    where = f"pod template {path}"
    labels = {**options.extra_labels, **kernel_labels(kernel_id)}
    pod = None
    others = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, dict):
            raise BackendError(f"{where}: every document must be a mapping, not {type(document).__name__}")
        kind = document.get("kind")
        if kind not in options.allowed_kinds:
            raise BackendError(
                f"{where}: kind {kind!r} refused; this kernel may create {', '.join(options.allowed_kinds)} "
                "(allowed_kinds)"
            )
        if document.get("apiVersion") != "v1":
            raise BackendError(f"{where}: {kind} must have apiVersion v1, not {document.get('apiVersion')!r}")
        metadata = document.get("metadata")
        if not isinstance(metadata, dict):
            raise BackendError(f"{where}: {kind} has no metadata mapping")
        if metadata.get("namespace") not in (None, namespace):
            raise BackendError(
                f"{where}: {kind} names namespace {metadata.get('namespace')!r}, not the kernel's {namespace!r}"
            )
        metadata["namespace"] = namespace
        metadata["labels"] = {**{str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}, **labels}
        if kind == "Pod":
            if pod is not None:
                raise BackendError(f"{where}: only one Pod may be rendered")
            pod = document
        else:
            name = metadata.get("name")
            if not isinstance(name, str) or not is_dns_subdomain(name):
                raise BackendError(f"{where}: {kind} name {name!r} is not a DNS-1123 name")
            others.append(document)
    if pod is None:
        raise BackendError(f"{where}: rendered no Pod")
    metadata = pod["metadata"]
    if metadata.get("name") != pod_name:
        raise BackendError(
            f"{where}: the pod must be named {{{{ kernel_pod_name }}}} ({pod_name!r}), not {metadata.get('name')!r}"
        )
    metadata["annotations"] = {
        **{str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        **options.extra_annotations,
        "gp/kernel-username": env.get("KERNEL_USERNAME", ""),
    }
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise BackendError(f"{where}: the pod needs spec.containers")
    containers = spec["containers"]
    kernel = next((c for c in containers if isinstance(c, dict) and c.get("name") == "kernel"), containers[0])
    if not isinstance(kernel, dict):
        raise BackendError(f"{where}: a container must be a mapping")
    _merge_env(kernel, env)
    _check_volumes(spec.get("volumes") or [], options, where)
    _secure_pod(spec, options, where)
    for key in ("volumes", "initContainers"):
        if spec.get(key) in (None, []):
            spec.pop(key, None)
    for container in containers:
        if container.get("volumeMounts") in (None, []):
            container.pop("volumeMounts", None)
        if container.get("resources") in (None, {}):
            container.pop("resources", None)
    return pod, others


def render(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    options: K8sOptions,
    namespace: dict[str, Any],
    resource_dir: str | None,
    log: logging.Logger,
    request_env: dict[str, str] | None = None,
) -> Resources:
    """Everything ``launch`` creates, as JSON-serialisable manifests (blocking: reads the template)."""
    image = select_image(env, options, request_env)
    uid, gid = select_user(env, options)
    working_dir = select_working_dir(env, options, log)
    resources = select_resources(env, options, request_env)
    username = env.get("KERNEL_USERNAME", "")
    pod_name = kernel_name(username, kernel_id)
    ns = namespace["name"]
    service_account = namespace.get("service_account") or options.service_account_name

    kernel_env = dict(env)
    kernel_env.update(
        KERNEL_IMAGE=image,
        KERNEL_NAMESPACE=ns,
        KERNEL_POD_NAME=pod_name,
        KERNEL_SERVICE_ACCOUNT_NAME=service_account,
    )
    if options.executor_image:
        kernel_env["KERNEL_EXECUTOR_IMAGE"] = options.executor_image
    for name, value in (("KERNEL_UID", uid), ("KERNEL_GID", gid)):
        kernel_env.pop(name, None)
        if value is not None:
            kernel_env[name] = str(value)
    if working_dir is None or not options.mirror_working_dirs:
        kernel_env.pop("KERNEL_WORKING_DIR", None)

    volumes = list(options.volumes)
    _check_volumes(volumes, options, "option volumes")
    variables: dict[str, Any] = {
        name.lower(): value for name, value in kernel_env.items() if name.startswith("KERNEL_")
    }
    variables.update(
        kernel_pod_name=pod_name,
        kernel_namespace=ns,
        kernel_service_account_name=service_account,
        kernel_uid=uid,
        kernel_gid=gid,
        kernel_image=image,
        kernel_executor_image=options.executor_image,
        kernel_working_dir=working_dir,
        kernel_command=list(cmd),
        kernel_resources=resources,
        kernel_volumes=volumes,
        kernel_volume_mounts=list(options.volume_mounts),
        kernel_env=dict(kernel_env),
        kernel_labels={**options.extra_labels, **kernel_labels(kernel_id)},
        kernel_annotations=dict(options.extra_annotations),
        host_network=options.host_network,
        image_pull_policy=options.image_pull_policy,
        image_pull_secrets=[{"name": name} for name in options.image_pull_secrets],
        node_selector=dict(options.node_selector),
        tolerations=list(options.tolerations),
        affinity=dict(options.affinity),
        priority_class_name=options.priority_class_name,
        automount_service_account_token=bool(
            namespace.get("mode") != "shared" or options.mount_service_account_token
        ),
    )
    path = template_path(options, resource_dir)
    documents = render_documents(path, variables)
    pod, others = finish_objects(
        documents,
        path=path,
        kernel_id=kernel_id,
        namespace=ns,
        pod_name=pod_name,
        env=kernel_env,
        options=options,
    )
    return {"namespace": namespace, "pod": pod, "objects": others, "cmd": list(cmd), "env": kernel_env}
