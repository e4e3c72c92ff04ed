"""Byte tunnels: a WebSocket on the control port joined to a capability's TCP daemon.

One tunnel carries one TCP connection. Binary frames carry the bytes; when either side
closes, the other is closed too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed

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
    """Dial a capability's daemon and join it to tunnel ``ws``: each binary frame is written
    to the daemon and each read from the daemon goes out as a frame, with no task per
    direction; when either side stops taking data the other is paused. When one side
    closes, so does the other. The error names the capability and the address."""
    host, port = daemon_address(binding)
    loop = asyncio.get_running_loop()
    try:
        _, daemon = await asyncio.wait_for(
            loop.create_connection(lambda: _DaemonEnd(ws), host, port), DIAL_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise OSError(
            f"capability {binding.name!r} unreachable at {host}:{port}: {reason}"
        ) from exc
    ws.on_write_pause = daemon.pause_reading_from
    ws.attach(daemon.write, daemon.close)


class _DaemonEnd(asyncio.Protocol):
    """The daemon's side of a tunnel."""

    def __init__(self, ws: WsConnection) -> None:
        self.ws = ws
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.ws.send_now(data, text=False)
        except ConnectionClosed:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return False  # the daemon is done: close, which closes the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.close_soon(1000 if exc is None else 1011, "" if exc is None else str(exc)[:120])

    def pause_writing(self) -> None:
        self.ws.transport.pause_reading()

    def resume_writing(self) -> None:
        self.ws.transport.resume_reading()

    def pause_reading_from(self, paused: bool) -> None:
        """The tunnel's peer stopped (or resumed) taking data: stop reading the daemon."""
        if self.transport.is_closing():
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def write(self, message: str | bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(message if isinstance(message, bytes) else message.encode())

    def close(self, _reason: BaseException | None = None) -> None:
        self.transport.close()


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
