"""Tasks that start eagerly: the coroutine's first stretch runs at once, in the caller's
turn of the event loop, as the task (``asyncio.current_task()`` is the task, so
``asyncio.timeout`` and task groups work in it). A coroutine that never waits ends there: no
turn of the loop is spent on it, and no task is scheduled at all. One that waits goes on as an
ordinary task from where it stopped.

Python 3.12 has this as ``asyncio.Task(..., eager_start=True)``. On 3.11 a subclass of
asyncio's own pure-Python ``Task`` does what 3.12's ``__init__`` does: it runs the first step
in place of scheduling it. Only its first step differs; the rest is asyncio's code.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import futures, tasks
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T],
          name: str | None = None) -> asyncio.Task[T]:
    """A task running ``coro``, its first stretch already run (see the module docstring).
    The task may be done on return. Works from inside another task too: that task is set
    aside while the new one runs its first stretch, as on 3.12."""
    if _NATIVE:
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg]
    return _EagerTask(coro, loop, name)


_NATIVE = sys.version_info >= (3, 12)

if not _NATIVE:
    _enter_task = tasks._enter_task
    _leave_task = tasks._leave_task
    _register_task = tasks._register_task
    _names = iter(range(1, sys.maxsize))

    class _EagerTask(tasks._PyTask):  # type: ignore[name-defined,misc]
        """3.11: asyncio's pure-Python Task, its first step run in ``__init__``."""

        def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop,
                     name: str | None) -> None:
            futures._PyFuture.__init__(self, loop=loop)  # type: ignore[attr-defined]
            self._name = f"hud-eager-{next(_names)}" if name is None else name
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro = coro
            self._context = contextvars.copy_context()
            outer = tasks.current_task(loop)
            if outer is not None:
                _leave_task(loop, outer)
            try:
                self._context.run(self._Task__step)  # what __init__ would have scheduled
            finally:
                if outer is not None:
                    _enter_task(loop, outer)
            if not self.done():
                _register_task(self)
