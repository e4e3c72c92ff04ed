"""A small Chrome DevTools Protocol client: one WebSocket, commands matched to replies by id,
events handed to whoever waits for them.

It speaks to a browser endpoint (``/devtools/browser/<id>``) and reaches pages through flat
sessions (``Target.attachToTarget`` with ``flatten``): ``send(..., session_id=...)``.
:func:`fetch_json` reads DevTools' HTTP endpoints (``/json/version``) without an HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
Event = dict[str, Any]


class CDPError(RuntimeError):
    """The browser answered a command with an error (``code``, ``message``)."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.code = error.get("code")
        super().__init__(f"{method}: {error.get('message', error)} ({self.code})")


class CDPConnectionLost(ConnectionError):
    """The DevTools WebSocket closed: the browser exited, or its task ended."""


class CDPConnection:
    """One DevTools WebSocket. Build it with :meth:`open`; :meth:`aclose` it.

    The reader task belongs to this object. When the socket closes, every pending command
    and every waiter fails with :class:`CDPConnectionLost`.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._waiters: list[tuple[str, str | None, Callable[[Event], bool],
                                  asyncio.Future[Event]]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    async def open(cls, ws_url: str, *, timeout: float = 10.0) -> CDPConnection:
        try:
            ws = await connect(ws_url, max_size=None, compression=None, open_timeout=timeout,
                               ping_interval=None)
        except (OSError, TimeoutError) as exc:
            raise CDPConnectionLost(f"cannot reach DevTools at {ws_url}: {exc}") from exc
        return cls(ws)

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *,
        session_id: str | None = None, timeout: float = COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        """Send one command and return its ``result``; raises :class:`CDPError` when the
        browser answers with an error, :class:`CDPConnectionLost` when the socket closes."""
        if self.closed:
            raise CDPConnectionLost("the DevTools connection is closed")
        rid = next(self._ids)
        message: dict[str, Any] = {"id": rid, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (method, future)
        try:
            await self.ws.send(json.dumps(message))
            return await asyncio.wait_for(future, timeout)
        except ConnectionClosed as exc:
            raise CDPConnectionLost(f"{method}: the DevTools connection closed") from exc
        finally:
            self._pending.pop(rid, None)

    async def wait_for(
        self, method: str, *, session_id: str | None = None,
        predicate: Callable[[Event], bool] = lambda _: True, timeout: float = COMMAND_TIMEOUT,
    ) -> Event:
        """The ``params`` of the next event ``method`` (on ``session_id``) that satisfies
        ``predicate``. Register before the action that causes it: use :meth:`expect`."""
        return await asyncio.wait_for(self.expect(method, session_id=session_id,
                                                  predicate=predicate), timeout)

    def expect(
        self, method: str, *, session_id: str | None = None,
        predicate: Callable[[Event], bool] = lambda _: True,
    ) -> asyncio.Future[Event]:
        """A future for the next matching event, registered now (before the command that
        triggers it is sent)."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(CDPConnectionLost("the DevTools connection is closed"))
        else:
            self._waiters.append((method, session_id, predicate, future))
        return future

    async def aclose(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._dispatch(json.loads(frame))
        except ConnectionClosed:
            pass
        finally:
            self._fail_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            method, future = self._pending.get(message["id"], ("?", None))
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(CDPError(method, message["error"]))
            else:
                future.set_result(message.get("result", {}))
            return
        event, session = message.get("method"), message.get("sessionId")
        for waiter in list(self._waiters):
            want, want_session, predicate, future = waiter
            if future.done():
                self._waiters.remove(waiter)
            elif want == event and want_session in (None, session) and predicate(
                    message.get("params", {})):
                future.set_result(message.get("params", {}))
                self._waiters.remove(waiter)

    def _fail_all(self) -> None:
        lost = CDPConnectionLost("the DevTools connection closed (did the browser exit?)")
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        for *_, future in self._waiters:
            if not future.done():
                future.set_exception(lost)
        self._waiters.clear()


async def fetch_json(url: str, *, timeout: float = 10.0) -> Any:
    """GET a DevTools HTTP endpoint (``http://host:port/.../json/version``) and decode its
    JSON. A non-200 answer raises ``ConnectionError`` carrying the body's ``error``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         "Connection: close\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = _content_length(head)
            body = await (reader.readexactly(length) if length is not None else reader.read())
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError(f"{url}: the connection closed without an answer") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    status = int(head.split(" ", 2)[1])
    if status != 200:
        try:
            detail = json.loads(body).get("error", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = body.decode(errors="replace").strip() or f"HTTP {status}"
        raise ConnectionError(f"DevTools at {host}:{port} answered {status}: {detail}")
    return json.loads(body)


def _content_length(head: str) -> int | None:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return None
