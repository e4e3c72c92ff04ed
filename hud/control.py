"""One control connection: the asyncio driver of :class:`hud.protocol.connection.ServerConnection`.

The sans-I/O core decides what runs when; this module runs it. Each call the core releases
runs its handler (:mod:`hud.handlers`) in a task of the connection's task group, and every
reply goes out as soon as the core produces it. Reading pauses while the core is saturated
or the peer is not taking our replies, so a client that floods requests or never reads
costs bounded memory. When the connection drops, the calls already accepted still finish
(the task group waits for them), then the session is parked if it holds a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .errors import TransportClosed
from .handlers import HANDLERS, Host
from .protocol.connection import Call, Outcome, ServerConnection
from .protocol.errors import Cancelled, HudError, InternalError
from .protocol.methods import Schedule
from .session import Session
from .transport import Transport

log = logging.getLogger(__name__)


class ControlConnection:
    """Serves one transport until it closes; see the module docstring."""

    __slots__ = ("_group", "_op", "_write_blocked", "core", "host", "session", "transport")

    def __init__(self, host: Host, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        self.session: Session | None = None
        self.core = ServerConnection(max_message_size=host.max_message_size,
                                     declined=host.declined)
        self._group: asyncio.TaskGroup | None = None
        self._op: asyncio.Task[None] | None = None  # the queued call in progress
        self._write_blocked = False

    async def run(self) -> None:
        """Serve until the transport closes and accepted calls finish; then park or drop
        the session."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self.transport.on_write_pause = self._write_paused
                self.transport.attach(self._receive, _ignore)
                await self.transport.closed
        finally:
            self._group = None
            await self._detach()

    # -- the core's calls -----------------------------------------------------------------

    def _receive(self, frame: str | bytes | bytearray) -> None:
        self._start(self.core.receive(frame))
        self._flush()

    def _start(self, calls: list[Call]) -> None:
        group = self._group
        for call in calls:
            if group is None:  # only after the group is done: nothing can run any more
                self.core.finish(call, Cancelled(f"{call.method.name}: connection ended"))
                continue
            task = group.create_task(self._run(call))
            if call.method.schedule is Schedule.QUEUED:
                self._op = task

    async def _run(self, call: Call) -> None:
        outcome: Outcome
        try:
            outcome = await HANDLERS[call.method.name](self, call.params)
        except HudError as exc:
            outcome = exc
        except asyncio.CancelledError:
            outcome = Cancelled(f"{call.method.name} was cancelled")
        except Exception as exc:  # a bug in hud itself: say so, keep serving
            log.exception("internal error while handling %s", call.method.name)
            outcome = InternalError(f"internal error: {exc!r}")
        if self._op is asyncio.current_task():
            self._op = None
        ready = self.core.finish(call, outcome)
        self._flush()
        self._start(ready)

    def _flush(self) -> None:
        for payload in self.core.data_to_send():
            with contextlib.suppress(TransportClosed):  # the client left; the session stays
                self.transport.send_now(payload, text=True)
        self._flow()

    # -- back-pressure --------------------------------------------------------------------

    def _write_paused(self, paused: bool) -> None:
        self._write_blocked = paused
        self._flow()

    def _flow(self) -> None:
        if self.core.saturated or self._write_blocked:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- for handlers (hud.handlers.Context) and the server ---------------------------------

    async def cancel_running(self, reason: str) -> None:
        self.core.cancel_waiting(reason)
        self._flush()
        op = self._op
        if op is not None and not op.done():
            op.cancel(reason)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(op)

    def cancel_soon(self, reason: str) -> None:
        """Cancel queued calls without waiting (server shutdown)."""
        self.core.cancel_waiting(reason)
        self._flush()
        if self._op is not None:
            self._op.cancel(reason)

    def close_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self.transport.close_soon, 1000, "bye")

    async def _detach(self) -> None:
        if self.session is not None:
            runner = self.host.registry.detach(self.session)
            if runner is not None:
                log.warning("parking limit reached: cancelling task of session %s",
                            self.session.id)
                await runner.aclose()


def _ignore(_reason: BaseException | None) -> None:
    """The end of the transport is awaited in :meth:`ControlConnection.run` instead."""
