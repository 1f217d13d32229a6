"""The ``ssh`` backend's options: kernel.json keys, ``c.SshOptions.<name>`` in server config, ``GP_*`` env."""

from __future__ import annotations

import getpass
import ipaddress
import re
from typing import Any

from traitlets import Bool, Enum, Float, Int, List, TraitError, Unicode, default, validate

from gp_core import BackendOptions, env_default, parse_list

ROUND_ROBIN = "round-robin"
LEAST_CONNECTION = "least-connection"
HOST_KEY_POLICIES = ("reject", "warn", "auto-add")
UPLOAD_MODES = ("never", "if-missing", "always")

# A host name or IPv4 address; '-' first would read as an ssh option, and '@'/':' as user/port syntax
# that these options express separately. IPv6 literals are checked with ipaddress.
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _is_host(text: str) -> bool:
    if _HOST_NAME.fullmatch(text):
        return True
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class SshOptions(BackendOptions):
    """Options of the ``ssh`` backend.

    remote_hosts and host_key_policy are policies (see :func:`gp_core.options.apply_policy`): kernel.json
    may narrow the hosts and make the host key policy stricter, never the reverse.

    The SSH password is deliberately not an option: it comes only from the server's ``GP_REMOTE_PWD``
    environment variable, so it can never be written into a kernel.json.
    """

    secret_env = ("GP_REMOTE_PWD",)
    request_variables = {
        "KERNEL_REMOTE_HOST": "The host to run on; only one of remote_hosts (else refused).",
        "KERNEL_WORKING_DIR": "The kernel's working directory on the host, only with mirror_working_dirs.",
        "KERNEL_EXTRA_SPARK_OPTS": "More spark-submit options for a Spark kernel (with allow_request_spark_opts; "
        "no --proxy-user).",
    }

    remote_hosts = List(
        Unicode(),
        config=True,
        help="Hosts kernels may run on (env GP_REMOTE_HOSTS, comma-separated; default: localhost). A "
        "policy: kernel.json's list must be within the server's.",
    ).tag(policy="allow")
    load_balancing_algorithm = Enum(
        [ROUND_ROBIN, LEAST_CONNECTION],
        config=True,
        help="How a host is picked: round-robin, or the host with the fewest running kernels "
        "(env GP_LOAD_BALANCING_ALGORITHM). A request's KERNEL_REMOTE_HOST overrides both.",
    )
    remote_user = Unicode(
        config=True, help="User to log in as (env GP_REMOTE_USER; default: the server's user)."
    )
    ssh_port = Int(config=True, help="SSH port of the remote hosts (env GP_SSH_PORT; default 22).")
    ssh_key_file = Unicode(
        config=True,
        help="Private key to log in with (env GP_SSH_KEY_FILE). When set, only this key is offered; "
        "otherwise the ssh agent and ~/.ssh keys are tried. A password comes only from env GP_REMOTE_PWD.",
    )
    known_hosts_file = Unicode(
        config=True,
        help="known_hosts file holding the remote hosts' keys (env GP_SSH_KNOWN_HOSTS; default: "
        "~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts).",
    )
    host_key_policy = Enum(
        list(HOST_KEY_POLICIES),
        config=True,
        help="What to do with a host whose key is not known: reject (default), warn or auto-add "
        "(env GP_SSH_HOST_KEY_POLICY). A key that differs from the known one is always rejected. A policy: "
        "kernel.json may only make it stricter (reject < warn < auto-add).",
    ).tag(policy="cap", parse=HOST_KEY_POLICIES.index)
    connect_timeout = Float(
        config=True,
        help="Seconds to connect and log in (env GP_SSH_CONNECT_TIMEOUT; default 10, never more than "
        "the launch timeout).",
    )
    command_timeout = Float(
        config=True, help="Seconds a remote command may take (env GP_SSH_COMMAND_TIMEOUT; default 20)."
    )
    stop_timeout = Float(
        5.0, config=True, help="Seconds between SIGTERM and SIGKILL when a kernel is stopped."
    )
    kernel_log_dir = Unicode(
        config=True,
        help="Directory on the remote host for the kernel logs, one file per kernel id (env "
        "GP_KERNEL_LOG_DIR; default /tmp).",
    )
    keep_kernel_logs = Bool(
        config=True,
        help="Keep every kernel log on the remote host (env GP_SSH_KEEP_KERNEL_LOGS). By default a log is "
        "removed when its kernel is shut down, and kept when the launch failed or the kernel restarts.",
    )
    upload_launcher = Enum(
        list(UPLOAD_MODES),
        config=True,
        help="Copy the kernelspec's launcher (its argv's .py file) to the remote host: never, if-missing "
        "(default: when the path does not exist there) or always (env GP_SSH_UPLOAD_LAUNCHER). The copy is "
        "a per-kernel file in kernel_log_dir, removed with the kernel.",
    )
    mirror_working_dirs = Bool(
        config=True,
        help="Start the kernel in the request's KERNEL_WORKING_DIR on the remote host (env "
        "GP_MIRROR_WORKING_DIRS); otherwise in the remote user's home directory.",
    )

    impersonation_enabled = Bool(
        config=True,
        help="Spark kernels run their application as the requesting user (spark-submit --proxy-user "
        "KERNEL_USERNAME; env GP_IMPERSONATION_ENABLED).",
    )
    allow_request_spark_opts = Bool(
        True,
        config=True,
        help="Whether a start request's KERNEL_EXTRA_SPARK_OPTS is added to a Spark kernel's spark-submit "
        "options (env GP_ALLOW_REQUEST_SPARK_OPTS).",
    )
    gss_auth = Bool(
        config=True,
        help="Log in with GSS-API (Kerberos) instead of keys or a password (env GP_REMOTE_GSS_SSH); needs "
        "a paramiko with GSS-API support (paramiko < 5 with python-gssapi).",
    )

    _impersonation_default = default("impersonation_enabled")(env_default("GP_IMPERSONATION_ENABLED", False))
    _request_spark_opts_default = default("allow_request_spark_opts")(
        env_default("GP_ALLOW_REQUEST_SPARK_OPTS", True)
    )
    _gss_auth_default = default("gss_auth")(env_default("GP_REMOTE_GSS_SSH", False))
    _remote_hosts_default = default("remote_hosts")(env_default("GP_REMOTE_HOSTS", ["localhost"]))
    _load_balancing_default = default("load_balancing_algorithm")(
        env_default("GP_LOAD_BALANCING_ALGORITHM", ROUND_ROBIN)
    )
    _remote_user_default = default("remote_user")(env_default("GP_REMOTE_USER", getpass.getuser))
    _ssh_port_default = default("ssh_port")(env_default("GP_SSH_PORT", 22))
    _ssh_key_file_default = default("ssh_key_file")(env_default("GP_SSH_KEY_FILE", ""))
    _known_hosts_file_default = default("known_hosts_file")(env_default("GP_SSH_KNOWN_HOSTS", ""))
    _host_key_policy_default = default("host_key_policy")(env_default("GP_SSH_HOST_KEY_POLICY", "reject"))
    _connect_timeout_default = default("connect_timeout")(env_default("GP_SSH_CONNECT_TIMEOUT", 10.0))
    _command_timeout_default = default("command_timeout")(env_default("GP_SSH_COMMAND_TIMEOUT", 20.0))
    _kernel_log_dir_default = default("kernel_log_dir")(env_default("GP_KERNEL_LOG_DIR", "/tmp"))
    _keep_kernel_logs_default = default("keep_kernel_logs")(env_default("GP_SSH_KEEP_KERNEL_LOGS", False))
    _upload_launcher_default = default("upload_launcher")(env_default("GP_SSH_UPLOAD_LAUNCHER", "if-missing"))
    _mirror_working_dirs_default = default("mirror_working_dirs")(
        env_default("GP_MIRROR_WORKING_DIRS", False)
    )

    @validate("remote_hosts")
    def _check_hosts(self, proposal: Any) -> list[str]:
        hosts: list[str] = []
        for entry in proposal["value"]:
            hosts.extend(parse_list(entry))  # "h1,h2" in one entry is two hosts
        if not hosts:
            raise TraitError("remote_hosts must name at least one host")
        for host in hosts:
            if not _is_host(host):
                raise TraitError(f"remote host {host!r} is not a host name or address")
        return hosts

    @validate("ssh_port")
    def _check_port(self, proposal: Any) -> int:
        port = int(proposal["value"])
        if not 0 < port < 65536:
            raise TraitError(f"ssh_port {port} is not a TCP port (1-65535)")
        return port

    @validate("connect_timeout", "command_timeout", "stop_timeout")
    def _check_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"{proposal['trait'].name} must be a positive number of seconds, not {value!r}")
        return value

    @validate("kernel_log_dir")
    def _check_log_dir(self, proposal: Any) -> str:
        path = str(proposal["value"])
        if not path.startswith("/") or "\0" in path or "\n" in path:
            raise TraitError(f"kernel_log_dir {path!r} must be an absolute path on the remote hosts")
        return path.rstrip("/") or "/"

    @validate("remote_user")
    def _check_user(self, proposal: Any) -> str:
        user = str(proposal["value"])
        if not user or user.startswith("-") or any(c.isspace() or c in "@:/" for c in user):
            raise TraitError(f"remote_user {user!r} is not a user name")
        return user
