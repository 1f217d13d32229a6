"""What Gateway Provisioners 0.5.0 (the anchor) called things, and what gp calls them.

Data only: the converter (:mod:`gp_core.migrate`), the clear errors for anchor kernelspecs and server
config (:mod:`gp_core._anchor_compat`) and docs/migration.md read it. Backend names appear here only as
strings naming where an anchor provisioner's kernels go in gp; nothing here imports a backend, and the
tests check every gp name below against the installed backends' real options.
"""

from __future__ import annotations

from dataclasses import dataclass

ANCHOR = "Gateway Provisioners"
ANCHOR_PACKAGE = "gateway_provisioners"
GP_PROVISIONER = "gp-remote-provisioner"
#: Where ``jupyter image-bootstrap install`` puts gp's launcher in an image (what gp kernelspecs run).
GP_IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py"
#: Where the anchor's ``jupyter image-bootstrap install`` put its launcher.
ANCHOR_IMAGE_LAUNCHER = "/usr/local/bin/kernel-launchers/python/scripts/launch_ipykernel.py"
REBUILD_IMAGE = (
    "rebuild it with gp's launcher: `jupyter image-bootstrap install --dest ctx/bin` (gp-core) and, in its "
    "Dockerfile, `COPY bin/ /usr/local/bin/` (see docs/deployment.md); the image also needs ipykernel and "
    "pycryptodomex>=3.21"
)


@dataclass(frozen=True)
class AnchorProvisioner:
    """One provisioner the anchor registered (or, for custom-resource, shipped as a class)."""

    name: str  #: entry-point name in jupyter_client.kernel_provisioners
    anchor_class: str  #: "module:Class" in gateway_provisioners
    backend: str | None  #: the gp backend its kernels go to; None: no gp equivalent
    distribution: str  #: the gp distribution providing that backend
    installer: str | None  #: the gp spec installer command (as the anchor's: docker-spec, ...)
    #: The anchor's server-config class of this provisioner.
    config_class: str
    #: The gp server-config section of the backend's options (None: not known until the backend lands).
    options_section: str | None
    note: str = ""


PROVISIONERS: dict[str, AnchorProvisioner] = {
    p.name: p
    for p in (
        AnchorProvisioner(
            "docker-provisioner",
            "gateway_provisioners.docker_swarm:DockerProvisioner",
            "docker",
            "gp-docker",
            "docker-spec",
            "DockerProvisioner",
            "DockerOptions",
        ),
        AnchorProvisioner(
            "docker-swarm-provisioner",
            "gateway_provisioners.docker_swarm:DockerSwarmProvisioner",
            "docker-swarm",
            "gp-docker",
            "docker-spec",
            "DockerSwarmProvisioner",
            "DockerSwarmOptions",
        ),
        AnchorProvisioner(
            "distributed-provisioner",
            "gateway_provisioners.distributed:DistributedProvisioner",
            "ssh",
            "gp-ssh",
            "ssh-spec",
            "DistributedProvisioner",
            "SshOptions",
        ),
        AnchorProvisioner(
            "kubernetes-provisioner",
            "gateway_provisioners.k8s:KubernetesProvisioner",
            "k8s",
            "gp-k8s",
            "k8s-spec",
            "KubernetesProvisioner",
            None,
        ),
        AnchorProvisioner(
            "yarn-provisioner",
            "gateway_provisioners.yarn:YarnProvisioner",
            "yarn",
            "gp-yarn",
            "yarn-spec",
            "YarnProvisioner",
            None,
        ),
        AnchorProvisioner(
            "spark-operator-provisioner",
            "gateway_provisioners.spark_operator:SparkOperatorProvisioner",
            "spark-operator",
            "gp-sparkop",
            "k8s-spec",
            "SparkOperatorProvisioner",
            None,
        ),
        AnchorProvisioner(
            "custom-resource-provisioner",
            "gateway_provisioners.crd:CustomResourceProvisioner",
            None,
            "",
            None,
            "CustomResourceProvisioner",
            None,
            note="the anchor's CustomResourceProvisioner is abstract (no entry point, it never started a "
            "kernel); its one concrete kind is spark-operator-provisioner, gp backend 'spark-operator'",
        ),
    )
}

