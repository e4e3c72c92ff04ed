"""One step of a template's code, run so that the server stays in charge of it.

A template is user code in the server's event loop, so two faults in it would otherwise
stall the server: a step that swallows :class:`asyncio.CancelledError` (it can then outlive
any timeout, ``tasks.cancel`` and shutdown), and a step that blocks the loop (``time.sleep``,
a synchronous HTTP call), which stalls every session at once.

:func:`run_step` runs each step in place, in the calling task, so a step that never waits
costs no task and no turn of the event loop. On a timeout, or when the caller is cancelled,
the step is cancelled and gets :data:`CANCEL_GRACE` seconds to end; one that does not is
*abandoned*: logged as an error, moved to a task of its own that is kept in :data:`ABANDONED`
until it returns by itself, and no longer waited for, so the reply still goes out and
shutdown still ends. hud cancels a task that may be running a step through
:func:`cancel_caller`, so that the step can tell those cancellations from its own. While a
step runs, each stretch it holds the loop longer than :data:`BLOCKING_THRESHOLD` is logged
with the template's name: blocking work belongs in ``await asyncio.to_thread(func, ...)``,
which keeps every other session served meanwhile.
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
import weakref
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

# How many times each task was cancelled through cancel_caller: the cancellations that a step
# running in it takes for its caller's. Weak: a task leaves once it is collected.
_requested: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()


def cancel_caller(task: asyncio.Task[Any], reason: str | None = None) -> bool:
    """``task.cancel(reason)``, as hud's own cancellers do it (a client's ``tasks.cancel``, a
    closing session or server, a step's deadline); returns what ``task.cancel`` returns.

    A template step running in ``task`` (:func:`run_step`) takes only such a cancellation for
    its caller's. Any other cancellation of the task reaches the step all the same, but is the
    step's own business: if the step swallows it, it is not held against the step. The step's
    own task group cancels its task that way when a child fails, and on Python 3.11 and 3.12
    it leaves the task's ``cancelling()`` count raised after handling it (3.13 takes it back),
    so that count alone cannot say whose cancellation is pending."""
    if not task.cancel(reason):
        return False  # done already: nothing is pending
    _requested[task] = _requested.get(task, 0) + 1
    return True


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


def _stretch(label: str, call: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """``call(*args)``, a coroutine's ``send`` or ``throw``: one stretch of template code,
    recorded for the watchdog and timed. ``(False, what it awaits)``, or ``(True, what it
    returned)``: the ``StopIteration`` is caught where it arrives, since each frame it went
    up through would give it a traceback entry (and the frame an object)."""
    global _running
    outer = _running
    began = time.perf_counter()
    _running = (next(_ids), began, label)
    try:
        return False, call(*args)
    except StopIteration as returned:
        return True, returned.value
    finally:
        _running = outer
        held = time.perf_counter() - began
        if held > BLOCKING_THRESHOLD:  # (inline: this runs for every stretch of every step)
            _report(label, held)


_STRETCH_CODE = _stretch.__code__


async def run_step(
    step: Awaitable[Any],
    *,
    label: str,
    timeout: float | None,
    enter: Callable[[], contextlib.AbstractContextManager[Any]],
    on_abandon: Callable[[], None],
) -> Any:
    """Await ``step`` in the calling task, in a copy of its context, with ``enter()`` around
    it, and return its result.

    Raises what the step raises, :class:`TimeoutError` after ``timeout`` seconds, and
    :class:`asyncio.CancelledError` when the caller is cancelled (:func:`cancel_caller`); in
    the last two cases only once the step has ended or been abandoned (then ``on_abandon()``
    is called first).
    ``label`` names the step in logs, e.g. ``"template 'fix' during grade"``. Must be called
    from a task: the step runs as that task (``asyncio.current_task()``) until it ends or is
    abandoned. (A step that never waits does not need the task, and does not look it up.)"""
    coro = _watched(step, enter)
    context = contextvars.copy_context()
    returned, first = _stretch(label, context.run, coro.send, None)
    if returned:
        return first  # it never waited: nothing to arm, no task asked for
    task = asyncio.current_task()
    if task is None:
        coro.close()
        raise RuntimeError("run_step must be called from a task")
    return await _Step(coro, context, first, label, timeout, task, on_abandon)


class _Step:
    """The rest of a step whose first stretch waited (:func:`run_step` ran that stretch):
    each stretch of its coroutine runs in the calling task, in the step's own copy of the
    context, timed by :func:`_stretch`.

    The deadline and the grace are timers that cancel the calling task; the cancellation is
    passed on to the step. A step that swallows a cancellation of hud's (see
    :meth:`_cancelled_by_hud`: it waits again while one is pending) has :data:`CANCEL_GRACE`
    seconds to end; then it is handed to a task of its own, abandoned there, and the caller
    goes on.
    """

    __slots__ = ("asked", "baseline", "context", "coro", "deadline", "first", "label",
                 "on_abandon", "owed", "state", "task", "thrown", "timeout", "timer")

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context,
                 first: Any, label: str, timeout: float | None, task: asyncio.Task[Any],
                 on_abandon: Callable[[], None]) -> None:
        self.coro, self.context, self.first = coro, context, first  # what it first awaits
        self.label, self.timeout = label, timeout
        self.task, self.on_abandon = task, on_abandon
        self.timer: asyncio.TimerHandle | None = None
        self.baseline = 0  # the task's cancelling() count when the step began to wait
        self.asked = 0  # its cancel_caller() count then
        self.deadline = False  # the timeout ran out (then the step ends in TimeoutError)
        self.state = "running"  # then "grace" (a cancellation swallowed), then "given up"
        self.owed = 0  # cancel() calls of ours that the task must take back (uncancel)
        self.thrown = False  # a cancellation was passed on to the step

    def __await__(self) -> Generator[Any, Any, Any]:
        yielded, self.first = self.first, None
        self.baseline = self.task.cancelling()
        self.asked = _requested.get(self.task, 0)
        if self.timeout is not None:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._expire)
        try:
            while True:
                value: Any = None
                error: BaseException | None = None
                try:
                    value = yield yielded
                except BaseException as exc:  # thrown in by the task: a cancellation
                    error = exc
                if self.state == "given up":
                    return self._abandon(value, error)
                try:
                    if error is None:
                        returned, yielded = _stretch(self.label, self.context.run,
                                                     self.coro.send, value)
                    else:
                        self.thrown = True
                        returned, yielded = _stretch(self.label, self.context.run,
                                                     self.coro.throw, error)
                except BaseException:
                    self._ended(None)
                    raise
                if returned:
                    return self._ended(yielded)
                if self.state == "running" and self._cancelled_by_hud(counting_ours=True):
                    self._begin_grace()  # it waits again with a cancellation unanswered
        finally:
            if self.timer is not None:
                self.timer.cancel()

    def _cancelled_by_hud(self, *, counting_ours: bool) -> bool:
        """Whether hud cancelled the task since the step began to wait (the caller, through
        :func:`cancel_caller`; with ``counting_ours``, this step's own timers too) and that
        cancellation is still pending: the task's ``cancelling()`` count is above where it
        began. A cancellation that hud did not ask for is the step's own (see
        :func:`cancel_caller`), even while the count stays raised."""
        ours = 0 if counting_ours else self.owed
        return (_requested.get(self.task, 0) - self.asked > ours
                and self.task.cancelling() > self.baseline)

    def _cancel(self) -> None:
        self.timer = None
        self.owed += 1
        cancel_caller(self.task)

    def _expire(self) -> None:
        self.deadline = True
        self._cancel()

    def _begin_grace(self) -> None:
        self.state = "grace"
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(CANCEL_GRACE, self._give_up)

    def _give_up(self) -> None:
        self.state = "given up"
        self._cancel()  # wakes the task; the step is abandoned then (see _abandon)

    def _ended(self, value: Any) -> Any:
        """The step ended with ``value`` (or raised, then value is None and the caller
        re-raises). After our deadline, that is a TimeoutError; after a cancellation of the
        caller that the step swallowed, a CancelledError all the same."""
        for _ in range(self.owed):
            self.task.uncancel()
        if self.deadline or (self.thrown and self._cancelled_by_hud(counting_ours=False)):
            self._raise_cancelled_or_timeout()
        return value

    def _abandon(self, value: Any, error: BaseException | None) -> Any:
        rest = asyncio.get_running_loop().create_task(
            _drive(_Rest(self.coro, self.label, value, error)), context=self.context)
        log.error("%s ignored its cancellation for %g s: abandoned (it runs on until it "
                  "returns); template code must let CancelledError propagate",
                  self.label, CANCEL_GRACE)
        ABANDONED.add(rest)
        rest.add_done_callback(_forget)
        self.on_abandon()
        for _ in range(self.owed):
            self.task.uncancel()
        self._raise_cancelled_or_timeout()

    def _raise_cancelled_or_timeout(self) -> None:
        if self.deadline and not self._cancelled_by_hud(counting_ours=False):
            raise TimeoutError
        raise asyncio.CancelledError


class _Rest:
    """The rest of an abandoned step: it goes on from where it stopped (with ``value`` or
    ``error``, what it was woken with) in a task of its own, each stretch still timed."""

    __slots__ = ("coro", "error", "label", "value")

    def __init__(self, coro: Coroutine[Any, Any, Any], label: str, value: Any,
                 error: BaseException | None) -> None:
        self.coro, self.label, self.value, self.error = coro, label, value, error

    def __await__(self) -> Generator[Any, Any, Any]:
        value, error = self.value, self.error
        while True:
            if error is None:
                returned, yielded = _stretch(self.label, self.coro.send, value)
            else:
                returned, yielded = _stretch(self.label, self.coro.throw, error)
            if returned:
                return yielded
            try:
                value, error = (yield yielded), None
            except BaseException as exc:
                value, error = None, exc


async def _drive(rest: _Rest) -> Any:
    return await rest


def _forget(task: asyncio.Task[Any]) -> None:
    ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the step was given up, its outcome is moot


async def _watched(
    step: Awaitable[Any], enter: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Any:
    with enter():
        return await step


def _report(label: str, held: float) -> None:
    log.warning("%s blocked the event loop for %.2f s, stalling every session: run "
                "blocking calls with `await asyncio.to_thread(func, ...)`", label, held)
