"""The forwarder's tunnels that leave the WebSocket behind: their bytes are spliced in the kernel.

A :class:`~hud.forward.Forwarder` tries these for each connection it accepts, where the
server offers them, before falling back to a WebSocket:

* local (:mod:`hud.localtunnel`): :func:`hand_over` passes the accepted connection's socket
  to the server, which splices it to the daemon; the Unix connection it went over is the
  tunnel's lifeline (:class:`Lifelines`), held until either side ends the tunnel;
* bare: :func:`open_bare` asks for an HTTP upgrade to ``hud-tunnel/1`` on the tunnel's path,
  and :func:`splice_bare` splices its socket to the accepted connection
  (:class:`~hud.tunnel.Splice`).

A tunnel the environment refuses is reported through ``fail(reason)``, the forwarder's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from . import localtunnel
from .tunnel import DIAL_TIMEOUT, RAW_UPGRADE, Splice, TcpEnd, dial, take_socket

Fail = Callable[[str], None]
"""``fail(reason)``: a tunnel was refused (the forwarder keeps the reason)."""


async def hand_over(end: TcpEnd, conn: socket.socket, name: str, token: str | None,
                    fail: Fail) -> bool:
    """Hand ``end``'s socket to the server over ``conn`` (a connection to its Unix socket)
    for a local tunnel to capability ``name``. True when the server took it: the caller then
    holds ``conn`` as the tunnel's lifeline; otherwise ``conn`` is closed."""
    if end.transport is None or end.transport.is_closing():
        conn.close()
        return False
    app = take_socket(end.transport)
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            status = await localtunnel.hand_over(conn, name, token, app,
                                                 b"".join(end.take_early()))
    except BaseException:
        conn.close()
        raise
    finally:
        app.close()  # the server holds it now (or it ends here)
    if status != "ok":
        conn.close()
        fail(status.removeprefix("error ") or "the environment refused the tunnel")
        return False
    return True


class Lifelines:
    """Local tunnels' Unix connections, one per tunnel. The server sends nothing on one
    after ``ok``: readable means the tunnel has ended. Letting go of one (:meth:`let_go`,
    :meth:`close`) closes it, and the server then ends the tunnel."""

    def __init__(self) -> None:
        self._conns: set[socket.socket] = set()

    def __len__(self) -> int:
        return len(self._conns)

    def hold(self, conn: socket.socket) -> None:
        self._conns.add(conn)
        asyncio.get_running_loop().add_reader(conn, self._readable, conn)

    def let_go(self, conn: socket.socket) -> None:
        self._conns.discard(conn)
        asyncio.get_running_loop().remove_reader(conn)
        conn.close()

    def close(self) -> None:
        for conn in list(self._conns):
            self.let_go(conn)

    def _readable(self, conn: socket.socket) -> None:
        try:
            if conn.recv(64):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.let_go(conn)


async def splice_bare(end: TcpEnd, opened: tuple[socket.socket, str, bytes], fail: Fail,
                      ended: Callable[[Splice], None]) -> Splice | None:
    """Splice ``end``'s socket to a bare tunnel (``opened``, from :func:`open_bare`): the
    splice, which calls ``ended(splice)`` once closed; None when the environment refused the
    tunnel (``end`` is closed) or either side was gone."""
    sock, status, rest = opened
    if status != "ok":
        sock.close()
        fail(status.removeprefix("error ") or "the environment closed the tunnel")
        end.close()
        return None
    if end.transport is None or end.transport.is_closing():
        sock.close()
        return None
    app = take_socket(end.transport)
    loop = asyncio.get_running_loop()
    try:
        for data in end.take_early():  # read before its reading paused
            await loop.sock_sendall(sock, data)
        if rest:  # the daemon's first bytes came with the status line
            await loop.sock_sendall(app, rest)
    except OSError:
        sock.close()
        app.close()
        return None
    splice = Splice(app, sock, lambda _: ended(splice))
    return splice


async def open_bare(url: str, headers: dict[str, str] | None, *, exact: bool = False,
                    sock: socket.socket | None = None
                    ) -> tuple[socket.socket, str, bytes] | None:
    """Ask the server at ``url`` (``ws://``) for a bare tunnel (``Upgrade: hud-tunnel/1``).
    Returns the socket, the server's status line (``ok``, or ``error REASON``) and the bytes
    read past it; None when the server offers no bare tunnels (it answers 400 or 426, as a
    WebSocket-only server does). Raises ``OSError`` naming the HTTP status for any other
    refusal (401, 404...) and when the server cannot be reached. ``exact``: read nothing
    past the status line (the bytes returned are none), so that the socket can be handed
    to a protocol client with the daemon's first bytes still in it. ``sock``: a connection
    to the server to ask over (one through a proxy), which the call then owns."""
    parts = urlsplit(url)
    if sock is None:
        port = 80 if parts.port is None else parts.port  # (0 is no port: refused, not 80)
        sock = await dial(parts.hostname or "127.0.0.1", port)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", f"Upgrade: {RAW_UPGRADE}",
                 "Connection: Upgrade", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        if exact:
            head, rest = await read_through(sock, b"\r\n\r\n"), b""
        else:
            head, rest = await _read_until(sock, b"\r\n\r\n", b"")
        status, upgrade = _parse_head(head)
        if status in (400, 426):
            sock.close()
            return None
        if status != 101 or upgrade != RAW_UPGRADE:
            raise OSError(f"HTTP {status}")
        if exact:
            line = await read_through(sock, b"\n")
        else:
            line, rest = await _read_until(sock, b"\n", rest)
    except BaseException:
        sock.close()
        raise
    return sock, line.decode(errors="replace").rstrip(), rest


async def _read_until(sock: socket.socket, marker: bytes, data: bytes,
                      limit: int = 65536) -> tuple[bytes, bytes]:
    """Bytes up to ``marker`` (excluded) and those after it, reading ``sock`` as needed."""
    loop = asyncio.get_running_loop()
    while marker not in data:
        if len(data) > limit:
            raise OSError(f"no {marker!r} in the first {limit} bytes of the server's answer")
        more = await loop.sock_recv(sock, 65536)
        if not more:
            raise OSError("the server closed the connection before the end of its answer")
        data += more
    head, _, rest = data.partition(marker)
    return head, rest


async def read_through(sock: socket.socket, marker: bytes, limit: int = 65536,
                       peer: str = "the server") -> bytes:
    """Bytes up to ``marker`` (excluded), taken from ``sock`` through the marker and not a
    byte further: each read looks first (``MSG_PEEK``), then takes what it may. ``peer``
    names the other end in the errors."""
    data = b""
    while True:
        try:
            peeked = sock.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await localtunnel.wait_readable(sock)
            continue
        if not peeked:
            raise OSError(f"{peer} closed the connection before the end of its answer")
        start = max(0, len(data) - len(marker) + 1)
        found = (data + peeked).find(marker, start)
        data += sock.recv(len(peeked) if found < 0 else found + len(marker) - len(data))
        end = data.find(marker, start)  # (a read may take less than was seen: look again)
        if end >= 0:
            return data[:end]
        if len(data) > limit:
            raise OSError(f"no {marker!r} in the first {limit} bytes of {peer}'s answer")


def _parse_head(head: bytes) -> tuple[int, str]:
    """The status code and the ``Upgrade`` header (lower case) of an HTTP response head."""
    status_line, *fields = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP response: {status_line[:80]!r}") from None
    upgrade = next((value.strip().lower() for name, _, value in
                    (f.partition(":") for f in fields) if name.strip().lower() == "upgrade"), "")
    return status, upgrade
