"""The ResourceManager REST API, through yarn-api-client: which RM is active, failover, and the few calls gp
makes (list applications, one application, kill). Every method blocks: call them from a worker thread.
"""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

from gp_core import BackendError, InvalidOptionError

from ._options import YarnOptions, check_endpoint

#: Application states (the RM's YarnApplicationState): alive while starting or running, then final.
ALIVE_STATES = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")

log = logging.getLogger("gp_yarn.rm")


def _site_properties(conf_dir: str) -> dict[str, str]:
    path = os.path.join(conf_dir, "yarn-site.xml")
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise InvalidOptionError(f"Cannot read the ResourceManager addresses from {path}: {exc}") from exc
    properties: dict[str, str] = {}
    for prop in root.iter("property"):
        name, value = prop.findtext("name"), prop.findtext("value")
        if name and value is not None:
            properties[name.strip()] = value.strip()
    return properties


def endpoints_from_conf_dir(conf_dir: str) -> list[str]:
    """The RM web app URLs a ``yarn-site.xml`` names: one, or one per RM of an HA pair (``rm-ids``)."""
    props = _site_properties(conf_dir)
    https = props.get("yarn.http.policy", "HTTP_ONLY").upper() == "HTTPS_ONLY"
    key, scheme, port = (
        ("yarn.resourcemanager.webapp.https.address", "https", 8090)
        if https
        else ("yarn.resourcemanager.webapp.address", "http", 8088)
    )

    def address(suffix: str) -> str | None:
        value = props.get(key + suffix)
        if not value:
            host = props.get("yarn.resourcemanager.hostname" + suffix) or props.get(
                "yarn.resourcemanager.hostname"
            )
            value = f"{host}:{port}" if host else None
        if value and value.startswith("0.0.0.0:"):
            host = props.get("yarn.resourcemanager.hostname" + suffix) or "127.0.0.1"
            value = f"{host}:{value.split(':', 1)[1]}"
        return f"{scheme}://{value}" if value else None

    if props.get("yarn.resourcemanager.ha.enabled", "false").lower() == "true":
        ids = [i.strip() for i in props.get("yarn.resourcemanager.ha.rm-ids", "").split(",") if i.strip()]
        found = [a for a in (address("." + rm_id) for rm_id in ids) if a]
    else:
        found = [a for a in [address("")] if a]
    if not found:
        raise InvalidOptionError(f"{conf_dir}/yarn-site.xml names no ResourceManager web app address")
    return [check_endpoint(url, "yarn-site.xml address") for url in found]


def configured_endpoints(options: YarnOptions) -> list[str]:
    """The RM endpoints in the order they are tried: the options', else those of ``hadoop_conf_dir``."""
    endpoints = [e for e in (options.yarn_endpoint, options.alt_yarn_endpoint) if e]
    if endpoints:
        return endpoints
    if options.hadoop_conf_dir:
        return endpoints_from_conf_dir(options.hadoop_conf_dir)
    raise InvalidOptionError(
        "gp backend 'yarn' needs a ResourceManager: set yarn_endpoint (env GP_YARN_ENDPOINT) or "
        "hadoop_conf_dir (env HADOOP_CONF_DIR) to a directory with yarn-site.xml"
    )


def _kerberos_auth() -> Any:
    try:
        from requests_kerberos import OPTIONAL, HTTPKerberosAuth
    except ImportError as exc:
        raise BackendError(
            "yarn_endpoint_security_enabled needs requests-kerberos: pip install 'gp-yarn[kerberos]'"
        ) from exc
    return HTTPKerberosAuth(mutual_authentication=OPTIONAL)


