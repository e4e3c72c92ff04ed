"""Byte tunnels: a WebSocket on the control port spliced to a capability's TCP daemon.

One tunnel carries one TCP connection. Binary frames carry the bytes; when either side
closes, the other is closed too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from .protocol.messages import Binding

CHUNK = 256 * 1024
DIAL_TIMEOUT = 10.0


def daemon_address(binding: Binding) -> tuple[str, int]:
    """Host and port of a binding's daemon, from its URL (``scheme://host:port/...``)."""
    parts = urlsplit(binding.url if "://" in binding.url else f"tcp://{binding.url}")
    if parts.hostname is None or parts.port is None:
        raise OSError(f"capability {binding.name!r} has no host:port in its URL {binding.url!r}")
    return parts.hostname, parts.port


async def open_daemon(binding: Binding) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial a capability's daemon; the error names the capability and the address."""
    host, port = daemon_address(binding)
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port), DIAL_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise OSError(
            f"capability {binding.name!r} unreachable at {host}:{port}: {reason}"
        ) from exc


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


async def splice(
    ws: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Copy bytes both ways until either side closes, then close both."""

    async def upstream() -> None:
        async for message in ws:
            writer.write(message if isinstance(message, bytes) else message.encode())
            await writer.drain()

    async def downstream() -> None:
        while data := await reader.read(CHUNK):
            await ws.send(data)

    try:
        await until_first_ends(upstream(), downstream())
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
        with contextlib.suppress(ConnectionClosed):
            await ws.close()