#: The anchor's base classes whose traits every provisioner shared (server config ``c.<Class>.<trait>``).
SHARED_CONFIG_CLASSES = ("RemoteProvisionerConfigMixin", "RemoteProvisionerBase", "ContainerProvisionerBase")
#: The anchor's ResponseManager read only environment variables (same names in gp); as a config section
#: it never did anything.
RESPONSE_MANAGER = "ResponseManager"

#: Core traits: same names in gp, in ``c.GenericRemoteProvisioner`` (kernel.json: same keys).
CORE_TRAITS = ("authorized_users", "unauthorized_users", "port_range", "launch_timeout")

#: Backend traits: anchor trait -> gp option, per gp backend (None: no equivalent; the value is the reason).
BACKEND_TRAITS: dict[str, dict[str, str]] = {
    "docker": {"image_name": "image"},
    "docker-swarm": {"image_name": "image"},
    "ssh": {"remote_hosts": "remote_hosts", "load_balancing_algorithm": "load_balancing_algorithm"},
    "k8s": {"image_name": "image", "executor_image_name": "executor_image"},
    "spark-operator": {"image_name": "image", "executor_image_name": "executor_image"},
    "yarn": {
        "yarn_endpoint": "yarn_endpoint",
        "alt_yarn_endpoint": "alt_yarn_endpoint",
        "yarn_endpoint_security_enabled": "yarn_endpoint_security_enabled",
        "impersonation_enabled": "impersonation_enabled",
    },
}
#: Anchor traits a gp backend has no option for, and why.
DROPPED_TRAITS: dict[str, dict[str, str]] = {
    "docker": {"executor_image_name": "a docker kernel has no Spark executors (the anchor ignored it too)"},
    "docker-swarm": {
        "executor_image_name": "a swarm kernel has no Spark executors (the anchor ignored it too)"
    },
}

#: Environment variables the anchor read that gp reads under another name, or not at all.
ENV_CHANGES: dict[str, str] = {
    "GP_MAX_POLL_ATTEMPTS": "not read: gp polls the backend every poll_interval until the launch timeout",
    "GP_MAX_PORT_RANGE_RETRIES": "not read: gp's launcher binds its ports inside the range (binding is the "
    "check), so there is no pick-then-retry",
    "GP_ENABLE_TUNNELING": "not read: gp has no SSH tunnelling of kernel ports",
    "GP_TUNNEL_MAX_KEEP_ALIVE": "not read: gp has no SSH tunnelling of kernel ports",
    "GP_REMOTE_GSS_SSH": "not read: gp-ssh logs in with keys (GP_SSH_KEY_FILE, agent) or GP_REMOTE_PWD",
    "GP_DOCKER_MODE": "not read: the backend (docker or docker-swarm) says it",
    "GP_KERNEL_LAUNCH_TIMEOUT": "never read by the anchor either (its docs' name); use GP_LAUNCH_TIMEOUT",
    "EG_*": "the anchor's launchers' EG_* fallbacks are not read; use the GP_* or unprefixed names",
}

#: The anchor's argv placeholders and launcher flags that gp does not have.
DROPPED_ARGV = {
    "--transport-encryption": "not needed: gp's launcher is told through GP_TRANSPORT_ENCRYPTION, and gp's "
    "Python kernelspecs declare supported_encryption ['curve'] themselves (CurveZMQ under jupyter_client's "
    "transport_encryption auto/required)",
}
#: Launcher flags carried from an anchor argv into gp's (both launchers take them).
CARRIED_LAUNCHER_FLAGS = ("--kernel-class-name", "--spark-context-initialization-mode", "--cluster-type")


def provisioner_for_config_class(name: str) -> AnchorProvisioner | None:
    """The anchor provisioner whose server-config class is ``name``."""
    return next((p for p in PROVISIONERS.values() if p.config_class == name), None)


def anchor_config_classes() -> tuple[str, ...]:
    """Every anchor class a server config may hold a section for."""
    return (*SHARED_CONFIG_CLASSES, RESPONSE_MANAGER, *(p.config_class for p in PROVISIONERS.values()))
