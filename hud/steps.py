"""One step of a template's code, run so that the server stays in charge of it.

A template is user code in the server's event loop, so two faults in it would otherwise
stall the server: a step that swallows :class:`asyncio.CancelledError` (it can then outlive
any timeout, ``tasks.cancel`` and shutdown), and a step that blocks the loop (``time.sleep``,
a synchronous HTTP call), which stalls every session at once.

:func:`run_step` runs each step in a task of its own and waits for it. On a timeout, or when
the caller is cancelled, the step is cancelled and gets :data:`CANCEL_GRACE` seconds to end;
one that does not is *abandoned*: logged as an error, kept in :data:`ABANDONED` until it
returns by itself, and no longer waited for, so the reply still goes out and shutdown still
ends. While a step runs, each stretch it holds the loop longer than
:data:`BLOCKING_THRESHOLD` is logged with the template's name: blocking work belongs in
``await asyncio.to_thread(func, ...)``, which keeps every other session served meanwhile.
Where a watchdog runs (:mod:`hud.watchdog`, ``hud serve``), a stretch that holds the loop
past its limit is interrupted: :class:`~hud.errors.TemplateBlocked` is raised in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from asyncio.tasks import _enter_task, _leave_task  # see _start_eagerly
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import FrameType
from typing import Any

from .errors import TemplateBlocked

log = logging.getLogger(__name__)

CANCEL_GRACE = 5.0
"""Seconds a cancelled step has to end before it is abandoned."""
BLOCKING_THRESHOLD = 0.25
"""Seconds a step may hold the event loop in one go before it is reported."""
ABANDONED: set[asyncio.Task[Any]] = set()
"""Steps that ignored their cancellation and still run; each leaves once it returns."""

# The stretch of template code running now, if any: (id, start, label). Read by the
# watchdog thread (hud.watchdog), which asks for it to be interrupted when it runs too long.
_running: tuple[int, float, str] | None = None
_interrupt: int | None = None  # the id of the stretch the watchdog asked to interrupt
_ids = itertools.count(1)


def current_stretch() -> tuple[int, float, str] | None:
    """The stretch of template code holding the event loop now: (id, perf_counter start,
    label), or None. Safe to read from another thread."""
    return _running


def request_interrupt(stretch_id: int) -> None:
    """Ask for stretch ``stretch_id`` to be interrupted by the next :func:`interrupt_here`."""
    global _interrupt
    _interrupt = stretch_id


def interrupt_here(frame: FrameType | None) -> None:
    """Called from a signal handler with the frame it interrupted: raise
    :class:`~hud.errors.TemplateBlocked` there when that frame is template code inside the
    stretch the watchdog asked about (never in hud's own code around it)."""
    global _interrupt
    running, target = _running, _interrupt
    if running is None or target != running[0] or frame is None:
        return
    if frame.f_code is _STRETCH_CODE:
        return  # in hud's bookkeeping around the step: not the template's code
    outer: FrameType | None = frame
    while outer is not None and outer.f_code is not _STRETCH_CODE:
        outer = outer.f_back
    if outer is None:
        return
    _interrupt = None
    held = time.perf_counter() - running[1]
    raise TemplateBlocked(
        f"{running[2]} held the event loop for {held:.1f} s (every session waited): it was "
        "interrupted; run blocking calls with `await asyncio.to_thread(func, ...)`")


def _stretch(label: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``: one stretch of template code, recorded for the watchdog and timed."""
    global _running
    outer = _running
    began = time.perf_counter()
    _running = (next(_ids), began, label)
    try:
        return call(*args)
    finally:
        _running = outer
        _check(began, label)


_STRETCH_CODE = _stretch.__code__


async def run_step(
    step: Awaitable[Any],
    *,
    label: str,
    timeout: float | None,
    enter: Callable[[], contextlib.AbstractContextManager[Any]],
    on_abandon: Callable[[], None],
) -> Any:
    """Await ``step`` in its own task with ``enter()`` around it and return its result.

    Raises what the step raises, :class:`TimeoutError` after ``timeout`` seconds, and
    :class:`asyncio.CancelledError` when the caller is cancelled; in the last two cases only
    once the step has ended or been abandoned (then ``on_abandon()`` is called first).
    ``label`` names the step in logs, e.g. ``"template 'fix' during grade"``."""
    task, finished = _start_eagerly(_watched(step, enter), label)
    if finished is not None:  # the step never waited: it is done already
        return finished.result()
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        await _stop(task, label, on_abandon)
        raise
    if not done:
        await _stop(task, label, on_abandon)
        raise TimeoutError
    return task.result()


def _start_eagerly(coro: Coroutine[Any, Any, Any], label: str
                   ) -> tuple[asyncio.Task[Any], asyncio.Future[Any] | None]:
    """A task for ``coro`` whose first stretch runs here and now, as that task and in its
    own copy of the context (what Python 3.12's eager tasks do, done by hand for 3.11).

    Most steps never wait (a prompt, a grade computed in place); for them the stretch is
    the whole step, and the second item holds its outcome: the task then only returns at
    its first turn. A step that suspends goes on in the task, from where it stopped, with
    ``asyncio.current_task()`` and every context variable the same as in its first stretch.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    resumed = _Resumed(coro, label)
    task = loop.create_task(_drive(resumed), context=context)
    caller = asyncio.current_task(loop)
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    outcome: asyncio.Future[Any] | None = None
    try:
        resumed.first = _stretch(label, context.run, coro.send, None)
    except StopIteration as returned:
        outcome = loop.create_future()
        outcome.set_result(returned.value)
    except BaseException as exc:  # the step's own error, raised to the caller
        outcome = loop.create_future()
        outcome.set_exception(exc)
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    resumed.finished = outcome is not None
    return task, outcome


class _Resumed:
    """The rest of a coroutine whose first stretch ran elsewhere (see _start_eagerly),
    timing each stretch it runs between two suspensions."""

    __slots__ = ("coro", "finished", "first", "label")

    def __init__(self, coro: Coroutine[Any, Any, Any], label: str) -> None:
        self.coro = coro
        self.label = label
        self.first: Any = None
        self.finished = False

    def __await__(self) -> Generator[Any, Any, Any]:
        if self.finished:
            return None
        value: Any = None
        error: BaseException | None = None
        try:  # what the first stretch suspended on, now awaited by the task
            value = yield self.first
        except BaseException as exc:  # thrown in by the task (cancellation): pass it on
            error = exc
        while True:
            try:
                if error is None:
                    yielded = _stretch(self.label, self.coro.send, value)
                else:
                    yielded = _stretch(self.label, self.coro.throw, error)
            except StopIteration as returned:
                return returned.value
            try:
                value, error = (yield yielded), None
            except BaseException as exc:
                value, error = None, exc


async def _drive(resumed: _Resumed) -> Any:
    return await resumed


async def _stop(task: asyncio.Task[Any], label: str, on_abandon: Callable[[], None]) -> None:
    task.cancel()
    try:
        await asyncio.wait((task,), timeout=CANCEL_GRACE)
    finally:
        if not task.done():
            log.error("%s ignored its cancellation for %g s: abandoned (it runs on until it "
                      "returns); template code must let CancelledError propagate",
                      label, CANCEL_GRACE)
            ABANDONED.add(task)
            task.add_done_callback(ABANDONED.discard)
            on_abandon()
        elif not task.cancelled():
            task.exception()  # retrieved: the step was given up, its outcome is moot


async def _watched(
    step: Awaitable[Any], enter: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Any:
    with enter():
        return await step


def _check(began: float, label: str) -> None:
    held = time.perf_counter() - began
    if held > BLOCKING_THRESHOLD:
        log.warning("%s blocked the event loop for %.2f s, stalling every session: run "
                    "blocking calls with `await asyncio.to_thread(func, ...)`", label, held)
