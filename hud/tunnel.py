"""Byte tunnels: a connection on the control port joined to a capability's TCP daemon.

One tunnel carries one TCP connection; when either side closes, the other is closed too.
A tunnel is a WebSocket whose binary frames carry the bytes (:class:`TcpEnd`), or, where
the client asks for it with an HTTP upgrade to ``hud-tunnel/1`` and both ends are plain TCP
sockets, the bare byte stream: then :class:`Splice` moves the bytes between the two sockets
inside the kernel (``splice(2)`` through a pipe), without copying them through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from .address import numeric_family
from .errors import TransportClosed
from .protocol.messages import Binding
from .wsconn import WsConnection

DIAL_TIMEOUT = 10.0
RAW_UPGRADE = "hud-tunnel/1"
"""The ``Upgrade`` token of a bare byte tunnel (see protocol/README.md)."""
SPLICE_AVAILABLE = hasattr(os, "splice")
PIPE_SIZE = 256 * 1024
"""Bytes each direction's pipe may hold at first: at most this much moves per ``splice``
call. Pipe capacity counts against a per-user limit (``fs.pipe-user-pages-soft``, 64 MB by
default), so a server with many tunnels keeps its pipes modest (the kernel may grant less)."""
BULK_PIPE_SIZE = 1024 * 1024
"""What a direction's pipe grows to once one read fills it: a bulk transfer, where each
``splice`` call moving more costs less per byte (interactive tunnels never fill 256 KB)."""


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
        self._made: asyncio.Future[None] | None = None

    async def wait_made(self) -> None:
        """Returns once the transport is set: the task a protocol factory starts may run
        before ``connection_made`` (asyncio's loop calls it soon, not at once)."""
        if self.transport is None:
            self._made = asyncio.get_running_loop().create_future()
            await self._made

    def join(self, ws: WsConnection) -> None:
        self.ws = ws
        ws.on_write_pause = self._peer_paused
        ws.attach(self.write, self.close)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def take_early(self) -> list[bytes]:
        """What was read before :meth:`join` (the caller now delivers it)."""
        early, self._early = self._early, []
        return early

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
        if self._made is not None and not self._made.done():
            self._made.set_result(None)
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


# -- bare byte tunnels ----------------------------------------------------------------------


def take_socket(transport: Any) -> socket.socket:
    """The TCP socket under ``transport``, as a non-blocking socket of the caller's own; the
    transport lets go of it (closing its descriptor, not the connection). Bytes the transport
    still held to write are lost: call it only when nothing is pending."""
    fd = os.dup(transport.get_extra_info("socket").fileno())
    transport.set_protocol(asyncio.Protocol())
    transport.abort()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


async def dial(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``; a numeric host needs no
    resolver (uvloop's starts four threads in the process)."""
    loop = asyncio.get_running_loop()
    family: socket.AddressFamily | None = numeric_family(host)
    address: Any = (host, port)
    if family is None:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Direction:
    """One way of a :class:`Splice`: ``src`` → pipe → ``dst``. At any time it waits on one
    thing only: ``src`` readable while its pipe is empty, ``dst`` writable while not, so a
    slow reader stops the reading of its writer (back-pressure, as TCP has it)."""

    ROUNDS = 16  # moves per wake-up, then the loop serves others

    def __init__(self, splice: Splice, src: socket.socket, dst: socket.socket) -> None:
        self.splice, self.src, self.dst = splice, src.fileno(), dst.fileno()
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # the kernel may cap it
            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.capacity = fcntl.fcntl(self.pipe_w, fcntl.F_GETPIPE_SZ)
        self.pending = 0  # bytes in the pipe
        self.eof = False
        self.waiting: str | None = None  # "read" or "write"

    def pump(self) -> None:
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        try:
            for _ in range(self.ROUNDS):
                if self.pending:
                    self.pending -= os.splice(self.pipe_r, self.dst, self.pending, flags=flags)
                elif self.eof:
                    self.splice.close()
                    return
                else:
                    moved = os.splice(self.src, self.pipe_w, self.capacity, flags=flags)
                    self.eof = moved == 0
                    self.pending = moved
                    if moved == self.capacity < BULK_PIPE_SIZE:
                        self.grow()
        except BlockingIOError:
            pass
        except OSError as exc:  # reset, broken pipe: the tunnel ends
            self.splice.close(exc)
            return
        self.wait("write" if self.pending else "read")

    def grow(self) -> None:
        """One try at :data:`BULK_PIPE_SIZE`; refused (the user's limit), the pipe stays as
        it is, and ``capacity``, now only a bound on each call, is never met again."""
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, BULK_PIPE_SIZE)
        self.capacity = BULK_PIPE_SIZE

    def wait(self, what: str) -> None:
        if self.waiting == what:
            return
        self.unwait()
        loop = self.splice.loop
        if what == "read":
            loop.add_reader(self.src, self.pump)
        else:
            loop.add_writer(self.dst, self.pump)
        self.waiting = what

    def unwait(self) -> None:
        if self.waiting == "read":
            self.splice.loop.remove_reader(self.src)
        elif self.waiting == "write":
            self.splice.loop.remove_writer(self.dst)
        self.waiting = None

    def close(self) -> None:
        self.unwait()
        os.close(self.pipe_r)
        os.close(self.pipe_w)


class Splice:
    """Two connected TCP sockets joined both ways inside the kernel; when either ends (EOF,
    reset), both close once what was already read is delivered the same way. :attr:`closed`
    is done then; :meth:`close` ends it at once. No task: the event loop's readiness
    callbacks drive it."""

    def __init__(self, a: socket.socket, b: socket.socket,
                 on_close: Callable[[BaseException | None], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.sockets = (a, b)
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._on_close = on_close
        self._ways = (_Direction(self, a, b), _Direction(self, b, a))
        for way in self._ways:
            way.wait("read")

    def close(self, exc: BaseException | None = None) -> None:
        if self.closed.done():
            return
        for way in self._ways:
            way.close()
        for sock in self.sockets:
            sock.close()
        self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(exc)


class BareTunnel:
    """The environment's end of a bare tunnel (``Upgrade: hud-tunnel/1``), once its 101 is
    sent: :meth:`run` dials the daemon, then answers one line, ``ok`` or ``error REASON``
    (what a WebSocket tunnel says with close code 1011), and splices the two sockets until
    either side closes. :meth:`close` ends it at any point.

    A local tunnel (:mod:`hud.localtunnel`) answers on ``control``, the Unix connection the
    client's socket came over, instead: that connection lasts as long as the tunnel, and
    the client closing it ends the tunnel."""

    def __init__(self, client: socket.socket, control: socket.socket | None = None) -> None:
        self.client = client
        self.control = control
        self.daemon: socket.socket | None = None
        self.splice: Splice | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self, binding: Binding, early: bytes = b"") -> None:
        """Returns when the tunnel has ended; raises ``OSError`` naming the capability and
        its address when the daemon cannot be reached. ``early``: bytes the client sent
        before the tunnel was set up, delivered to the daemon first."""
        loop = asyncio.get_running_loop()
        answer = self.client if self.control is None else self.control
        try:
            daemon = await dial_capability(binding, answer, self.closed)
            if self.closed.done():  # closed while dialling
                daemon.close()
                return
            self.daemon = daemon
            if early:
                await loop.sock_sendall(daemon, early)
            await loop.sock_sendall(answer, b"ok\n")
            if not self.closed.done():
                self.splice = Splice(self.client, daemon, lambda _: self.close())
                if self.control is not None:
                    loop.add_reader(self.control, self._control_readable)
                await self.closed
        finally:
            self.close()

    def _control_readable(self) -> None:
        assert self.control is not None
        if hung_up(self.control):
            self.close()

    def close(self) -> None:
        if self.closed.done():
            return
        self.closed.set_result(None)  # first: the splice's own close calls back here
        if self.control is not None:
            if self.splice is not None:
                self.splice.loop.remove_reader(self.control)
            self.control.close()
        if self.splice is not None:
            self.splice.close()
            return
        self.client.close()
        if self.daemon is not None:
            self.daemon.close()


def hung_up(control: socket.socket) -> bool:
    """Whether the client hung up ``control``, a tunnel's lifeline, now readable: it sends
    nothing on one, so end of file or an error means it has (stray bytes are dropped)."""
    try:
        return not control.recv(64)
    except BlockingIOError:
        return False
    except OSError:
        return True


def unreachable(binding: Binding, host: str, port: int, exc: BaseException) -> str:
    """Why ``binding``'s daemon at ``host:port`` could not be dialled, in the words a
    tunnel's refusal carries."""
    reason = (os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno
              else type(exc).__name__)
    return f"capability {binding.name!r} unreachable at {host}:{port}: {reason}"


async def dial_capability(binding: Binding, answer: socket.socket,
                          closed: asyncio.Future[None]) -> socket.socket:
    """A connected socket to ``binding``'s daemon. When it cannot be reached, the client is
    told on ``answer`` (``error REASON``, unless the tunnel is ``closed`` already) and
    ``OSError`` naming the capability and its address is raised."""
    host, port = daemon_address(binding)
    try:
        return await asyncio.wait_for(dial(host, port), DIAL_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        message = unreachable(binding, host, port, exc)
        if not closed.done():
            with contextlib.suppress(OSError):
                answer.send(f"error {message}\n".encode())
        raise OSError(message) from exc


class HandedTunnel:
    """The environment's end of a handed connection (``dial`` on the local tunnels' Unix
    socket, :mod:`hud.localtunnel`): :meth:`run` dials the daemon and hands the connected
    socket itself to the client on ``control`` with ``ok`` (or answers ``error REASON``).
    No byte passes through the server after that. It keeps its own descriptor of the
    socket, so it can still cut the connection: when the client hangs up ``control``
    (its lifeline) or :meth:`close` is called (the server is shutting down), it shuts the
    connection down for both."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.daemon: socket.socket | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watching = False

    async def run(self, binding: Binding, early: bytes = b"") -> None:
        """Returns when the client has let go; raises ``OSError`` as
        :func:`dial_capability` does. ``early`` must be empty (the client sends nothing
        before it holds the socket)."""
        assert not early
        try:
            daemon = await dial_capability(binding, self.control, self.closed)
            if self.closed.done():  # closed while dialling
                daemon.close()
                return
            self.daemon = daemon
            socket.send_fds(self.control, [b"ok\n"], [daemon.fileno()])
            asyncio.get_running_loop().add_reader(self.control, self._control_readable)
            self._watching = True
            await self.closed
        finally:
            self.close()

    def _control_readable(self) -> None:
        if hung_up(self.control):
            self.close()

    def close(self) -> None:
        if self.closed.done():
            return
        self.closed.set_result(None)
        if self._watching:
            asyncio.get_running_loop().remove_reader(self.control)
        self.control.close()
        if self.daemon is not None:
            with contextlib.suppress(OSError):  # the client's descriptor too: cut for both
                self.daemon.shutdown(socket.SHUT_RDWR)
            self.daemon.close()
