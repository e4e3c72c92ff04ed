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
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

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
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, f"{self.name}: not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the peer went away mid-handshake: nothing to tell anyone
        except Exception:
            log.exception("%s: a connection failed", self.name)
        finally:
            self._connections.discard(task)
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
