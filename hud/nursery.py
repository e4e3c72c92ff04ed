"""A task group for objects that live from ``start()`` to ``aclose()``.

``asyncio.TaskGroup`` must be entered and left by one task in one ``async with`` block. A
server, a tunnel forwarder or a capability daemon lives longer than any such block, and is
often started by one task and closed by another. :class:`Nursery` gives them the same
guarantees: every task it starts belongs to one ``TaskGroup``, held open by one root task
that the nursery owns (or, from :meth:`Nursery.spawn_quiet`, to the nursery alone, without
the group's done callbacks); :meth:`Nursery.aclose` cancels what is left and returns only
when every task has ended. Nothing it starts is fire-and-forget.

Unlike a bare ``TaskGroup``, a task that fails does not cancel its siblings: one broken
connection must not end a server. The failure is logged with the task's name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import eager
from .steps import cancel_caller

log = logging.getLogger(__name__)

T = TypeVar("T")


class Nursery:
    """``await nursery.open()``, then :meth:`spawn` tasks; ``await nursery.aclose()`` last."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._root: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # the group's, to cancel at close
        self._quiet: set[asyncio.Task[Any]] = set()  # see spawn_quiet
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop it was opened on. Given to asyncio where it would look the running loop
        up, which on Python 3.11 costs a ``getpid`` system call each time."""

    @property
    def accepting(self) -> bool:
        """Whether :meth:`spawn` may be called: opened, and not closing."""
        return self._group is not None and self._stop is not None and not self._stop.is_set()

    async def open(self) -> Nursery:
        """Start the root task that holds the group; returns once it is held."""
        self.loop = loop = asyncio.get_running_loop()
        ready = loop.create_future()
        self._stop = asyncio.Event()
        self._root = asyncio.create_task(self._hold(ready), name=f"{self.name}-nursery")
        try:
            await ready
        except BaseException:  # the opener was cancelled: the root ends as soon as it runs
            self._stop.set()
            raise
        return self

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        assert self._stop is not None
        async with asyncio.TaskGroup() as group:
            self._group = group
            if not ready.done():  # (cancelled when its opener was)
                ready.set_result(None)
            await self._stop.wait()
            for task in [*self._tasks, *self._quiet]:  # some run template steps
                cancel_caller(task, f"{self.name} is closing")
            while quiet := [task for task in self._quiet if not task.done()]:
                await asyncio.wait(quiet)
            self._quiet.clear()
        self._group = None

    def spawn(self, work: Coroutine[Any, Any, T], name: str | None = None, *,
              guarded: bool = False) -> asyncio.Task[T | None]:
        """Run ``work`` in the group; the task's result is ``work``'s, or None if it failed.
        Raises ``RuntimeError`` once closing (``work`` is closed unrun, so no "never
        awaited" warning escapes). ``guarded``: ``work`` catches and logs its own errors,
        so it runs as it is, without the logging wrapper (one coroutine less per task: a
        server spawns one per connection)."""
        if self._group is None or not self.accepting:
            work.close()
            raise RuntimeError(f"{self.name}: closed, cannot start more tasks")
        if guarded:
            direct: asyncio.Task[T | None] = self._group.create_task(work, name=name)
            self._tasks.add(direct)
            direct.add_done_callback(self._tasks.discard)
            return direct
        task = self._group.create_task(self._logged(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``work``: close it (a no-op
        # once it ran), or it warns "coroutine ... was never awaited" when collected.
        task.add_done_callback(lambda _: work.close())
        return task

    def spawn_quiet(self, work: Coroutine[Any, Any, T], name: str | None = None
                    ) -> asyncio.Task[T]:
        """Run ``work`` in a task that carries no done callback (a task of the group carries
        two, and each costs a turn of the event loop when the task ends: once per request
        on a busy server). The nursery owns it all the same: :meth:`aclose` waits for it,
        and cancels it when cancelling. Contract: ``work`` catches its own errors and calls
        :meth:`forget` with its task as its last act. The task starts eagerly
        (:mod:`hud.eager`): ``work`` runs at once up to its first wait, and when it does not
        wait at all the task returned is done already (the nursery never holds it). Raises
        ``RuntimeError`` once closing, as :meth:`spawn` does."""
        if self._group is None or not self.accepting:
            work.close()
            raise RuntimeError(f"{self.name}: closed, cannot start more tasks")
        loop = self.loop
        assert loop is not None  # set with the group
        task = eager.start(loop, work, name)
        if not task.done():  # its first stretch did not finish it
            self._quiet.add(task)
        return task

    def forget(self, task: asyncio.Task[Any] | None) -> None:
        """``task`` (from :meth:`spawn_quiet`) is ending: stop owning it."""
        self._quiet.discard(task)

    async def _logged(self, work: Coroutine[Any, Any, T]) -> T | None:
        try:
            return await work
        except Exception:
            log.exception("%s: a task failed", self.name)
            return None

    async def aclose(self, *, cancel: bool = True) -> None:
        """Cancel every task (or with ``cancel=False``, let them finish), then return once
        all have ended. Idempotent."""
        if self._stop is None or self._root is None:
            return
        if not cancel:
            while pending := [t for t in (*self._tasks, *self._quiet) if not t.done()]:
                await asyncio.wait(pending)
        self._stop.set()
        await self._root
