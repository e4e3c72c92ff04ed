"""An in-memory transport: a pair of connected endpoints with the WebSocket surface hud uses.

The server's :class:`~hud.control.ControlConnection` and the :class:`~hud.client.Client` only
``send(message, text=...)`` (or ``send_now``), iterate over incoming messages, and ``close()``. Two
:class:`MemoryEnd` objects do that within one event loop, so an environment can be driven in
process through the very same protocol code, without sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.exceptions import ConnectionClosedOK

_EOF = object()


class MemoryEnd:
    def __init__(self) -> None:
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.peer: MemoryEnd | None = None
        self.closed = False
        self.request = None  # what a ServerConnection would carry; there is no handshake

    def send_now(self, message: str | bytes, text: bool | None = None) -> None:
        """Deliver ``message`` to the peer; raises ``ConnectionClosedOK`` once closed."""
        if self.closed or self.peer is None or self.peer.closed:
            raise ConnectionClosedOK(None, None)
        if text and isinstance(message, bytes):
            message = message.decode()
        self.peer._inbox.put_nowait(message)

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        self.send_now(message, text)

    def __aiter__(self) -> MemoryEnd:
        return self

    async def __anext__(self) -> str | bytes:
        item = await self._inbox.get()
        if item is _EOF:
            self._inbox.put_nowait(_EOF)  # stay at end-of-stream for later readers
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close both directions; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(_EOF)
        if self.peer is not None:
            self.peer.closed = True
            self.peer._inbox.put_nowait(_EOF)


def memory_pipe() -> tuple[MemoryEnd, MemoryEnd]:
    """Two connected ends: what one sends, the other receives."""
    a, b = MemoryEnd(), MemoryEnd()
    a.peer, b.peer = b, a
    return a, b
