"""The server end of a lean WebSocket connection (:mod:`hud.wsconn`): one accepted
connection of :class:`hud.server.Server`, from its opening handshake on (:func:`reject`
refuses one with a JSON body), or one past a limit, refused unparsed (:class:`Refusal`)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, cast

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import Side, State
from websockets.server import ServerProtocol

from .protocol import codec
from .protocol.errors import LimitExceeded
from .protocol.messages import PROTOCOL_VERSION
from .upgrade import MANIFEST_HEADER, MAX_HEAD, Head, parse_upgrade, switching_protocols
from .wsconn import WsConnection

_LOGGER = logging.getLogger("websockets.server")  # the default, not looked up per connection
Gate = Callable[["WsServerConnection", Request | Head], Response | None]
Opened = Callable[["WsServerConnection", str], None]
Lost = Callable[["WsServerConnection"], None]

LINGER = 1.0
"""Seconds a refused connection may take to read its 503 and hang up."""


class Turns:
    """At most ``per_turn`` upgrades answered per turn of the event loop; the others wait, in
    arrival order, for the next turns. In a burst of new connections, the sessions already
    open then go on between the admissions: they finish one after another instead of all
    together at the end (each waiting on every other's handshake first)."""

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it was first used on
        self._used = 0
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()
        self._turn_pending = False

    def admit(self, answer: Callable[[], None]) -> bool:
        """Call ``answer`` now and return True, or return False and call it in a later turn,
        when this one has had its share."""
        if not self._turn_pending:
            self._turn_pending = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._next_turn)
        if self._used < self.per_turn and not self._waiting:
            self._used += 1
            answer()
            return True
        self._waiting.append(answer)
        return False

    def _next_turn(self) -> None:
        self._turn_pending = False
        self._used = 0
        while self._waiting and self._used < self.per_turn:
            self._used += 1
            self._waiting.popleft()()
        if self._waiting:
            self._turn_pending = True
            assert self._loop is not None  # set by admit
            self._loop.call_soon(self._next_turn)


class _Pending:
    """A connection's ``protocol`` until its handshake needs websockets' own: building a
    ``ServerProtocol`` (a ``uuid4``, a parser started) is a tenth of a plain connection's
    instructions, and a plain upgrade makes an open one after its 101 is written. What
    runs before reads no more than this: the state (a handshake timer, a close) and the
    side."""

    __slots__ = ()
    state = State.CONNECTING
    side = Side.SERVER


_PENDING = cast(ServerProtocol, _Pending())