class ResourceManagerClient:
    """The active ResourceManager of ``endpoints`` (one RM, or an HA pair).

    The active RM is the one whose ``/ws/v1/cluster/info`` says ``haState: ACTIVE`` (a standby answers it
    itself, without redirecting). A request that fails is retried once against the RM that is active then,
    so a failover costs one failed request; when no RM is active the call raises :class:`BackendError`.
    ``requests`` counts the HTTP requests made (benchmarks read it).
    """

    def __init__(self, endpoints: list[str], *, verify: bool | str, kerberos: bool, timeout: float) -> None:
        self.endpoints = list(endpoints)
        self.verify = verify
        self.timeout = timeout
        self._auth = _kerberos_auth() if kerberos else None
        self._lock = threading.Lock()
        self._api: Any = None
        self.active_endpoint: str | None = None
        self.requests = 0

    # ------------------------------------------------------------------ active RM

    def _find_active(self) -> Any:
        import requests
        from yarn_api_client.base import BaseYarnAPI
        from yarn_api_client.resource_manager import ResourceManager

        problems: list[str] = []
        for endpoint in self.endpoints:
            self.requests += 1
            try:
                response = requests.get(
                    endpoint + "/ws/v1/cluster/info",
                    timeout=self.timeout,
                    verify=self.verify,
                    auth=self._auth,
                    allow_redirects=False,
                    headers={"Accept": "application/json"},
                )
                if response.status_code != 200:
                    problems.append(f"{endpoint}: HTTP {response.status_code}")
                    continue
                info = response.json().get("clusterInfo", {})
            except (requests.RequestException, ValueError) as exc:
                problems.append(f"{endpoint}: {exc}")
                continue
            state = str(info.get("haState", "ACTIVE")).upper()
            if state != "ACTIVE":
                problems.append(f"{endpoint}: {state.lower()}")
                continue
            # yarn-api-client's own constructor probes every endpoint again (and takes a standby that
            # redirects for active): build it for the endpoint found here.
            api = ResourceManager.__new__(ResourceManager)
            BaseYarnAPI.__init__(api, endpoint, self.timeout, self._auth, self.verify)
            # A standby RM answers with a redirect to the active one: take it as "not active any more"
            # (requests raises TooManyRedirects) and look for the active RM, rather than going through
            # the standby for every later request.
            api.session.max_redirects = 0
            self.active_endpoint = endpoint
            return api
        raise BackendError(f"No active YARN ResourceManager: {'; '.join(problems)}")

    def _call(self, what: str, request: Callable[[Any], Any]) -> Any:
        import requests
        from yarn_api_client.errors import APIError

        with self._lock:
            for attempt in (1, 2):
                if self._api is None:
                    self._api = self._find_active()
                api = self._api
                self.requests += 1
                try:
                    return request(api).data
                except APIError as exc:
                    text = str(exc)
                    if "status: 404" in text:
                        raise LookupError(text) from exc
                    if "standby" not in text.lower() or attempt == 2:
                        raise BackendError(
                            f"YARN ResourceManager {api.service_uri.to_url()}: {what}: {text}"
                        ) from exc
                except requests.RequestException as exc:
                    if attempt == 2:
                        raise BackendError(
                            f"YARN ResourceManager {api.service_uri.to_url()} unreachable ({what}): {exc}"
                        ) from exc
                log.info(
                    "YARN RM %s failed (%s); looking for the active ResourceManager",
                    what,
                    api.service_uri.to_url(),
                )
                self._api = None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ calls

    def alive_applications(self) -> list[dict[str, Any]]:
        """Every application in a non-final state: ONE request whatever the number of kernels."""
        data = self._call(
            "list applications", lambda api: api.cluster_applications(states=list(ALIVE_STATES))
        )
        return _apps(data)

    def applications_since(self, started_ms: int) -> list[dict[str, Any]]:
        """Applications started at ``started_ms`` (epoch ms) or later, in any state."""
        data = self._call(
            "list applications", lambda api: api.cluster_applications(started_time_begin=str(started_ms))
        )
        return _apps(data)

    def application(self, app_id: str) -> dict[str, Any] | None:
        """One application, or ``None`` when the RM does not know it."""
        try:
            data = self._call(f"application {app_id}", lambda api: api.cluster_application(app_id))
        except LookupError:
            return None
        app = data.get("app") if isinstance(data, dict) else None
        return app if isinstance(app, dict) else None

    def kill(self, app_id: str) -> None:
        """Ask the RM to kill ``app_id`` (PUT .../state KILLED); a final or unknown application is fine."""
        try:
            self._call(f"kill {app_id}", lambda api: api.cluster_application_kill(app_id))
        except LookupError:
            return


def _apps(data: Any) -> list[dict[str, Any]]:
    apps = data.get("apps") if isinstance(data, dict) else None
    listed = apps.get("app") if isinstance(apps, dict) else None
    return [a for a in listed or [] if isinstance(a, dict) and isinstance(a.get("id"), str)]
