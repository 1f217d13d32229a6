"""Undoing what a backend created for a launch that failed before core held its handle.

Core hands one :class:`Rollback` per launch to ``resolve_namespace``, ``render_resources`` and ``launch``
(hook argument ``rollback``). A backend registers an undo step for everything it creates; if the launch
fails before ``launch`` returned a handle (an error, a refused request, a cancellation, the launch
timeout), core runs the steps, newest first. Once ``launch`` returned, the steps are dropped: from then on
``terminate`` owns the clean-up, so the handle must describe everything the kernel owns.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("gp_core.rollback")


@dataclass
class _Step:
    what: str
    undo: Callable[[], Any]
    #: A creation still running in a worker thread: undo its result once it is done.
    creating: asyncio.Future[Any] | None = None
    undo_result: Callable[[Any], Any] | None = None


class Rollback:
    """The undo steps of one launch (see the module docstring)."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._steps: list[_Step] = []
        self._log = log or globals()["log"]

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, undo: Callable[[], object | Awaitable[object]], what: str) -> None:
        """Register ``undo`` for something just created (``what`` names it in logs).

        ``undo`` may be ``async``; a plain function runs in a worker thread (SDK calls block). It must
        treat "already gone" as success.
        """
        self._steps.append(_Step(what, undo))

    async def create_in_thread(
        self, create: Callable[[], T], undo: Callable[[T], object | Awaitable[object]], what: str
    ) -> T:
        """Run the blocking ``create()`` in a worker thread and register ``undo(result)``, cancel-safe.

        If the launch is cancelled while the thread runs, the thread goes on; the rollback then waits for
        it and undoes what it created. If ``create`` raises, nothing is registered (it cleans up itself).
        """
        future: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(create))
        step = _Step(what, lambda: None, creating=future, undo_result=undo)
        self._steps.append(step)
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            raise  # the step stays: run() waits for the thread and undoes its result
        except BaseException:
            self._steps.remove(step)
            raise
        step.creating, step.undo_result = None, None
        step.undo = functools.partial(undo, result)
        return result

    def clear(self) -> None:
        """Forget every step: the launch succeeded and ``terminate`` owns the clean-up now."""
        self._steps.clear()

    async def run(self) -> list[BaseException]:
        """Undo every step, newest first; return the errors (each is logged, none stops the others)."""
        errors: list[BaseException] = []
        steps, self._steps = self._steps, []
        for step in reversed(steps):
            try:
                if step.creating is not None:
                    try:
                        result = await step.creating
                    except BaseException:
                        continue  # the creation failed: it left nothing (or removed it itself)
                    assert step.undo_result is not None
                    await _call(functools.partial(step.undo_result, result))
                else:
                    await _call(step.undo)
                self._log.debug("Rolled back %s", step.what)
            except Exception as exc:
                self._log.error("Could not roll back %s: %s", step.what, exc, exc_info=exc)
                errors.append(exc)
        return errors


async def _call(undo: Callable[[], Any]) -> None:
    target = undo.func if isinstance(undo, functools.partial) else undo
    if inspect.iscoroutinefunction(target):
        await undo()
        return
    result = await asyncio.to_thread(undo)
    if inspect.isawaitable(result):
        await result
