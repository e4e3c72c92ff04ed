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
from asyncio import base_futures, futures, tasks
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
        """3.11: asyncio's pure-Python Task, its first step run in ``__init__``. A first
        step that returns (the common case: a call answered without waiting) is finished
        here with what ``Future.set_result`` does to a future nobody waits on yet; any
        other is handed to asyncio's own step, which takes it from there (:class:`_Replay`)."""

        def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop,
                     name: str | None) -> None:
            if loop.get_debug():  # the future's source traceback
                futures._PyFuture.__init__(self, loop=loop)  # type: ignore[attr-defined]
            else:  # what Future.__init__ sets; the rest are class defaults
                self._loop = loop
                self._callbacks: list[Any] = []
            self._name = name  # None: numbered when asked (see get_name)
            self._number = next(_names)
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro: Any = coro  # a _Replay for a moment (see below)
            self._context = context = contextvars.copy_context()
            outer = tasks.current_task(loop)
            if outer is not None:
                _leave_task(loop, outer)
            try:
                replay = self._first_step(coro, context)
                if replay is not None:  # the rest as asyncio's step would have it
                    self._coro = replay
                    try:
                        context.run(self._Task__step)
                    finally:
                        self._coro = coro
            finally:
                if outer is not None:
                    _enter_task(loop, outer)
            if not self.done():
                _register_task(self)

        def _first_step(self, coro: Coroutine[Any, Any, Any],
                        context: contextvars.Context) -> _Replay | None:
            """Run the first stretch as this task; None when it returned and the task is
            done, else its outcome for asyncio's step."""
            _enter_task(self._loop, self)
            try:
                return _Replay(self, context.run(coro.send, None), None)
            except StopIteration as stop:
                if not self._must_cancel:  # it returned: done, nothing to call back
                    self._state, self._result = base_futures._FINISHED, stop.value
                    return None
                return _Replay(self, None, stop)
            except BaseException as exc:
                return _Replay(self, None, exc)
            finally:
                _leave_task(self._loop, self)

        def get_name(self) -> str:
            if self._name is None:  # formatted once asked: most tasks never are
                self._name = f"hud-eager-{self._number}"
            return str(self._name)

        def __del__(self) -> None:
            # both finalizers (the task's and the future's) only when either has to speak
            if ((self._state == base_futures._PENDING and self._log_destroy_pending)
                    or self._Future__log_traceback):
                super().__del__()

    class _Replay:
        """The outcome of a first step already run, for asyncio's step to take as if it ran
        it: ``send`` returns what the coroutine awaited, or raises what it raised. A
        cancellation the task asked of itself meanwhile is held until then, as it would
        have come during the step (before it, the step would throw it in)."""

        __slots__ = ("error", "must_cancel", "task", "value")

        def __init__(self, task: _EagerTask, value: Any, error: BaseException | None) -> None:
            self.task, self.value, self.error = task, value, error
            self.must_cancel, task._must_cancel = task._must_cancel, False

        def send(self, _: None) -> Any:
            self.task._must_cancel = self.must_cancel
            if self.error is not None:
                raise self.error
            return self.value
