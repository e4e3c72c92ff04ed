"""The one seam between hud's protocol drivers and the wire: :class:`Transport`.

A control connection (:mod:`hud.control`), a client (:mod:`hud.client`) and a tunnel each
drive a transport that pushes messages to them as they arrive. The lean WebSocket
connection (:class:`hud.wsconn.WsConnection`, through an HTTP proxy too) and the in-memory
pair (:mod:`hud.memory`) implement it, and both raise :class:`~hud.errors.TransportClosed`,
never a library's own exception, so no driver branches on what is underneath.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

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
