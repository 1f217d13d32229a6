"""Every kernel pod's status from one LIST + WATCH per cluster (and namespace scope), through
:class:`gp_core.StatusSource`: API requests per poll interval do not grow with the number of kernels."""

from __future__ import annotations

import threading
import time
from functools import partial

from gp_core import StatusSource, WatchFeed

from . import _kube
from ._config import ClusterRef
from ._options import K8sOptions

#: How long one WATCH request lasts before the server ends it (the source then lists and watches again).
WATCH_SECONDS = 55

_sources: dict[tuple[ClusterRef, str], StatusSource[_kube.PodStatus]] = {}
_lock = threading.Lock()


def watch_scope(options: K8sOptions) -> str:
    """The namespace to list and watch, or ``""`` for all namespaces (automatic and bring-your-own
    namespaces live anywhere, so their server needs cluster-wide list/watch on pods)."""
    if options.shared_namespace and not options.allow_kernel_namespace:
        return options.namespace
    return ""


def _fetch(ref: ClusterRef, scope: str) -> dict[str, _kube.PodStatus]:
    return _kube.list_kernel_pods(ref, scope or None)[0]


def _watch(ref: ClusterRef, scope: str, feed: WatchFeed[_kube.PodStatus]) -> None:
    started = time.monotonic()  # before the LIST: what changes after it comes through the WATCH
    entries, version = _kube.list_kernel_pods(ref, scope or None)
    feed.synced(entries, started)

    def on_event(kind: str, key: str, status: _kube.PodStatus | None) -> None:
        if status is None:
            feed.delete(key)
        else:
            feed.put(key, status)

    # One WATCH after another from the last resourceVersion, without listing again or a gap in between;
    # the source's stop aborts the one in progress (on_stop), so this returns promptly when asked.
    while not feed.stopping.is_set():
        try:
            version = _kube.watch_kernel_pods(
                ref,
                scope or None,
                version,
                on_event,
                lambda response: feed.on_stop(partial(_kube.abort_response, response)),
                WATCH_SECONDS,
            )
        except _kube.WatchExpired:
            return  # too old a resourceVersion: the next call lists again


def source_for(options: K8sOptions) -> StatusSource[_kube.PodStatus]:
    ref = ClusterRef(options.kubeconfig, options.context)
    scope = watch_scope(options)
    key = (ref, scope)
    with _lock:
        source = _sources.get(key)
        if source is None:
            source = _sources[key] = StatusSource(
                f"kubernetes pods ({scope or 'all namespaces'})",
                lambda: _fetch(ref, scope),
                watch=lambda feed: _watch(ref, scope, feed),
                max_age=0.45,
            )
        return source


async def close_sources() -> None:
    """Stop every watch (tests)."""
    with _lock:
        sources = list(_sources.values())
        _sources.clear()
    for source in sources:
        await source.close()
