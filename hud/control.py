"""One control connection: the asyncio driver of :class:`hud.protocol.connection.ServerConnection`.

The sans-I/O core decides what runs when; this module runs it, from the transport's
callbacks: the connection has no task of its own. A call whose handler is a plain function
(it cannot wait) is answered on the spot; one whose handler is a coroutine runs in a task
of the server's nursery (:attr:`hud.handlers.Host.spawn`) that starts eagerly
(:mod:`hud.eager`): a call that never waits, as ``tasks.start`` and ``tasks.grade`` of a
template whose steps do not, is answered on the spot too, with no turn of the event loop.
Every reply goes out as soon as the core produces it. Reading pauses while the core is
saturated or the peer is not taking our replies, so a client that floods requests or never
reads costs bounded memory; a peer that takes none of our data for :data:`UNREAD_LIMIT`
seconds (frozen, e.g. stopped with SIGSTOP, which TCP keepalive cannot tell from a quiet
peer) is taken as gone and disconnected. When the connection drops, the calls already
accepted still finish, then the session is parked if it holds a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .errors import TransportClosed
from .handlers import HANDLERS, Host
from .protocol.connection import Call, Outcome, ServerConnection
from .protocol.errors import Cancelled, HudError, InternalError
from .protocol.messages import Body
from .session import Session
from .steps import cancel_caller
from .transport import Transport

log = logging.getLogger(__name__)

UNREAD_LIMIT = 60.0
"""Seconds a peer may leave our replies unread (its socket full) before it is dropped."""


class ControlConnection:
    """Serves one transport until it closes; see the module docstring."""

    __slots__ = ("_busy", "_ended", "_on_end", "_op", "_open", "_paused", "_ready",
                 "_starting", "_unread_timer", "_write_blocked", "core", "host", "session",
                 "transport")

    def __init__(self, host: Host, transport: Transport,
                 on_end: Callable[[ControlConnection], None] = lambda _: None) -> None:
        self.host = host
        self.transport = transport
        self.session: Session | None = None
        self.core = ServerConnection(max_message_size=host.max_message_size,
                                     declined=host.declined)
        self._on_end = on_end
        self._open = True  # until the transport closes
        self._ended = False  # the session is detached: nothing more runs
        self._busy = 0  # call tasks not finished yet
        self._op: asyncio.Task[None] | None = None  # the queued call in progress, waiting
        self._write_blocked = False
        self._paused = False  # whether _flow paused reading (only it pauses this transport)
        self._unread_timer: asyncio.TimerHandle | None = None
        self._ready: list[Call] = []  # calls released, not yet started (see _start)
        self._starting = False  # whether _start is running them now

    def open(self, first: str | None = None) -> None:
        """Serve the transport from now on, ``first`` (a request the client sent in its
        upgrade) before what it sends. When it closes and the accepted calls have
        finished, the session is parked or dropped and ``on_end(self)`` is called."""
        self.transport.on_write_pause = self._write_paused
        if first is not None:
            self._receive(first)
        self.transport.attach(self._receive, self._closed)
        if first is not None:
            self._flow()  # attach resumed reading: pause again if _receive had to

    def _closed(self, _reason: BaseException | None) -> None:
        self._open = False
        if self._unread_timer is not None:
            self._unread_timer.cancel()
            self._unread_timer = None
        if self._busy == 0:
            self._end()

    def _end(self) -> None:
        self._ended = True
        if self.session is not None:
            runner = self.host.registry.detach(self.session)
            if runner is not None:
                log.warning("parking limit reached: cancelling task of session %s",
                            self.session.id)
                with contextlib.suppress(RuntimeError):  # shutting down: the server closes it
                    self.host.tasks.spawn(runner.aclose(), name="hud-unparked-cleanup")
        self._on_end(self)

    # -- the core's calls -----------------------------------------------------------------

    def _receive(self, frame: str | bytes | bytearray) -> None:
        self._start(self.core.receive(frame))
        self._flush()

    def _start(self, calls: list[Call]) -> None:
        """Run each call: in place when its handler cannot wait, else in a task that starts
        eagerly (:mod:`hud.eager`), so a handler that never waits is answered here too. The
        calls that one releases as it ends run after those already given, in this loop
        (calls ending one after another in their first stretch do not nest)."""
        self._ready += calls
        if self._starting:
            return
        self._starting = True
        try:
            self._run_ready()
        finally:
            self._starting = False

    def _run_ready(self) -> None:
        ready = self._ready
        while ready:
            call = ready.pop(0)
            if self._ended:  # nothing can run any more
                ready += self.core.finish(call, Cancelled(f"{call.method.name}: connection ended"))
                continue
            try:
                work = HANDLERS[call.method.name](self, call.params)
            except Exception as exc:
                ready += self.core.finish(call, _failure(call, exc))
                continue
            if isinstance(work, Body):
                ready += self.core.finish(call, work)
                continue
            self._busy += 1
            task = self._spawn(self._run(call, work))
            if task is None:
                self._busy -= 1
                work.close()
                ready += self.core.finish(call, Cancelled(
                    f"{call.method.name}: the server is shutting down"))
                continue
            if call.method.queued and not task.done():
                self._op = task  # it waits: the queued call in progress

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[Any] | None:
        try:
            return self.host.tasks.spawn_quiet(work)
        except RuntimeError:  # the server's nursery is closed (it closed work unrun)
            return None

    async def _run(self, call: Call, work: Coroutine[Any, Any, Body]) -> None:
        outcome: Outcome
        try:
            outcome = await work
        except asyncio.CancelledError:
            outcome = Cancelled(f"{call.method.name} was cancelled")
        except Exception as exc:
            outcome = _failure(call, exc)
        task = asyncio.current_task(self.host.tasks.loop)  # no look-up of the running loop
        if self._op is task:
            self._op = None
        ready = self.core.finish(call, outcome)
        # an error's traceback holds this frame, and the frame the error: without this the
        # call's params (up to max_message_size) live on until the next cyclic GC
        del outcome
        try:
            self._start(ready)
            if not self._starting:  # else it runs within _start, whose caller flushes
                self._flush()
        finally:
            self._busy -= 1
            if not self._open and self._busy == 0 and not self._ended:
                self._end()
            self.host.tasks.forget(task)

    def _flush(self) -> None:
        for payload in self.core.data_to_send():
            try:  # noqa: SIM105 (suppress() would build a context manager per reply)
                self.transport.send_now(payload, text=True)
            except TransportClosed:  # the client left; the session stays
                pass
        self._flow()

    # -- back-pressure --------------------------------------------------------------------

    def _write_paused(self, paused: bool) -> None:
        self._write_blocked = paused
        if self._unread_timer is not None:
            self._unread_timer.cancel()
            self._unread_timer = None
        if paused:
            self._unread_timer = asyncio.get_running_loop().call_later(
                UNREAD_LIMIT, self._drop_unread)
        self._flow()

    def _drop_unread(self) -> None:
        """The peer kept our replies unread too long: close (its session is parked, so its
        task can be resumed or adopted)."""
        self._unread_timer = None
        log.warning("dropping a control connection that read none of its replies for %g s "
                    "(session %s)", UNREAD_LIMIT, self.session.id if self.session else "none")
        self.transport.close_soon(1008, "replies left unread")

    def _flow(self) -> None:
        if self.core.saturated or self._write_blocked:
            self._paused = True
            self.transport.pause_reading()
        elif self._paused:
            self._paused = False
            self.transport.resume_reading()

    # -- for handlers (hud.handlers.Context) and the server ---------------------------------

    async def cancel_running(self, reason: str) -> None:
        self.core.cancel_waiting(reason)
        self._flush()
        op = self._op
        if op is not None and not op.done():
            cancel_caller(op, reason)
            await asyncio.wait([op])

    def cancel_soon(self, reason: str) -> None:
        """Cancel queued calls without waiting (server shutdown)."""
        self.core.cancel_waiting(reason)
        self._flush()
        if self._op is not None and not self._op.done():
            cancel_caller(self._op, reason)

    def close_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self.transport.close_soon, 1000, "bye")


def _failure(call: Call, exc: Exception) -> HudError:
    """What a handler's exception is answered with: its own error, or (a bug in hud
    itself: said so, and the connection serves on) an internal error."""
    if isinstance(exc, HudError):
        return exc
    log.error("internal error while handling %s", call.method.name, exc_info=exc)
    return InternalError(f"internal error: {exc!r}")
