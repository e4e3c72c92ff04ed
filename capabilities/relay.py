"""Loopback relays for capabilities that route many tasks through one daemon address.

A capability whose state is per task (a browser, a desktop) runs one backend process per task
but publishes one address. Its relay listens there, works out from the first bytes of each
connection which task it belongs to (a path segment, a password), and then :func:`pipe` joins
it to that task's backend. :class:`Routes` is the table it looks in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from hud import ports
from hud.nursery import Nursery
from hud.tunnel import until_first_ends

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
T = TypeVar("T")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """A TCP server on ``127.0.0.1:0`` that owns one task per connection.

    ``await start()``, then read :attr:`port`. :meth:`aclose` stops listening, cancels every
    connection's task and waits for them; each connection's writer is closed either way.
    """

    def __init__(self, handler: Handler, name: str) -> None:
        self.name = name
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections = Nursery(f"{name} connections")
        self._claimed: int | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, f"{self.name}: not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, sock: socket.socket | None = None) -> LoopbackServer:
        """Listen on ``127.0.0.1:0``, a port registered as hud's (:mod:`hud.ports`); or,
        given ``sock``, on that listening socket (one in another network namespace: its
        port is not this host's, and is not registered)."""
        await self._connections.open()
        if sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=sock)
            return self
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._claimed = ports.claim(self.port)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._connections.aclose()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None
        if self._claimed is not None:
            ports.release(self._claimed)
            self._claimed = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback: the connection's task is the nursery's, not one asyncio makes
        if not self._connections.accepting:
            writer.close()
            return
        self._connections.spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the peer went away mid-handshake: nothing to tell anyone
        except Exception:
            log.exception("%s: a connection failed", self.name)
        finally:
            await close_writer(writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


async def pipe(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways between two streams until either side closes; close both."""

    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()

    try:
        await until_first_ends(copy(a[0], b[1]), copy(b[0], a[1]))
    finally:
        await close_writer(a[1])
        await close_writer(b[1])


class RouteError(LookupError):
    """No backend for a connection; ``str()`` is the message to hand its client."""


class Routes(Generic[T]):
    """Live tasks' backends, by secret key. Keys are only ever handed to their own task."""

    def __init__(self) -> None:
        self._by_key: dict[str, T] = {}

    def add(self, key: str, backend: T) -> None:
        self._by_key[key] = backend

    def discard(self, key: str) -> None:
        self._by_key.pop(key, None)

    def get(self, key: str) -> T | None:
        return self._by_key.get(key)

    def items(self) -> list[tuple[str, T]]:
        return list(self._by_key.items())
