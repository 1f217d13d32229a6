"""The hooks a gp backend implements.

A backend is a module (or object) registered under the entry-point group ``gp_core.backends``; the
entry-point name is the backend name that ``kernel.json`` selects. Core gives every backend its own
pluggy ``PluginManager``, so a hook call reaches exactly the backend the kernel names, never another
installed one.

Every hook is called with keyword arguments drawn from one fixed vocabulary, and an implementation
takes only the ones it needs (pluggy passes just the arguments an implementation names):

``kernel_id``     the kernel's UUID (str)
``options``       the backend's validated options (an instance of the class ``declare_options`` returned,
                  or ``None`` when it declares none)
``env``           the kernel's environment: kernelspec ``env``, the request's ``KERNEL_*`` values and what
                  the launcher needs (``KERNEL_ID``, ``KERNEL_USERNAME``, ``GP_LAUNCH_TOKEN``, ...). It is
                  *not* the server's whole environment; values are untrusted data.
``request_env``   the part of ``env`` the start *request* set: its ``KERNEL_*`` values and any variable whose
                  value is neither the server's nor the kernelspec's. Decide what a request may override
                  from this, never by comparing ``env`` with ``os.environ``.
``resource_dir``  the kernelspec's directory (``str``, or ``None`` without a kernelspec): templates and
                  scripts shipped with the spec live there (e.g. ``scripts/kernel-pod.yaml.j2``)
``cmd``           the kernelspec ``argv`` with gp's placeholders filled: the command to run where the
                  kernel lives (the launcher)
``namespace``     what ``resolve_namespace`` returned
``resources``     what ``render_resources`` returned
``rollback``      the launch's :class:`gp_core.Rollback`: register an undo step for everything created before
                  ``launch`` returns (see "Clean-up" below)
``handle``        what ``launch`` returned: a JSON-serialisable dict identifying what was created. ``poll``
                  may add to it (see "The handle grows" below)
``launching``     ``poll`` only: ``True`` while core waits for the kernel's connection info
``signum``        ``send_signal`` only: a signal number (``signal.SIGINT``, ...)
``restart``       ``terminate`` only: ``True`` when the same kernel id is launched again right after
``force``         ``terminate`` only: ``True`` to kill at once (a kill, or a failed launch)
``app``           ``install_spec`` only: the running installer (its options are attributes)
``kernel_spec``   ``install_spec`` only: the kernelspec dict being installed
``spec_dir``      ``install_spec`` only: the staging directory (:class:`pathlib.Path`) of the spec
``log``           a logger named ``<provisioner's logger>.gp.<backend>`` (e.g. ``ServerApp.gp.docker``): a
                  child of the server's logger, so records reach the server's log handlers and can be
                  filtered or raised to DEBUG by name

Hooks may be plain functions or ``async def``; core awaits what they return. Blocking SDK calls must not
run on the event loop: wrap them in ``asyncio.to_thread`` (or use :meth:`gp_core.Rollback.create_in_thread`
and :class:`gp_core.StatusSource`, which do). Raise :class:`gp_core.BackendError` (or
:class:`gp_core.LaunchError`) with a message fit to show the user (a Jupyter server answers the REST
client with it and the class's ``http_status``, 500 for these); any other exception is re-raised with
a note naming the backend and hook (and jupyter_server answers 500 "Unhandled error").

Clean-up. Everything a backend creates for a kernel is removed through one of two paths:

- before ``launch`` has returned its handle (a refused request in ``render_resources``, an error or a
  cancellation in ``launch``, the launch timeout expiring inside it): the undo steps registered on
  ``rollback``, run by core newest first, shielded from cancellation;
- afterwards: ``terminate``, which therefore must find everything it removes through the handle (put the
  namespace gp created, the host, ... into it).

The handle grows. A backend may learn things after ``launch`` returned (a YARN application id, a pod's
node, a driver pod's name): ``poll`` adds them to the ``handle`` dict it is given (``handle["app_id"] =
...``; never remove what ``launch`` put there). Core keeps the grown handle: ``get_provisioner_info``
returns it, so another server process adopting the kernel sees it.

Transient versus fatal. While launching, only a :class:`gp_core.LaunchError` raised by ``poll`` ends the
launch (fast, with its message); any other exception is a blip: core logs it and polls again until the
launch timeout. Once the kernel runs, a ``poll`` that raises means "status unknown" and the kernel is
taken as alive (an API outage must never make kernels look dead). A ``TimeoutError`` raised inside
``launch`` is reported as the backend's error, not as ``launch_timeout`` expiring.

Status of many kernels. A backend whose status comes from a cluster API shares one listing (and
optionally one watch) between all its kernels through :class:`gp_core.StatusSource`, so API requests per
poll interval do not grow with the number of kernels.

Lifecycle, in the order core calls the hooks::

    declare_options        once, when the backend is loaded
    resolve_namespace      pre_launch   (optional)
    render_resources       pre_launch   (optional; pure: creates nothing)
    launch                 launch_kernel (required)
    poll                   while launching (launching=True) and whenever the kernel is polled (required)
    send_signal            when the launcher's communication port does not answer a signal (optional)
    terminate              kill / terminate / cleanup (required)
    install_spec           by the spec installers (jupyter <backend>-spec install) (optional)

Two hooks go beyond the six the design fixed, each because the protocol cannot work without it:

- ``declare_options``: core must reject an unknown or invalid per-kernel option *before anything is
  created*, and apply the documented precedence (kernel.json > server traitlets config > ``GP_*`` env >
  default) uniformly; only the backend knows which options it has.
- ``send_signal``: signals (interrupts above all) travel to the launcher's communication port. When the
  launcher no longer answers there (its port is unreachable, or its thread is gone) while the kernel still
  runs, only the backend can still reach the kernel's process: over SSH, through the Docker API, ...
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .options import BackendOptions
    from .rollback import Rollback
    from .tunnel import TunnelRoute

PROJECT = "gp"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Handle = dict[str, Any]
Resources = dict[str, Any]

#: Hooks a backend must implement; a backend missing one is refused when it is loaded.
REQUIRED_HOOKS = ("launch", "poll", "terminate")


@hookspec(firstresult=True)
def declare_options() -> type[BackendOptions] | None:
    """Return the backend's options class: a :class:`gp_core.BackendOptions` subclass.

    Called once when the backend is loaded. Its ``config=True`` traits are the options ``kernel.json``
    may set next to ``"backend"``; server config sets them as ``c.<ClassName>.<option>``; a trait's
    ``@default`` may read a ``GP_*`` environment variable (see :func:`gp_core.env_default`). Core
    rejects any other key, and invalid values, with :class:`gp_core.InvalidOptionError`. Core runs
    every option's effective value (a ``GP_*`` default too) through the trait's validators, so a
    ``@validate`` method raising ``traitlets.TraitError`` with a message saying what is allowed is
    enough. Class attribute ``secret_env`` names server variables that must never reach a kernel. No
    option may be named like a core option (``gp_core.options.CORE_OPTION_NAMES``: kernel.json holds both
    in one namespace): such a backend is refused when loaded. Tag an option that restricts (a deny list,
    an allow list, a cap) with ``.tag(policy="deny" | "allow" | "cap")``: kernel.json may then only
    tighten the server's value (see :func:`gp_core.options.apply_policy`).

    :returns: The options class, or ``None`` when the backend has no options.
    :raises gp_core.BackendError: When the backend cannot work in this server (say why). Anything
        raised fails loading the backend; core reports it as a ``BackendError`` naming the backend.
    """


@hookspec(firstresult=True)
def resolve_namespace(
    kernel_id: str,
    options: BackendOptions | None,
    env: dict[str, str],
    request_env: dict[str, str],
    resource_dir: str | None,
    rollback: Rollback,
    log: logging.Logger,
) -> str | Awaitable[str | None] | None:
    """Decide where the kernel will live: a Kubernetes namespace, an SSH host, a YARN queue.

    Called from ``pre_launch`` after authorization, on every start and restart. What it creates (a
    namespace, a role binding, a placement counted against a host) gets an undo step on ``rollback``,
    and the handle ``launch`` returns must let ``terminate`` remove it.

    :returns: A backend-defined placement string passed on as ``namespace``, or ``None``.
    :raises gp_core.BackendError: When no placement is possible (e.g. a refused host override).
    """


@hookspec(firstresult=True)
def render_resources(
    kernel_id: str,
    cmd: list[str],
    env: dict[str, str],
    request_env: dict[str, str],
    resource_dir: str | None,
    options: BackendOptions | None,
    namespace: str | None,
    log: logging.Logger,
) -> Resources | Awaitable[Resources]:
    """Describe what ``launch`` will create (a container spec, a pod manifest, a remote command line).

    Called from ``pre_launch``. Must be pure: it creates nothing, so a refused request leaves nothing
    behind. ``KERNEL_*`` values in ``env`` are untrusted: render them as data, never as template,
    manifest or shell syntax.

    :returns: A JSON-serialisable dict; core's default, when no backend implements this hook, is
        ``{"cmd": cmd, "env": env}``.
    :raises gp_core.BackendError: On an invalid request (e.g. a prohibited ``KERNEL_UID``).
    """


@hookspec(firstresult=True)
def launch(
    kernel_id: str,
    resources: Resources,
    options: BackendOptions | None,
    namespace: str | None,
    rollback: Rollback,
    resource_dir: str | None,
    log: logging.Logger,
) -> Handle | Awaitable[Handle]:
    """Create the kernel's resources and return at once, without waiting for the kernel to be ready.

    Called from ``launch_kernel``, bounded by the launch timeout. Create through
    ``rollback.create_in_thread`` (or register undo steps with ``rollback.add``): if this hook raises or
    is cancelled, core undoes them. Core then waits for the launcher's connection info while calling
    ``poll(launching=True)`` every poll interval, and calls ``terminate(force=True)`` when the launch
    fails or times out.

    :returns: A JSON-serialisable handle identifying what was created (it is persisted by
        ``get_provisioner_info`` and handed to ``poll``/``terminate``, possibly in another server
        process). An optional ``"ip"`` key tells core which address reaches the kernel.
    :raises gp_core.BackendError: When nothing could be created; the backend cleans up what it made.
    """


@hookspec(firstresult=True)
def poll(
    handle: Handle, options: BackendOptions | None, launching: bool, log: logging.Logger
) -> int | Awaitable[int | None] | None:
    """Report whether the kernel still runs.

    Called while launching (``launching=True``) once per poll interval, and afterwards whenever
    jupyter_client polls the kernel (the restarter does so every few seconds, for every kernel): use
    a :class:`gp_core.StatusSource` rather than one API call per kernel. May add what it learnt to
    ``handle`` (core keeps it).

    :returns: ``None`` while the kernel runs (or is still starting); otherwise its exit status
        (``0`` when unknown or when its resources are gone).
    :raises gp_core.LaunchError: With ``launching=True``, when the kernel has failed: say why (exit
        code, state, tail of the log). It ends the launch at once.
    :raises Exception: Anything else means "cannot tell now": while launching core retries until the
        launch timeout, afterwards the kernel is taken as still running.
    """


@hookspec(firstresult=True)
def send_signal(
    handle: Handle, options: BackendOptions | None, signum: int, log: logging.Logger
) -> bool | Awaitable[bool] | None:
    """Deliver ``signum`` to the kernel's process (group) without the launcher's communication port.

    Called by core's ``send_signal`` only when the launcher did not answer a signal request and ``poll``
    still reports the kernel running. Optional: without it such a signal is logged as undelivered (and a
    ``SIGTERM`` becomes ``terminate``).

    :returns: ``True`` when the signal was delivered; ``False``/``None`` when the backend cannot reach
        the kernel this way (e.g. a swarm task on another node).
    :raises gp_core.BackendError: When the attempt failed; core logs it.
    """


@hookspec(firstresult=True)
def tunnel_route(
    handle: Handle, options: BackendOptions | None, log: logging.Logger
) -> TunnelRoute | Awaitable[TunnelRoute | None] | None:
    """Opt into SSH tunnelling (core's ``tunneling`` option, env ``GP_ENABLE_TUNNELING``): how to reach
    the kernel's ports through SSH, as a :class:`gp_core.TunnelRoute`.

    Called once the kernel reported its connection info, when tunnelling is on. Core then forwards the
    kernel's five ZMQ ports and its communication port from ``127.0.0.1`` through the route and gives
    Jupyter the local ends. Without this hook, tunnelling on is an error for this backend.

    :returns: The route, or ``None`` when this kernel cannot be tunnelled (an error naming the backend).
    """


@hookspec(firstresult=True)
def terminate(
    handle: Handle, options: BackendOptions | None, restart: bool, force: bool, log: logging.Logger
) -> Awaitable[None] | None:
    """Stop the kernel and remove everything ``launch`` created.

    Called on ``terminate`` (``force=False``), ``kill`` and failed launches (``force=True``), and from
    ``cleanup`` so nothing is left behind. Must be idempotent: resources already gone are success.
    ``restart=True`` means the same kernel id is launched again right after.

    :raises gp_core.BackendError: When the resources could not be removed (say what is left behind).
        It reaches the caller of terminate/kill/shutdown; after a failed launch core logs it and
        raises the launch's error instead, with a note.
    """


@hookspec(firstresult=True)
def install_spec(
    app: Any, kernel_spec: dict[str, Any], spec_dir: Path, log: logging.Logger
) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
    """Adjust a kernelspec being installed by ``jupyter <backend>-spec install``.

    Called by :class:`gp_core.InstallSpecApp` (synchronously: an ``async def`` implementation is run
    to completion on its own event loop) after core has written the common parts of
    ``kernel_spec`` (argv running the launcher, ``metadata.kernel_provisioner`` selecting this
    backend, the common options) into the staging directory ``spec_dir``. ``app`` is the running
    installer, so a backend's own command-line options are its attributes.

    :returns: The kernelspec dict to write (or ``None`` after changing ``kernel_spec`` in place).
        Its ``kernel_provisioner`` config is then validated like a launch's.
    :raises gp_core.BackendError: (or :class:`gp_core.InvalidOptionError`) When the installer's
        options cannot make a valid spec; the installer prints the message and exits 1, writing nothing.
    """
