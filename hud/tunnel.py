"""Byte tunnels: a WebSocket on the control port joined to a capability's TCP daemon.

One tunnel carries one TCP connection. Binary frames carry the bytes; when either side
closes, the other is closed too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from .errors import TransportClosed
from .protocol.messages import Binding
from .wsconn import WsConnection

DIAL_TIMEOUT = 10.0


def daemon_address(binding: Binding) -> tuple[str, int]:
    """Host and port of a binding's daemon, from its URL (``scheme://host:port/...``)."""
    parts = urlsplit(binding.url if "://" in binding.url else f"tcp://{binding.url}")
    if parts.hostname is None or parts.port is None:
        raise OSError(f"capability {binding.name!r} has no host:port in its URL {binding.url!r}")
    return parts.hostname, parts.port


async def link_daemon(ws: WsConnection, binding: Binding) -> None:
    """Dial a capability's daemon and join it to tunnel ``ws`` (see :class:`TcpEnd`). The
    error names the capability and the address."""
    host, port = daemon_address(binding)
    loop = asyncio.get_running_loop()
    try:
        _, daemon = await asyncio.wait_for(
            loop.create_connection(TcpEnd, host, port), DIAL_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise OSError(
            f"capability {binding.name!r} unreachable at {host}:{port}: {reason}"
        ) from exc
    daemon.join(ws)


class TcpEnd(asyncio.Protocol):
    """A TCP connection joined to a tunnel's WebSocket: what it reads goes out as binary
    frames, each frame received is written to it. No task per direction: when either side
    stops taking data, the other stops being read; when either closes, so does the other.
    Reading waits for :meth:`join`."""

    def __init__(self) -> None:
        self.ws: WsConnection | None = None
        self.transport: Any = None
        self.received = False  # whether anything came through the tunnel
        self._close_early = False
        self._early: list[bytes] = []  # read before join (uvloop reads before a pause holds)

    def join(self, ws: WsConnection) -> None:
        self.ws = ws
        ws.on_write_pause = self._peer_paused
        ws.attach(self.write, self.close)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self, _reason: BaseException | None = None) -> None:
        if self.transport is None:
            self._close_early = True
        else:
            self.transport.close()

    def write(self, message: str | bytes | bytearray) -> None:
        self.received = True
        if not self.transport.is_closing():
            self.transport.write(message.encode() if isinstance(message, str) else message)

    def _peer_paused(self, paused: bool) -> None:
        if not self.transport.is_closing():
            (self.transport.pause_reading if paused else self.transport.resume_reading)()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self._close_early:
            transport.close()
        elif self.ws is None:
            transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.ws is None:
            self._early.append(data)
            self.transport.pause_reading()
            return
        try:
            self.ws.send_now(data, text=False)
        except TransportClosed:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return False  # the peer is done sending: close, which closes the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ws is not None:
            self.ws.close_soon(1000 if exc is None else 1011,
                               "" if exc is None else str(exc)[:120])

    def pause_writing(self) -> None:
        if self.ws is not None:
            self.ws.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.ws is not None and not self.ws.transport.is_closing():
            self.ws.transport.resume_reading()


async def until_first_ends(*steps: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``steps`` concurrently until the first of them ends, then cancel the others.

    Returns every step's outcome: its result, or the exception it ended with (cancelled ones
    included). Used for the two directions of a byte pipe: when one side closes, both stop.
    """
    tasks = [asyncio.create_task(step) for step in steps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes
