"""An in-memory transport: two connected :class:`~hud.transport.Transport` ends.

What one end sends, the other receives on a later turn of the event loop (never inside the
sender's call, so a reply cannot re-enter the code that sent the request). An environment
can be driven in process through the very same protocol code as over a socket.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from .errors import TransportClosed
from .transport import Closer, Receiver


class MemoryEnd:
    """One end of :func:`memory_pipe`."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.peer: MemoryEnd | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.on_write_pause: Callable[[bool], None] | None = None
        self._receiver: Receiver | None = None
        self._closer: Closer | None = None
        self._inbox: collections.deque[str | bytes] = collections.deque()
        self._paused = False
        self._closing = False

    def attach(self, receiver: Receiver, closer: Closer) -> None:
        self._receiver, self._closer = receiver, closer
        self._drain()
        if self.closed.done():
            closer(None)

    def send_now(self, message: str | bytes, text: bool | None = None) -> None:
        """Deliver ``message`` to the peer; raises :class:`TransportClosed` once closing."""
        peer = self.peer
        if self._closing or peer is None or peer._closing:
            raise TransportClosed("in-memory connection closed")
        if text and isinstance(message, bytes):
            message = message.decode()
        peer._inbox.append(message)
        if len(peer._inbox) == 1:
            self._loop.call_soon(peer._drain)

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        self.send_now(message, text)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._loop.call_soon(self._drain)

    def close_soon(self, code: int = 1000, reason: str = "") -> None:
        """Close both directions (messages already sent are still delivered)."""
        for end in (self, self.peer):
            if end is not None and not end._closing:
                end._closing = True
                self._loop.call_soon(end._drain)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_soon(code, reason)
        await self.closed

    def _drain(self) -> None:
        while self._inbox and not self._paused and self._receiver is not None:
            self._receiver(self._inbox.popleft())
        if self._closing and not self.closed.done() and (
            not self._inbox or self._receiver is None  # nobody will ever read the rest
        ):
            self.closed.set_result(None)
            if self._closer is not None:
                self._closer(None)


def memory_pipe() -> tuple[MemoryEnd, MemoryEnd]:
    """Two connected ends: what one sends, the other receives."""
    a, b = MemoryEnd(), MemoryEnd()
    a.peer, b.peer = b, a
    return a, b
