"""``GenericRemoteProvisioner``: one jupyter_client provisioner for every gp backend.

It owns everything backend-agnostic (options, authorization, the launch protocol, signals through the
launcher's communication port, persistence) and reaches the backend ``kernel.json`` names only through
its hooks (see :mod:`gp_core.hookspecs`).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import inspect
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, List, TraitError, Unicode, default, validate
from traitlets.config import Config

from . import encryption
from ._anchor_compat import report_anchor_config
from .errors import (
    BackendError,
    GPError,
    InvalidOptionError,
    LaunchError,
    LaunchTimeoutError,
    NotAuthorizedError,
    ProtocolError,
)
from .listener import LaunchReport, PendingLaunch, ResponseListener
from .options import (
    CORE_OPTION_NAMES,
    assign_options,
    check_server_config,
    config_error,
    env_default,
    unknown_config_checked_by_gp,
)
from .plugins import Backend, get_backend, installed_backends
from .protocol import comm_request, normalize_port_range
from .rollback import Rollback
from .tunnel import KernelTunnel, open_tunnel
from .untrusted import is_env_name

_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
#: How long a signal over the communication port may take before it counts as unanswered.
_COMM_TIMEOUT = 5.0
#: What core's option errors call the options' owner.
_OWNER = "gp-remote-provisioner"
F = TypeVar("F", bound=Callable[..., Any])


class _Verbatim(str):
    """A message that ``%``-formatting leaves as it is: tornado and jupyter_server format an HTTPError's
    ``log_message % args``, and a gp error's args are its message, not format arguments."""

    __slots__ = ()

    def __mod__(self, args: object) -> str:
        return str(self)


_HTTP_CLASSES: dict[type[GPError], type[GPError]] = {}


def _http_class(cls: type[GPError]) -> type[GPError] | None:
    """``cls`` and tornado's HTTPError in one class, with ``cls``'s name, message and isinstance checks."""
    if cls not in _HTTP_CLASSES:
        try:
            from tornado.web import HTTPError  # jupyter_client's own dependency
        except ImportError:  # pragma: no cover
            return None
        if issubclass(cls, HTTPError):
            return None
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__str__": cls.__str__,  # HTTPError's would say "HTTP 400: Bad Request (...)"
            "log_message": property(lambda self: _Verbatim(str(self))),
            "get_message": lambda self: str(self),
        }
        _HTTP_CLASSES[cls] = type(cls.__name__, (cls, HTTPError), namespace)
    return _HTTP_CLASSES[cls]


def http_error(error: GPError) -> GPError:
    """Make ``error`` (in place) an instance of a subclass of its class that is also a
    ``tornado.web.HTTPError``, so that a Jupyter server answers the REST request it failed with the
    error's ``http_status`` and gp's message: jupyter_server's ``APIHandler.write_error`` shows an
    HTTPError's ``log_message`` and ``reason``, and 500 "Unhandled error" for anything else. ``reason``
    (the status line's phrase) is the gp error's class name. isinstance checks of gp's classes still hold.
    """
    cls = type(error)
    http_cls = _http_class(cls)
    if http_cls is None:
        return error
    error.__class__ = http_cls
    error.status_code = error.http_status  # type: ignore[attr-defined]
    error.reason = cls.__name__  # type: ignore[attr-defined]
    return error


def _tell_the_kernel_manager(provisioner: Any, error: GPError) -> None:
    """Put a failed start into the kernel manager's ``execution_state``/``reason`` when it has them
    (jupyter_server's ServerKernelManager shows them in the kernel's REST model). With pending kernels
    jupyter_server answers the start request before the launch runs, and its model would say "starting"
    until a client connects."""
    try:
        manager = provisioner.parent
        if manager is not None and manager.has_trait("execution_state") and manager.has_trait("reason"):
            manager.execution_state = "dead"
            manager.reason = str(error)
    except Exception:  # best effort: the error itself is raised anyway
        pass