class WsServerConnection(WsConnection):
    """One accepted connection. ``gate`` sees the handshake request and may answer it with
    an HTTP response (a refusal); otherwise the WebSocket opens and ``opened`` is called with
    the request path; ``lost`` is called when the connection is gone (at once: not a
    callback of :attr:`closed`, which would cost a turn of the event loop per connection).
    Headers are dropped after the handshake (a long-lived session should
    not hold them).

    A plain upgrade is parsed and answered by :mod:`hud.upgrade`; anything else (and every
    refusal) goes through websockets' own handshake, as it arrived."""

    protocol: ServerProtocol

    def __init__(self, gate: Gate, opened: Opened, lost: Lost, *, max_size: int | None,
                 server_header: str, open_timeout: float | None = 10.0,
                 turns: Turns | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(_PENDING, loop)
        self._max_size = max_size
        self._head: bytearray | None = bytearray()  # None once handed on (opened or not)
        self._gate = gate
        self._opened = opened
        self._lost = lost
        self._server_header = server_header
        self._open_timeout = open_timeout  # None: no limit
        self._open_timer: asyncio.TimerHandle | None = None
        self._turns = turns
        self._queued = False  # a complete request head waits for its turn
        self.path = ""
        self.first: str | None = None
        """A message the gate took from the handshake (the ``Hud-Manifest`` header): the
        101 says it was taken, and ``opened`` delivers it as the connection's first."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._open_timeout is not None:
            self._open_timer = self._loop.call_later(
                self._open_timeout, self._abort_if_connecting
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._connecting()  # (gone during its handshake: websockets closes its protocol)
        super().connection_lost(exc)
        self._stop_open_timer()
        self._lost(self)

    def _abort_if_connecting(self) -> None:
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes | bytearray) -> None:
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        if self._queued:
            return
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            if self._turns is None:
                self._upgrade(end)
                return
            self._queued = True
            if not self._turns.admit(self._take_turn):
                self.pause_reading()  # until its turn comes
        elif len(self._head) > MAX_HEAD:
            self._fall_back()

    def _take_turn(self) -> None:
        self._queued = False
        if self._head is None or self.transport is None or self.transport.is_closing():
            return  # gone, or handed to websockets meanwhile (an EOF)
        self.resume_reading()
        self._upgrade(self._head.find(b"\r\n\r\n"))

    def eof_received(self) -> bool | None:
        if self._head is not None:
            self._fall_back()
        return super().eof_received()

    def _upgrade(self, end: int) -> None:
        assert self._head is not None
        head, rest = self._head[:end], self._head[end + 4:]
        parsed = parse_upgrade(head) if end <= MAX_HEAD else None
        if parsed is None or self._gate(self, parsed[0]) is not None:
            self._fall_back()  # websockets answers it (the gate refuses it again there)
            return
        self._head = None
        request, accept = parsed
        self._stop_open_timer()
        response = switching_protocols(accept, self._server_header, self.first is not None)
        if self.first is None:
            self.transport.write(response)
        else:  # written with the first reply (see send_now), in one segment
            self._held = response
        # The open connection's protocol, made now (as websockets' own accept leaves one,
        # OPEN: its parser starts at the first frame), while the client reads the 101.
        if self.protocol is not _PENDING:  # made for the gate's answer, not needed
            self.protocol.parser.close()  # (else its parser keeps it as cyclic garbage)
        self.protocol = ServerProtocol(state=State.OPEN, max_size=self._max_size,
                                       logger=_LOGGER)
        self._frame_plainly(self._max_size)
        self.path = request.path
        self._opened(self, self.path)
        if self._held is not None:  # no reply was written
            self._flush()
        if rest:  # frames sent right behind the handshake
            super().data_received(bytes(rest))

    def _fall_back(self) -> None:
        """Hand what arrived to websockets' own handshake."""
        assert self._head is not None
        data, self._head = bytes(self._head), None
        self._connecting()
        if data:
            super().data_received(data)

    def _stop_open_timer(self) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None

    def respond(self, status: int, text: str) -> Response:
        """An HTTP response refusing the handshake (for ``gate``)."""
        return self._connecting().reject(status, text)

    def _connecting(self) -> ServerProtocol:
        """The protocol, made (for websockets' handshake) if it is not yet."""
        if self.protocol is _PENDING:
            self.protocol = ServerProtocol(max_size=self._max_size, logger=_LOGGER)
        return self.protocol

    def _handshake(self, event: Request | Response) -> None:
        if not isinstance(event, Request):
            return
        response = self._gate(self, event)
        if response is None:
            response = self.protocol.accept(event)
        response.headers["Server"] = self._server_header
        if response.status_code == 101 and self.first is not None:
            response.headers[MANIFEST_HEADER] = "answered"
        self.protocol.send_response(response)
        self._stop_open_timer()
        if self.protocol.state is State.OPEN:
            self._frame_plainly(self._max_size)
            self.path = event.path
            event.headers.clear()
            self._flush()  # the 101 goes out before anything the handler sends
            self._opened(self, self.path)
        else:
            self._flush()
            self.transport.close()


class Refusal(asyncio.Protocol):
    """A connection past a limit, refused without a parser or a handshake: answered 503 with
    the error as JSON as soon as its request starts (a client answered before it has sent its
    request may miss the answer), then shut our side, so that a client still sending is not
    reset before it reads it. Dropped when the client hangs up, or after :data:`LINGER`."""

    def __init__(self, error: LimitExceeded) -> None:
        self.error = error
        self.transport: Any = None  # an asyncio or uvloop transport (no common base class)
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(LINGER, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.answered or self.transport.is_closing():
            return
        self.answered = True
        body = codec.encode({"code": self.error.code, "message": self.error.message,
                             "data": self.error.data}) + b"\n"
        headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(body)),
                           "Connection": "close", "Server": f"hud/{PROTOCOL_VERSION}"})
        self.transport.write(Response(503, "Service Unavailable", headers, body).serialize())
        self.transport.write_eof()

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def reject(connection: WsServerConnection, status: int, code: int, message: str) -> Response:
    """The answer refusing ``connection``'s handshake: ``status``, and the error as JSON."""
    body: dict[str, Any] = {"code": code, "message": message}
    response = connection.respond(status, codec.encode(body).decode() + "\n")
    del response.headers["Content-Type"]  # a multidict: replace the plain-text one
    response.headers["Content-Type"] = "application/json"
    return response
