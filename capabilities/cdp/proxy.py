"""The DevTools proxy: every task's browser behind one address, each behind a secret path.

A request for ``/<key>/json/version`` or ``/<key>/devtools/browser/<id>`` goes to the browser
of the task that holds ``<key>``, with the key stripped. Two things break when DevTools is
reached through a tunnel, and both are mended here:

* Chromium answers only requests whose ``Host`` is an IP address or ``localhost`` (a guard
  against DNS rebinding), and refuses WebSocket handshakes from an ``Origin`` it was not told
  to allow. The proxy sends Chromium its own address as ``Host`` and drops ``Origin``.
* Chromium builds the WebSocket URLs in ``/json`` answers from the ``Host`` it was sent.
  The proxy rewrites them to the address the client used (the ``Host`` of its request: the
  client's end of the tunnel) and puts the key in the path, so ``connect_over_cdp`` and any
  raw CDP client dial the same task's browser again.

Every request must carry its task's key, even while only one task holds a browser: the key is
the only credential, and a neighbour (or anything else that reaches this port) must not drive a
task's browser without it. A request without one (``/json/version``) is refused with 403, one
with an unknown key with 404. Errors are JSON: ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

from ..relay import LoopbackServer, Routes, close_writer, pipe

HEAD_LIMIT = 64 * 1024
DEVTOOLS_ROOTS = ("json", "devtools")


class Backend(Protocol):
    port: int

    @property
    def alive(self) -> bool: ...

    def exit_reason(self) -> str: ...


class Request:
    """The head of one HTTP/1.1 request."""

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.target, self.version = lines[0].split(" ", 2)
        self.headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:]
                        if ":" in line]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def upgrade(self) -> bool:
        return (self.header("upgrade") or "").lower() == "websocket"

    def encode(self, target: str, host: str, close: bool) -> bytes:
        """This request for ``target`` on ``host``, without ``Origin``."""
        dropped = {"host", "origin"} | ({"connection"} if close else set())
        lines = [f"{self.method} {target} {self.version}", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in dropped]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class DevToolsProxy:
    """One loopback port for every task's browser. Tasks' browsers are added to and
    removed from :attr:`routes`; :meth:`aclose` drops every connection."""

    def __init__(self, name: str) -> None:
        self.routes: Routes[Backend] = Routes()
        self.server = LoopbackServer(self._serve, f"devtools proxy {name!r}")

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> DevToolsProxy:
        await self.server.start()
        return self

    async def aclose(self) -> None:
        await self.server.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until it closes or becomes a WebSocket."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            request = Request(head)
            try:
                key, backend, rest = self._route(request.target)
                if not backend.alive:
                    raise _Failure(502, f"the browser of this task is gone "
                                        f"({backend.exit_reason()})")
            except _Failure as failure:
                await _respond(writer, failure.status, {"error": str(failure)})
                return
            if request.upgrade:
                await self._splice(request, rest, backend, reader, writer)
                return
            body = await reader.readexactly(int(request.header("content-length") or 0))
            if not await self._forward(request, body, key, rest, backend, writer):
                return

    def _route(self, target: str) -> tuple[str, Backend, str]:
        """``(key, backend, target without the key)`` for a request target."""
        first, _, rest = target.lstrip("/").partition("/")
        backend = self.routes.get(first)
        if backend is not None:
            return first, backend, "/" + rest
        if first.split("?", 1)[0] in DEVTOOLS_ROOTS:
            raise _Failure(403, "DevTools requests start with the task's secret path "
                                "(endpoint_path in the bindings of tasks.start; "
                                "endpoint_url(binding) gives the whole URL)")
        raise _Failure(404, "no browser at this path: its task ended, or the path is wrong "
                            "(use the endpoint in your task's bindings)")

    async def _splice(self, request: Request, rest: str, backend: Backend,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.port)
        except OSError as exc:
            await _respond(writer, 502, {"error": f"the browser of this task does not answer "
                                                  f"({exc.strerror or exc})"})
            return
        up_writer.write(request.encode(rest, f"127.0.0.1:{backend.port}", close=False))
        await pipe((reader, writer), (up_reader, up_writer))

    async def _forward(self, request: Request, body: bytes, key: str, rest: str,
                       backend: Backend, writer: asyncio.StreamWriter) -> bool:
        """Forward one plain HTTP request and its answer, URLs rewritten. Returns whether
        the client's connection may carry another request."""
        chromium = f"127.0.0.1:{backend.port}"
        try:
            status, content_type, payload = await _exchange(
                backend.port, request.encode(rest, chromium, close=True) + body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            await _respond(writer, 502, {"error": f"the browser of this task does not answer "
                                                  f"({exc})"})
            return False
        host = request.header("host") or chromium
        payload = payload.replace(f"{chromium}/devtools/".encode(),
                                  f"{host}/{key}/devtools/".encode())
        keep = (request.header("connection") or "").lower() != "close"
        await _send(writer, status, content_type, payload, keep)
        return keep


class _Failure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _exchange(port: int, request: bytes) -> tuple[str, str, bytes]:
    """Send one request to Chromium; return its status line's tail, content type, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = Request(await reader.readuntil(b"\r\n\r\n"))  # a response parses alike
        length = head.header("content-length")
        body = await (reader.readexactly(int(length)) if length else reader.read())
    finally:
        await close_writer(writer)
    status = f"{head.target} {head.version}"  # "HTTP/1.1 200 OK": target=200, version=OK
    return status, head.header("content-type") or "application/json", body


REASONS = {403: "Forbidden", 404: "Not Found", 502: "Bad Gateway"}


async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, str]) -> None:
    await _send(writer, f"{status} {REASONS.get(status, 'Error')}",
                "application/json; charset=UTF-8", json.dumps(body).encode(), keep=False)


async def _send(writer: asyncio.StreamWriter, status: str, content_type: str, body: bytes,
                keep: bool) -> None:
    writer.write((f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n"
                  f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode() + body)
    await writer.drain()