def _errors_reach_http_clients(method: F) -> F:
    """Raise the gp errors of ``method`` as :func:`http_error` makes them (jupyter_client passes them on
    unchanged to jupyter_server, which answers the client), and tell the kernel manager."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except GPError as exc:
                http_error(exc)
                _tell_the_kernel_manager(self, exc)
                raise

        return wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def sync_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except GPError as exc:
            http_error(exc)
            _tell_the_kernel_manager(self, exc)
            raise

    return sync_wrapper  # type: ignore[return-value]


class GenericRemoteProvisioner(KernelProvisionerBase):
    """Starts a kernel wherever the selected gp backend puts it.

    ``kernel.json``::

        "metadata": {"kernel_provisioner": {"provisioner_name": "gp-remote-provisioner",
                     "config": {"backend": "docker", "image": "...", "launch_timeout": 60}}}

    Keys other than this class's options are the backend's options; an unknown key is an error.
    """

    #: Start-request variables core reads (docs/reference.md; backends declare theirs in
    #: ``request_variables``).
    request_variables = {
        "KERNEL_USERNAME": "The user starting the kernel (else the server's user), checked against "
        "authorized_users/unauthorized_users.",
        "KERNEL_LAUNCH_TIMEOUT": "This launch's timeout in seconds, at most max_launch_timeout.",
    }
    #: Variables core puts in every kernel's environment, whatever the request says.
    launch_variables = {
        "KERNEL_ID": "The kernel's id.",
        "KERNEL_USERNAME": "The (authorized) user who started it.",
        "KERNEL_LANGUAGE": "The kernelspec's language, unless the request set it.",
        "GP_LAUNCH_TOKEN": "The one-shot token the launcher proves itself with (never on a command line).",
        "RESPONSE_ADDRESS": "Where the launcher reports ({response_address}), for image entrypoints.",
        "PUBLIC_KEY": "The server's public key ({public_key}), for image entrypoints.",
        "PORT_RANGE": "The port range ({port_range}), for image entrypoints.",
        "GP_TRANSPORT_ENCRYPTION": "'curve' when jupyter_client's transport_encryption asks the launcher for "
        "CurveZMQ (auto with a kernelspec declaring it, or required).",
    }

    backend = Unicode("", config=True, help="Name of the gp backend that runs the kernel (required).")
    # Policies (see gp_core.options.apply_policy): kernel.json may narrow authorized_users and add to
    # unauthorized_users, never widen what the server allows.
    authorized_users = List(
        Unicode(),
        config=True,
        help="Users allowed to start kernels; empty = anyone not unauthorized (env GP_AUTHORIZED_USERS). "
        "A policy: kernel.json may only narrow the server's list.",
    ).tag(policy="allow", empty_allows_all=True)
    unauthorized_users = List(
        Unicode(),
        config=True,
        help="Users refused kernels; beats authorized_users (env GP_UNAUTHORIZED_USERS, default: root). "
        "A policy: kernel.json's list adds to the server's.",
    ).tag(policy="deny")
    port_range = Unicode(
        config=True, help="Ports the kernel may bind, 'LOW..HIGH'; '0..0' = any (env GP_PORT_RANGE)."
    )
    launch_timeout = Float(
        config=True,
        help="Seconds a launch may take: the backend creating the kernel, then its connection info arriving (env GP_LAUNCH_TIMEOUT).",
    )
    max_launch_timeout = Float(
        config=True,
        help="Upper bound on a per-request KERNEL_LAUNCH_TIMEOUT (env GP_MAX_LAUNCH_TIMEOUT).",
    )
    poll_interval = Float(
        config=True, help="Seconds between backend status checks while launching (env GP_POLL_INTERVAL)."
    )

    tunneling = Bool(
        config=True,
        help="Forward the kernel's ports through SSH to 127.0.0.1 here, for a server that cannot reach the "
        "kernels' network (env GP_ENABLE_TUNNELING; the backend must support it).",
    )
    tunnel_max_keep_alive = Float(
        config=True, help="SSH keepalive interval of a tunnel, seconds (env GP_TUNNEL_MAX_KEEP_ALIVE)."
    )

    _tunneling_default = default("tunneling")(env_default("GP_ENABLE_TUNNELING", False))
    _tunnel_keep_alive_default = default("tunnel_max_keep_alive")(
        env_default("GP_TUNNEL_MAX_KEEP_ALIVE", 30.0)
    )
    _authorized_users_default = default("authorized_users")(env_default("GP_AUTHORIZED_USERS", []))
    _unauthorized_users_default = default("unauthorized_users")(
        env_default("GP_UNAUTHORIZED_USERS", ["root"])
    )
    _port_range_default = default("port_range")(env_default("GP_PORT_RANGE", "0..0"))
    _launch_timeout_default = default("launch_timeout")(
        env_default(("GP_LAUNCH_TIMEOUT", "KERNEL_LAUNCH_TIMEOUT"), 30.0)
    )
    _max_launch_timeout_default = default("max_launch_timeout")(env_default("GP_MAX_LAUNCH_TIMEOUT", 300.0))
    _poll_interval_default = default("poll_interval")(env_default("GP_POLL_INTERVAL", 0.5))

    @validate("port_range")
    def _check_port_range(self, proposal: Any) -> str:
        try:
            return normalize_port_range(proposal["value"])
        except InvalidOptionError as exc:
            raise TraitError(str(exc)) from None

    @validate("launch_timeout", "max_launch_timeout", "poll_interval", "tunnel_max_keep_alive")
    def _check_positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise InvalidOptionError(
                f"{proposal['trait'].name} must be a positive number of seconds, not {value!r}"
            )
        return value

    @classmethod
    def core_option_names(cls) -> list[str]:
        """The options core itself takes in kernel.json's config (the rest are the backend's)."""
        return sorted(cls.class_trait_names(config=True))

    @_errors_reach_http_clients
    def __init__(self, **kwargs: Any) -> None:
        own = set(self.class_trait_names()) | {"parent", "config"}
        self._backend_values = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        # kernel.json's core values are assigned after the server's config, so that each error names its
        # source and a policy option's server value is known (the floor kernel.json may only tighten).
        core_values = {k: kwargs.pop(k) for k in list(kwargs) if k in CORE_OPTION_NAMES}
        try:
            with unknown_config_checked_by_gp():
                super().__init__(**kwargs)
        except (TraitError, ValueError) as exc:
            config = kwargs.get("config") or getattr(kwargs.get("parent"), "config", None) or Config()
            raise config_error(type(self), config, _OWNER, exc) from exc
        report_anchor_config(
            self.config, self.log
        )  # once per process: Gateway Provisioners' ignored settings
        assign_options(self, self.core_option_names(), core_values, _OWNER)
        if not self.backend:
            raise InvalidOptionError(
                "kernel.json's kernel_provisioner config must name a gp backend, e.g. "
                f'"backend": "local"; installed backends: {", ".join(installed_backends())}'
            )
        self._backend: Backend = get_backend(self.backend)
        options_class = self._backend.options_class
        check_server_config(
            self,
            _OWNER,
            {"GenericRemoteProvisioner": self.core_option_names()},
            elsewhere={options_class.__name__: options_class.option_names()} if options_class else None,
        )
        self.options = self._backend.make_options(
            self._backend_values, parent=self, other_options=self.core_option_names()
        )
        self._handle: dict[str, Any] | None = None
        self._report: LaunchReport | None = None
        self._comm_address: tuple[str, int] | None = None
        self._tunnel: KernelTunnel | None = None
        self._encryption = "disabled"
        self._curve_asked = False
        self._tunneled_from: dict[str, Any] | None = None  # the kernel's own addresses, when tunnelled
        self._listener: ResponseListener | None = None
        self._pending: PendingLaunch | None = None
        self._plan: dict[str, Any] = {}
        self._rollback: Rollback | None = None
        self._handle_json = "null"
        self._poll_warning = ""
        self._exited = False
        self._terminated = False

    @property
    def backend_log(self) -> logging.Logger:
        """The logger handed to the backend's hooks: ``<provisioner logger>.gp.<backend>``, a child of the
        server's logger (its records reach the server's handlers, and can be filtered by name)."""
        return logging.getLogger(f"{getattr(self.log, 'name', 'traitlets')}.gp.{self.backend}")

    # ------------------------------------------------------------------ launch

    @property
    def has_process(self) -> bool:
        return self._handle is not None and not self._exited

    @_errors_reach_http_clients
    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        env: dict[str, str] = kwargs["env"]
        username = self._authorize(env)
        launch_timeout = self._request_launch_timeout(env)
        self._listener = listener = await ResponseListener.instance(parent=self)
        self._pending = pending = listener.register(self.kernel_id)
        self._rollback = rollback = Rollback(self.backend_log)
        self._encryption = encryption.policy_of(self.parent)
        self._curve_asked = encryption.wanted(self._encryption, self.kernel_spec)
        try:
            cmd = self._format_cmd(listener, kwargs.pop("extra_arguments", None) or [])
            kernel_env, request_env = self._kernel_env(env, username, listener, pending.token)
            if self._curve_asked:  # the launcher generates the key pair where the kernel runs
                kernel_env[encryption.ENV_VAR] = "curve"
            hook_args = {
                "kernel_id": self.kernel_id,
                "options": self.options,
                "log": self.backend_log,
                "rollback": rollback,
                "resource_dir": self.kernel_spec.resource_dir if self.kernel_spec else None,
                "request_env": request_env,
            }
            namespace = None
            if self._backend.implements("resolve_namespace"):
                namespace = await self._backend.call("resolve_namespace", env=kernel_env, **hook_args)
            if self._backend.implements("render_resources"):
                resources = await self._backend.call(
                    "render_resources", cmd=cmd, env=kernel_env, namespace=namespace, **hook_args
                )
            else:
                resources = {"cmd": cmd, "env": kernel_env}
        except BaseException as error:
            listener.unregister(self.kernel_id)
            await self._roll_back(error)
            raise
        self._plan = {
            "namespace": namespace,
            "resources": resources,
            "launch_timeout": launch_timeout,
            "hook_args": hook_args,
        }
        kwargs["cmd"] = cmd
        # The kernel's env travels inside `resources`; what jupyter_client keeps must not hold the token.
        kwargs["env"] = {k: v for k, v in env.items() if k != "GP_LAUNCH_TOKEN"}
        return kwargs

    @_errors_reach_http_clients
    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        assert self._listener is not None, "pre_launch must run first"
        plan = self._plan
        self._exited = self._terminated = False
        launch_timeout = plan["launch_timeout"]
        deadline = asyncio.get_running_loop().time() + launch_timeout
        hook_args = plan["hook_args"]
        # The launch timeout bounds the backend's launch too (an SSH host that accepts and then hangs).
        launch_deadline = asyncio.timeout(launch_timeout)
        try:
            async with launch_deadline:
                handle = await self._backend.call(
                    "launch", resources=plan["resources"], namespace=plan["namespace"], **hook_args
                )
            if not isinstance(handle, dict):
                raise BackendError(f"gp backend {self.backend!r}: launch must return a dict handle")
            self._handle_json = self._encode_handle(handle)
        except BaseException as error:
            self._listener.unregister(self.kernel_id)
            await self._roll_back(error)
            if isinstance(error, TimeoutError) and launch_deadline.expired():
                raise LaunchTimeoutError(
                    f"gp backend {self.backend!r} did not create kernel {self.kernel_id} within "
                    f"{launch_timeout:g} s (launch_timeout)"
                ) from error
            if isinstance(error, TimeoutError) and not isinstance(error, GPError):
                # The backend's own time-out (an SDK call), not launch_timeout: say so.
                raise BackendError(
                    f"gp backend {self.backend!r} timed out creating kernel {self.kernel_id}: "
                    f"{error or type(error).__name__}"
                ) from error
            raise
        self._handle = handle
        assert self._rollback is not None
        self._rollback.clear()  # from here on, terminate owns the clean-up
        self._listener.expect_from(self.kernel_id, handle.get("ip"))  # spots an anchor launcher there
        try:
            report = await self._await_connection_info(deadline, launch_timeout)
        except BaseException as launch_error:
            self._listener.unregister(self.kernel_id)
            try:
                await asyncio.shield(self._remove_resources(force=True, restart=False))
            except Exception as cleanup_error:  # the launch failure is what the user must see
                self.log.error(
                    "Could not remove kernel %s after its failed launch: %s",
                    self.kernel_id,
                    cleanup_error,
                    exc_info=cleanup_error,
                )
                launch_error.add_note(
                    f"Removing the kernel's resources afterwards also failed: {cleanup_error!r}"
                )
            raise
        try:
            self._adopt_report(report)  # refuses keys unfit for the transport_encryption policy
            if self.tunneling:
                await self._open_tunnel()
        except BaseException:
            await asyncio.shield(self._remove_resources(force=True, restart=False))
            raise
        self.log.info(
            "Kernel %s started on gp backend %r at %s",
            self.kernel_id,
            self.backend,
            self.connection_info["ip"],
        )
        return self.connection_info

    async def _await_connection_info(self, deadline: float, timeout: float) -> LaunchReport:
        """Wait for the launcher's payload until ``deadline`` (the loop's clock; ``timeout`` is the
        launch timeout it stands for); meanwhile poll the backend so a dead kernel fails fast."""
        assert self._listener is not None and self._pending is not None
        pending = self._pending
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LaunchTimeoutError(
                    f"Kernel {self.kernel_id} on gp backend {self.backend!r} did not report its connection "
                    f"info within {timeout:g} s (launch_timeout). Check that the kernel can reach "
                    f"{self._listener.response_address} (GP_RESPONSE_IP / GP_RESPONSE_PORT)."
                    + self._listener.legacy_note(deadline - timeout)
                )
            await asyncio.wait({pending.future}, timeout=min(self.poll_interval, remaining))
            if pending.future.done():
                return pending.future.result()
            try:
                status = await self._poll_backend(launching=True)
            except LaunchError:
                raise
            except Exception as exc:  # an API blip is not a failed kernel: the launch timeout bounds it
                self._warn_poll_failed(exc, launching=True)
                continue
            if status is not None:
                raise LaunchError(
                    f"Kernel {self.kernel_id} on gp backend {self.backend!r} exited with status {status} "
                    "during start-up."
                )

    def _adopt_report(self, report: LaunchReport) -> None:
        assert self._handle is not None
        info = dict(report.connection_info)
        reported_ip = str(info.get("ip") or "")
        info["ip"] = self._handle.get("ip") or (
            reported_ip if reported_ip not in ("", "0.0.0.0") else report.peer_ip
        )
        key = info.get("key", b"")
        info["key"] = key.encode() if isinstance(key, str) else key
        info = encryption.apply(
            info, self._encryption, self._curve_asked, self.parent, self.kernel_id, self.backend_log
        )
        self._report = report
        self._comm_address = (info["ip"], report.comm_port)
        self.connection_info = cast(KernelConnectionInfo, info)

    async def _open_tunnel(self, reported_ip: str | None = None) -> None:
        """Forward the kernel's ports through the backend's SSH route; point connection info at them."""
        assert self._handle is not None
        if not self._backend.implements("tunnel_route"):
            raise BackendError(
                f"gp backend {self.backend!r} does not support tunneling (GP_ENABLE_TUNNELING)"
            )
        route = await self._backend.call(
            "tunnel_route", handle=self._handle, options=self.options, log=self.backend_log
        )
        if route is None:
            raise BackendError(f"gp backend {self.backend!r} cannot tunnel kernel {self.kernel_id}")
        if reported_ip is None:
            reported_ip = str((self._report.connection_info if self._report else {}).get("ip") or "")
        kernel_info: dict[str, Any] = dict(self.connection_info)
        own = {"connection_info": kernel_info, "comm_address": self._comm_address, "reported_ip": reported_ip}
        tunnel, local, local_comm = await asyncio.to_thread(
            open_tunnel,
            route,
            kernel_info,
            self._comm_address,
            self.tunnel_max_keep_alive,
            reported_ip,
        )
        self._tunnel, self._tunneled_from = tunnel, own
        self.connection_info = cast(KernelConnectionInfo, local)
        self._comm_address = local_comm
        self.log.info("Kernel %s: ports tunnelled through %s", self.kernel_id, route.description)

    def _close_tunnel(self) -> None:
        if self._tunnel is not None:
            self._tunnel.close()
        self._tunnel = self._tunneled_from = None

    # ------------------------------------------------------------------ lifecycle

    async def poll(self) -> int | None:
        if self._handle is None or self._exited:
            return 0
        try:
            status = await self._poll_backend(launching=False)
        except Exception as exc:  # the backend could not tell: don't declare the kernel dead
            self._warn_poll_failed(exc, launching=False)
            return None
        self._poll_warning = ""
        if status is not None:
            self._exited = True
        return status

    async def _poll_backend(self, launching: bool) -> int | None:
        """Call the backend's ``poll``; keep what it added to the handle (see hookspecs: the handle grows)."""
        assert self._handle is not None
        status = await self._backend.call(
            "poll", handle=self._handle, options=self.options, launching=launching, log=self.backend_log
        )
        encoded = self._encode_handle(self._handle)
        if encoded != self._handle_json:
            self._handle_json = encoded
            self.log.debug("Kernel %s: gp backend %r updated its handle", self.kernel_id, self.backend)
        return status

    def _encode_handle(self, handle: dict[str, Any]) -> str:
        try:
            return json.dumps(handle, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise BackendError(
                f"gp backend {self.backend!r} put a value that is not JSON-serialisable into kernel "
                f"{self.kernel_id}'s handle: {exc}"
            ) from exc

    def _warn_poll_failed(self, exc: Exception, launching: bool) -> None:
        """Log a failed poll once per distinct reason (a kernel polled every few seconds during an outage
        must not fill the log)."""
        message = str(exc)
        level = logging.DEBUG if message == self._poll_warning else logging.WARNING
        self._poll_warning = message
        self.log.log(
            level,
            "gp backend %r could not poll kernel %s%s (status unknown; %s): %s",
            self.backend,
            self.kernel_id,
            " while it starts" if launching else "",
            "retrying until the launch timeout" if launching else "taken as still running",
            message,
        )

    async def _roll_back(self, error: BaseException) -> None:
        """Undo what the backend created before a handle existed (shielded: it runs even when cancelled)."""
        rollback, self._rollback = self._rollback, None
        if rollback is None or not len(rollback):
            return
        errors = await asyncio.shield(rollback.run())
        if errors:
            error.add_note(
                "Undoing what the backend had created also failed: " + "; ".join(map(repr, errors))
            )

    async def wait(self) -> int | None:
        while True:
            status = await self.poll()
            if status is not None:
                return status
            await asyncio.sleep(min(self.poll_interval, 0.1))

    async def send_signal(self, signum: int) -> None:
        if signum == 0:
            await self.poll()
            return
        if signum == signal.SIGKILL:
            await self.kill()
            return
        if self._comm_address is None:
            raise BackendError(f"Kernel {self.kernel_id} has no communication port to signal")
        host, port = self._comm_address
        try:
            await comm_request(
                host, port, self.connection_info["key"], "signal", signum=signum, timeout=_COMM_TIMEOUT
            )
        except (OSError, TimeoutError, ProtocolError) as exc:
            if await self.poll() is not None:
                return  # the kernel is gone: nothing to signal
            if await self._signal_through_backend(signum, f"{host}:{port}: {exc}"):
                return
            self.log.warning(
                "Kernel %s did not take signal %d on %s:%d (%s)", self.kernel_id, signum, host, port, exc
            )
            if signum == signal.SIGTERM:
                await self.terminate()

    async def _signal_through_backend(self, signum: int, why: str) -> bool:
        """The launcher did not answer: let the backend reach the kernel's process, if it can."""
        if self._handle is None or not self._backend.implements("send_signal"):
            return False
        try:
            delivered = await self._backend.call(
                "send_signal", handle=self._handle, options=self.options, signum=signum, log=self.backend_log
            )
        except Exception as exc:
            self.log.warning(
                "gp backend %r could not signal kernel %s: %s", self.backend, self.kernel_id, exc
            )
            return False
        if delivered:
            self.log.info(
                "Kernel %s: its launcher did not answer signal %d (%s); gp backend %r delivered it",
                self.kernel_id,
                signum,
                why,
                self.backend,
            )
        return bool(delivered)

    async def kill(self, restart: bool = False) -> None:
        await self._remove_resources(force=True, restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        await self._remove_resources(force=False, restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        if self._handle is None and self._rollback is not None:  # pre_launch ran, launch_kernel never did
            await self._roll_back(BackendError("launch abandoned"))
        await self._remove_resources(force=False, restart=restart)
        if self._listener is not None:
            self._listener.unregister(self.kernel_id)
        self._close_tunnel()
        self._handle = None
        self._comm_address = None
        self._report = None

    async def _remove_resources(self, force: bool, restart: bool) -> None:
        if self._handle is None or self._terminated:
            return
        await self._backend.call(
            "terminate",
            handle=self._handle,
            options=self.options,
            restart=restart,
            force=force,
            log=self.backend_log,
        )
        self._terminated = self._exited = True

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        connection_info: dict[str, Any] = dict(self.connection_info)
        for name in ("key", "curve_publickey", "curve_secretkey"):
            if isinstance(connection_info.get(name), bytes):
                connection_info[name] = connection_info[name].decode()
        info.update(
            connection_info=connection_info,  # JSON-serialisable, unlike the base class's bytes key
            backend=self.backend,
            backend_options=self._backend_values,
            handle=self._handle,
            comm_address=list(self._comm_address) if self._comm_address else None,
        )
        if self._tunneled_from is not None:  # an adopting server opens its own tunnel to these
            own = self._tunneled_from
            info["tunneled_from"] = {
                "connection_info": {**own["connection_info"], "key": connection_info.get("key")},
                "comm_address": list(own["comm_address"]) if own["comm_address"] else None,
                "reported_ip": own["reported_ip"],
            }
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        if provisioner_info.get("backend") != self.backend:
            raise InvalidOptionError(
                f"provisioner info is for gp backend {provisioner_info.get('backend')!r}, "
                f"this provisioner runs {self.backend!r}"
            )
        key: Any = self.connection_info.get("key", b"")
        self.connection_info = cast(
            KernelConnectionInfo,
            {**self.connection_info, "key": key.encode() if isinstance(key, str) else key},
        )
        self._handle = provisioner_info.get("handle")
        comm = provisioner_info.get("comm_address")
        self._comm_address = (str(comm[0]), int(comm[1])) if comm else None
        self._exited = self._terminated = False
        own = provisioner_info.get("tunneled_from")
        if own and self.tunneling:
            info = dict(own["connection_info"])
            info["key"] = info["key"].encode() if isinstance(info.get("key"), str) else info.get("key", b"")
            self.connection_info = cast(KernelConnectionInfo, info)
            comm = own.get("comm_address")
            self._comm_address = (str(comm[0]), int(comm[1])) if comm else None
            await self._open_tunnel(str(own.get("reported_ip") or ""))

    # ------------------------------------------------------------------ helpers

    def _authorize(self, env: dict[str, str]) -> str:
        username = env.get("KERNEL_USERNAME") or getpass.getuser()
        kernel = self.kernel_spec.display_name if self.kernel_spec else self.kernel_id
        if username in self.unauthorized_users:
            raise NotAuthorizedError(
                f"User {username!r} is not authorized to start kernel {kernel!r}: the user is in "
                "unauthorized_users (GP_UNAUTHORIZED_USERS). Set KERNEL_USERNAME to an authorized user "
                "(the user is the server's own unless the request or the server's environment sets it; "
                "see 'A server that runs as root' in gp's README)."
            )
        if self.authorized_users and username not in self.authorized_users:
            raise NotAuthorizedError(
                f"User {username!r} is not authorized to start kernel {kernel!r}: only "
                f"{', '.join(sorted(self.authorized_users))} may (authorized_users)."
            )
        return username

    def _request_launch_timeout(self, env: dict[str, str]) -> float:
        requested = env.get("KERNEL_LAUNCH_TIMEOUT")
        if requested is None or requested == os.environ.get("KERNEL_LAUNCH_TIMEOUT"):
            return self.launch_timeout
        try:
            value = float(requested)
        except ValueError:
            value = float("nan")
        if not 0 < value <= self.max_launch_timeout:
            raise InvalidOptionError(
                f"KERNEL_LAUNCH_TIMEOUT={requested!r} is invalid; use a number of seconds between 0 and "
                f"{self.max_launch_timeout:g} (max_launch_timeout)"
            )
        return value

    def _format_cmd(self, listener: ResponseListener, extra_arguments: list[str]) -> list[str]:
        if self.kernel_spec is None or not self.kernel_spec.argv:
            raise InvalidOptionError(f"Kernel {self.kernel_id}: the kernelspec has no argv to run")
        values = {
            "kernel_id": self.kernel_id,
            "response_address": listener.response_address,
            "public_key": listener.public_key,
            "port_range": self.port_range,
            "transport_encryption": "curve" if getattr(self, "_curve_asked", False) else "none",
            "resource_dir": self.kernel_spec.resource_dir,
            "prefix": sys.prefix,
        }
        fill = lambda m: str(values.get(m.group(1), m.group(0)))  # noqa: E731  unknown placeholders stay
        return [_PLACEHOLDER.sub(fill, arg) for arg in self.kernel_spec.argv] + list(extra_arguments)

    def _kernel_env(
        self, env: dict[str, str], username: str, listener: ResponseListener, token: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The kernel's environment, and the part of it the start request set (``request_env``).

        The kernel's environment holds the spec's env, the request's values and the launch data; never the
        whole server environment: only variables the kernelspec declares, ``KERNEL_*`` ones and those the
        request set or changed, minus the secrets the backend declares (``secret_env``). ``request_env`` is
        what the request set: its ``KERNEL_*`` values and any variable whose value is neither the server's
        nor the kernelspec's.
        """
        spec_env = self.kernel_spec.env if self.kernel_spec else {}
        secret = set(self._backend.secret_env)
        kernel_env = {
            name: value
            for name, value in env.items()
            if (name.startswith("KERNEL_") or name in spec_env or os.environ.get(name) != value)
            and name not in secret
        }
        for name, value in kernel_env.items():
            if not is_env_name(name):
                raise InvalidOptionError(
                    f"Environment variable name {name!r} is invalid; names are letters, digits and '_'"
                )
            if "\0" in value:
                raise InvalidOptionError(f"Environment variable {name} contains a NUL character")
        request_env = {
            name: value
            for name, value in kernel_env.items()
            if os.environ.get(name) != value and spec_env.get(name) != value
        }
        kernel_env.update(
            KERNEL_ID=self.kernel_id or "",
            KERNEL_USERNAME=username,
            KERNEL_LANGUAGE=kernel_env.get("KERNEL_LANGUAGE")
            or (self.kernel_spec.language if self.kernel_spec else "")
            or "",
            GP_LAUNCH_TOKEN=token,
            RESPONSE_ADDRESS=listener.response_address,
            PUBLIC_KEY=listener.public_key,
            PORT_RANGE=self.port_range,
        )
        return kernel_env, request_env
