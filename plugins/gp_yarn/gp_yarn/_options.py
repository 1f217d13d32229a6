"""The ``yarn`` backend's options: kernel.json keys, ``c.YarnOptions.<name>`` in server config, ``GP_*`` env."""

from __future__ import annotations

import os
import tempfile
from typing import Any
from urllib.parse import urlsplit

from traitlets import Bool, Float, TraitError, Unicode, default, validate

from gp_core import BackendOptions, env_default, parse_bool


def check_endpoint(value: str, name: str) -> str:
    """An RM web app URL: ``http(s)://host[:port]`` (a trailing ``/`` is dropped; no path, query or user)."""
    url = value.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TraitError(f"{name} {value!r} is not an http(s)://host:port URL of a ResourceManager web app")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise TraitError(f"{name} {value!r} must be just scheme://host:port (no path, query or credentials)")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise TraitError(f"{name} {value!r}: {exc}") from None
    return url


class YarnOptions(BackendOptions):
    """Options of the ``yarn`` backend.

    The ResourceManager is found from ``yarn_endpoint`` (and ``alt_yarn_endpoint`` for an HA pair), else
    from ``yarn-site.xml`` in ``hadoop_conf_dir``; of several, the one whose REST API says ACTIVE is used,
    and a failover is followed.
    """

    request_variables = {
        "KERNEL_QUEUE": "The YARN queue to submit to (spark-submit --queue; a queue name).",
        "KERNEL_NODE_LABEL": "The node label the AM and executors run on (spark.yarn.*.nodeLabelExpression).",
        "KERNEL_EXTRA_SPARK_OPTS": "More spark-submit options: only --conf spark.KEY=VALUE (keys gp or the server "
        "decide refused), --driver-memory, --executor-memory, --driver-cores, --executor-cores, --num-executors.",
        "KERNEL_USERNAME": "With impersonation_enabled: the user to submit as (spark-submit --proxy-user).",
    }

    yarn_endpoint = Unicode(
        config=True,
        help="ResourceManager web app URL, http(s)://host:port (env GP_YARN_ENDPOINT). Empty: read the "
        "RM addresses from yarn-site.xml in hadoop_conf_dir.",
    )
    alt_yarn_endpoint = Unicode(
        config=True,
        help="The other ResourceManager of an HA pair (env GP_ALT_YARN_ENDPOINT); the active one is used.",
    )
    hadoop_conf_dir = Unicode(
        config=True,
        help="Directory holding yarn-site.xml, for endpoint discovery (env GP_HADOOP_CONF_DIR, else "
        "HADOOP_CONF_DIR, else YARN_CONF_DIR).",
    )
    yarn_endpoint_security_enabled = Bool(
        config=True,
        help="Authenticate to the RM REST API with Kerberos/SPNEGO (env GP_YARN_ENDPOINT_SECURITY_ENABLED; "
        "true/false; needs the gp-yarn[kerberos] extra).",
    )
    yarn_cert_bundle = Unicode(
        config=True,
        help="TLS verification of an https RM: 'true' (system CAs, the default), 'false' (no verification), "
        "or the path of a CA bundle (env GP_YARN_CERT_BUNDLE).",
    )
    impersonation_enabled = Bool(
        config=True,
        help="Submit as the requesting user: spark-submit --proxy-user KERNEL_USERNAME (env "
        "GP_IMPERSONATION_ENABLED; the server's principal must be allowed to impersonate).",
    )
    shutdown_wait_time = Float(
        config=True,
        help="Seconds to wait for a killed application to reach a final state (env "
        "GP_YARN_SHUTDOWN_WAIT_TIME; default 15).",
    )
    request_timeout = Float(
        config=True, help="Seconds one RM REST request may take (env GP_YARN_REQUEST_TIMEOUT; default 10)."
    )
    status_interval = Float(
        config=True,
        help="How old (seconds) the shared RM application listing may be when a kernel is polled (env "
        "GP_YARN_STATUS_INTERVAL; default 1): all kernels share one listing per interval.",
    )
    kernel_log_dir = Unicode(
        config=True,
        help="Where the local spark-submit's output and its properties file go, one per kernel (env "
        "GP_KERNEL_LOG_DIR; default the temp dir).",
    )
    staging_dir = Unicode(
        config=True,
        help="spark.yarn.stagingDir for the kernels (env GP_YARN_STAGING_DIR; empty: Spark's default, the "
        "submitter's home on the default file system). When local (a path or file:// URL), what an "
        "application leaves there is removed with its kernel.",
    )
    load_spark_defaults = Bool(
        config=True,
        help="Pass --load-spark-defaults (Spark >= 4.0) so conf/spark-defaults.conf still applies next to "
        "gp's per-kernel properties file (env GP_YARN_LOAD_SPARK_DEFAULTS; default true).",
    )

    _yarn_endpoint_default = default("yarn_endpoint")(env_default("GP_YARN_ENDPOINT", ""))
    _alt_yarn_endpoint_default = default("alt_yarn_endpoint")(env_default("GP_ALT_YARN_ENDPOINT", ""))
    _hadoop_conf_dir_default = default("hadoop_conf_dir")(
        env_default(("GP_HADOOP_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR"), "")
    )
    _security_default = default("yarn_endpoint_security_enabled")(
        env_default("GP_YARN_ENDPOINT_SECURITY_ENABLED", False)
    )
    _cert_bundle_default = default("yarn_cert_bundle")(env_default("GP_YARN_CERT_BUNDLE", "true"))
    _impersonation_default = default("impersonation_enabled")(env_default("GP_IMPERSONATION_ENABLED", False))
    _shutdown_wait_default = default("shutdown_wait_time")(env_default("GP_YARN_SHUTDOWN_WAIT_TIME", 15.0))
    _request_timeout_default = default("request_timeout")(env_default("GP_YARN_REQUEST_TIMEOUT", 10.0))
    _status_interval_default = default("status_interval")(env_default("GP_YARN_STATUS_INTERVAL", 1.0))
    _kernel_log_dir_default = default("kernel_log_dir")(env_default("GP_KERNEL_LOG_DIR", tempfile.gettempdir))
    _staging_dir_default = default("staging_dir")(env_default("GP_YARN_STAGING_DIR", ""))
    _load_defaults_default = default("load_spark_defaults")(env_default("GP_YARN_LOAD_SPARK_DEFAULTS", True))

    @validate("yarn_endpoint", "alt_yarn_endpoint")
    def _check_endpoint(self, proposal: Any) -> str:
        return check_endpoint(str(proposal["value"]), proposal["trait"].name)

    @validate("yarn_cert_bundle")
    def _check_cert_bundle(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        try:
            parse_bool(value, "yarn_cert_bundle")
        except Exception:
            if not os.path.isfile(value):
                raise TraitError(
                    f"yarn_cert_bundle {value!r} is neither true/false nor an existing CA bundle file"
                ) from None
        return value

    @validate("shutdown_wait_time", "request_timeout", "status_interval")
    def _check_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"{proposal['trait'].name} must be a positive number of seconds, not {value!r}")
        return value

    @validate("kernel_log_dir")
    def _check_log_dir(self, proposal: Any) -> str:
        path = str(proposal["value"])
        if not os.path.isabs(path) or "\0" in path:
            raise TraitError(f"kernel_log_dir {path!r} must be an absolute path on the server")
        return path

    @validate("staging_dir")
    def _check_staging_dir(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value and (
            any(c.isspace() or c == "\0" for c in value) or ("://" not in value and not value.startswith("/"))
        ):
            raise TraitError(
                f"staging_dir {value!r} must be an absolute path or a URL (hdfs://..., file://...)"
            )
        return value

    # ------------------------------------------------------------------ derived

    def verify(self) -> bool | str:
        """``requests``' ``verify`` argument for the RM REST API."""
        try:
            return parse_bool(self.yarn_cert_bundle, "yarn_cert_bundle")
        except Exception:
            return self.yarn_cert_bundle

    def local_staging_dir(self) -> str | None:
        """The staging directory's local path, when it is on this host's file system."""
        value = self.staging_dir
        if value.startswith("file://"):
            return value[len("file://") :] or None
        if value.startswith("/"):
            return value
        return None
