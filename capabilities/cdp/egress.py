"""The browser's only way out: an HTTP proxy on the host, in front of every connection a
page makes.

Chromium is told (flag and managed policy) to send every URL through it, loopback
included (``<-loopback>``): plain HTTP as absolute-form requests, HTTPS and WebSockets as
``CONNECT``. The proxy resolves the name itself, refuses any port hud serves on
(:func:`hud.ports.serving`: the control port, capability daemons and relays, DevTools) and
connects to the address it checked, so a page reaches the sites an environment serves,
on loopback or beyond, and never hud. A refusal is a ``403`` whose body says why.

When this process is root the browser runs in a network namespace of its own
(:class:`Network`), so the proxy is not only its way out but its only one: nothing a page
or the agent's DevTools calls (``direct://`` contexts, WebRTC) reaches the host's loopback.
The proxy's listening socket and the connections to Chromium's DevTools are made inside
that namespace by ``setns(2)`` from a short-lived thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from hud import ports
from hud.tunnel import until_first_ends

from ..relay import CHUNK, close_writer, pipe

T = TypeVar("T")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Socket = socket.socket  # inside Network, `socket` names its method

CLONE_NEWNET = 0x40000000
PROXY_PORT = 3128  # inside the browser's own network namespace: nothing else listens there


class Network:
    """Where one browser's sockets live: the host's network (``pid=None``) or the network
    namespace of process ``pid``. :meth:`close` lets go of the namespace."""

    def __init__(self, pid: int | None = None) -> None:
        self._ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY) if pid is not None else None

    async def socket(self) -> Socket:
        """A non-blocking TCP socket in this network."""
        if self._ns is None:
            sock = socket.socket()
        else:
            sock = await _in_namespace(self._ns, socket.socket)
        sock.setblocking(False)
        return sock

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``127.0.0.1:port`` of this network."""
        sock = await self.socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def listen(self, port: int = 0) -> Socket:
        """A socket listening on ``127.0.0.1:port`` of this network."""
        sock = await self.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        return sock

    def close(self) -> None:
        if self._ns is not None:
            os.close(self._ns)
            self._ns = None


def _in_namespace(ns: int, make: Callable[[], T]) -> asyncio.Future[T]:
    """``make()`` run in network namespace ``ns``, by a thread that ends afterwards (a
    thread's namespace is its own: the event loop's stays where it is)."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            if _libc().setns(ns, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns into the browser's network: {os.strerror(errno)}")
            done.set_result(make())
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=run, name="hud-browser-netns", daemon=True).start()
    return asyncio.wrap_future(done)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class Refused(Exception):
    """A destination the browser may not reach; ``str()`` is the reason its page shows."""


async def serve_egress(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one connection from Chromium: a ``CONNECT`` tunnel or one forwarded request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await close_writer(writer)
        return
    method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    try:
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await _open(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                raise Refused(f"the browser's proxy forwards http:// URLs only, not {target}")
            upstream = await _open(url.hostname, url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            upstream[1].write(_closing(head, f"{method} {path} {version}"))
    except (Refused, OSError, ValueError) as exc:
        await _refuse(writer, str(exc) if isinstance(exc, Refused) else
                      f"cannot connect to {target}: {exc}")
        return
    if method == "CONNECT":
        await pipe((reader, writer), upstream)
    else:
        await _forward((reader, writer), upstream)


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``host:port`` unless it is one of hud's ports, on the address that
    was checked (no second lookup a DNS answer could change)."""
    if port in ports.serving():
        raise Refused(f"port {port} belongs to hud (the control port, a capability or "
                      "DevTools): the browser may not connect to it")
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, proto, _, address = infos[0]
    ip, number = str(address[0]), int(address[1])  # an IPv4 or IPv6 address: host, port first
    return await asyncio.open_connection(ip, number, family=family, proto=proto)


async def _forward(client: Stream, upstream: Stream) -> None:
    """One request's bytes up and its answer down, the answer's head saying ``close``."""

    async def answer() -> None:
        head = await upstream[0].readuntil(b"\r\n\r\n")
        client[1].write(_closing(head, head.split(b"\r\n", 1)[0].decode("latin-1")))
        await _copy(upstream[0], client[1])

    try:
        await until_first_ends(_copy(client[0], upstream[1]), answer())
    finally:
        await close_writer(upstream[1])
        await close_writer(client[1])


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()


def _closing(head: bytes, first_line: str) -> bytes:
    """An HTTP head with ``first_line`` and ``Connection: close`` for its own: one request
    per connection, since Chromium's connection stays with the upstream it was opened to."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    kept = [line for line in lines if line and line.split(":", 1)[0].strip().lower()
            not in ("proxy-connection", "proxy-authorization", "connection", "keep-alive")]
    return "\r\n".join([first_line, *kept, "Connection: close", "", ""]).encode("latin-1")


async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    body = f"hud: {reason}\n".encode()
    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Connection: close\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    await close_writer(writer)
