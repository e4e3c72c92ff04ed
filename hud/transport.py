"""The one seam between hud's protocol drivers and the wire: :class:`Transport`.

A control connection (:mod:`hud.control`), a client (:mod:`hud.client`) and a tunnel each
drive a transport that pushes messages to them as they arrive. The lean WebSocket
connection (:class:`hud.wsconn.WsConnection`), the in-memory pair (:mod:`hud.memory`) and
the adapter for a WebSocket opened through an HTTP proxy (:class:`ProxiedWebSocket`) all
implement it, and all raise :class:`~hud.errors.TransportClosed`, never a library's own
exception, so no driver branches on what is underneath.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from .errors import TransportClosed

Receiver = Callable[[str | bytes | bytearray], None]
"""Called with each message as it arrives (text as ``str``, binary as ``bytes``, or as the
parser's ``bytearray``, passed on uncopied)."""
Closer = Callable[[BaseException | None], None]
"""Called once when the transport ends: ``None`` after a clean close, else the reason."""


class Transport(Protocol):
    """A message transport. Contract:

    * :meth:`attach` once, before anything arrives is lost: messages that arrived earlier
      are delivered at once, in order; ``closer`` is called exactly once, at the end: when
      the peer says it is done (a WebSocket close frame) or the connection is gone,
      whichever comes first.
    * :meth:`send_now` queues one message without waiting; it raises
      :class:`~hud.errors.TransportClosed` once the transport is closing or closed.
      :meth:`send` also waits while the peer is not taking data.
    * ``on_write_pause`` (when set) is called with True when the peer stops taking data and
      with False when it takes it again; :meth:`pause_reading` and :meth:`resume_reading`
      stop and restart delivery, so back-pressure can travel the other way.
    * :meth:`close` closes and returns when the transport is gone; :meth:`close_soon` only
      starts closing. Both are idempotent. ``closed`` is done once it is gone.
    """

    closed: asyncio.Future[None]
    on_write_pause: Callable[[bool], None] | None

    def attach(self, receiver: Receiver, closer: Closer) -> None: ...

    def send_now(self, message: str | bytes, text: bool | None = None) -> None: ...

    async def send(self, message: str | bytes, text: bool | None = None) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close_soon(self, code: int = 1000, reason: str = "") -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class ProxiedWebSocket:
    """:class:`Transport` over a ``websockets.asyncio`` connection (used only for a
    WebSocket opened through an HTTP proxy, which the lean client does not speak)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_write_pause: Callable[[bool], None] | None = None
        self._reader: asyncio.Task[None] | None = None

    def attach(self, receiver: Receiver, closer: Closer) -> None:
        self._reader = asyncio.create_task(self._read(receiver, closer), name="hud-proxied-ws")

    async def _read(self, receiver: Receiver, closer: Closer) -> None:
        from websockets.exceptions import ConnectionClosed

        error: BaseException | None = None
        try:
            async for message in self.ws:
                receiver(message)
        except ConnectionClosed as exc:
            error = None if exc.rcvd is not None and exc.rcvd.code in (1000, 1001) else exc
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            closer(error)

    def send_now(self, message: str | bytes, text: bool | None = None) -> None:
        from websockets.protocol import State

        protocol = self.ws.protocol  # websockets' sans-I/O core under the asyncio layer
        if protocol.state is not State.OPEN:
            raise TransportClosed("connection closed")
        data = message.encode() if isinstance(message, str) else message
        if text is False or (text is None and not isinstance(message, str)):
            protocol.send_binary(data)
        else:
            protocol.send_text(data)
        self.ws.send_data()

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        self.send_now(message, text)

    def pause_reading(self) -> None:
        """No-op: websockets' own queue bounds what it reads ahead."""

    def resume_reading(self) -> None:
        """No-op, see :meth:`pause_reading`."""

    def close_soon(self, code: int = 1000, reason: str = "") -> None:
        self.ws.transport.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
