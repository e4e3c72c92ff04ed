"""Lean WebSocket connections: websockets' sans-I/O protocols on :class:`asyncio.Protocol`.

``websockets.asyncio`` hands each message to a reader task through a queue and takes a lock
around every send; a control message then crosses the event loop twice before hud sees it.
Here ``data_received`` parses frames and hands each complete message to a callback
(:meth:`WsConnection.attach`: the client resolves the caller's future in place, a control
connection feeds its protocol core, a tunnel writes to its daemon). Each end implements
:class:`hud.transport.Transport`. ``send`` writes at once and waits only while the
kernel's buffer is full. Pings, pongs and the close handshake are kept by the sans-I/O
protocol; the common data frames are read and written without it (:mod:`hud.wsframes`),
and so is the common close: a client's 1000 or 1001 answered by the server, and the
client's own close frame.

:class:`hud.wsclient.WsClient` (with :func:`hud.wsclient.connect`) is the client end; one
accepted connection of :class:`hud.server.Server` is :class:`hud.wsserver.WsServerConnection`.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, Side, State

from . import wsframes
from .errors import TransportClosed
from .transport import Closer, Receiver

CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the peer to finish the close handshake before dropping TCP."""
READ_SIZE = 64 * 1024
"""Bytes asked of each ``recv`` on asyncio's own loop. Its transports ask 256 KiB, over
glibc's mmap threshold: every read then maps, shrinks and unmaps a buffer, about 25 µs
against 3 µs for a short message (uvloop reads into a buffer it keeps)."""
OPEN = State.OPEN
"""Read per frame: on Python 3.11 each attribute of an enum class is looked up through
``EnumType.__getattr__``, ten times the cost of a global."""
MAX_EARLY = 16
"""Messages kept for a receiver not attached yet before the socket stops being read."""


class WsConnection(asyncio.Protocol):
    """What both ends share: framing, sending, flow control, closing."""

    def __init__(self, protocol: Protocol, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop = loop or asyncio.get_running_loop()
        self.protocol = protocol
        self.transport: Any = None  # an asyncio or uvloop transport (no common base class)
        self.closed: asyncio.Future[None] = loop.create_future()
        self._receiver: Receiver | None = None
        self._closer: Closer | None = None
        self._ended = False  # whether the end is known (see attach): closer called or due
        self._inbox: collections.deque[str | bytes | bytearray] = collections.deque()
        self._read_paused = False
        self._fragments: list[bytes | bytearray] = []
        self._fragment_text = False
        self._writable: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._liveness: tuple[float, float] | None = None  # see watch_liveness
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_due = False
        self._plain = False  # see _frame_plainly
        self._held: bytes | None = None  # written ahead of the next data (a deferred 101)
        self._plain_in = False  # whether data_received still reads frames itself
        self._masked_in = True  # whether the peer's frames are masked (it is a client)
        self._unparsed = bytearray()  # the start of a frame it reads itself
        self._needed = 0  # bytes _unparsed must hold before the frame can be read
        self._max_size: int | None = None
        self.on_write_pause: Callable[[bool], None] | None = None
        """Called with True when the peer stops taking data, False when it takes it again
        (a tunnel pauses its other side)."""

    # -- receiving ------------------------------------------------------------------------

    def attach(self, receiver: Receiver, closer: Closer) -> None:
        """Deliver each message to ``receiver`` as it is parsed; call ``closer`` once when
        the connection ends (with the reason, or None after a clean close): when the peer's
        close frame arrives (it sends nothing after one, RFC 6455 section 5.5.1) or when the
        connection is lost, whichever comes first. The close handshake and the TCP close go
        on after that without the receiver."""
        self._receiver, self._closer = receiver, closer
        while self._inbox:
            receiver(self._inbox.popleft())
        self.resume_reading()
        if self._ended:
            closer(self._end_reason())

    def _end(self) -> None:
        """The connection has ended for its receiver: call the closer, once."""
        if not self._ended:
            self._ended = True
            if self._closer is not None:
                self._closer(self._end_reason())

    def _deliver(self, data: bytes | bytearray, text: bool) -> None:
        # binary data may be a bytearray (websockets' reader): not copied here
        message: str | bytes | bytearray = data
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:  # RFC 6455 section 8.1: fail with 1007
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                self._handle_events()  # the close frame goes now (and the end is known)
                return
        if self._receiver is not None:
            self._receiver(message)
            return
        self._inbox.append(message)  # until attach(); past a few, stop reading meanwhile
        if len(self._inbox) >= MAX_EARLY:
            self.pause_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket (the consumer is behind); :meth:`resume_reading` undoes."""
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _frame(self, frame: Frame) -> None:
        opcode, data = frame.opcode, frame.data
        # websockets builds a memoryview only for compressed frames that it sends
        assert not isinstance(data, memoryview)
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(data, opcode is Opcode.TEXT)
            else:
                self._fragments = [data]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(data, self._fragment_text)
        elif opcode is Opcode.PONG:
            self._pong_due = False
        elif opcode is Opcode.CLOSE:
            self._end()

    # -- liveness -------------------------------------------------------------------------

    def watch_liveness(self, interval: float, timeout: float) -> None:
        """After each ``interval`` seconds, ping the peer and drop the connection when its
        pong takes longer than ``timeout``: a peer whose process is frozen (SIGSTOP, a
        debugger) still has its kernel answer TCP keepalive, but never answers a ping. No
        verdict while we are not reading (back-pressure): the pong may be waiting unread.
        One timer per connection, no task."""
        self._liveness = (interval, timeout)
        # the first ping at a random point of the interval: connections opened in a burst
        # must not all be pinged in the same instant, again and again
        self._ping_timer = self._loop.call_later(
            interval * (0.5 + random.random() / 2), self._ping)

    def _ping(self) -> None:
        if self.protocol.state is not State.OPEN or self._liveness is None:
            return
        self._pong_due = True
        self.protocol.send_ping(b"hud")
        self._flush()
        self._ping_timer = self._loop.call_later(
            self._liveness[1], self._check_pong)

    def _check_pong(self) -> None:
        if self._liveness is None or self.transport is None or self.closed.done():
            return
        if self._pong_due and not self._read_paused:  # frozen or gone: the driver parks
            self.transport.abort()                    # what it holds
            return
        self._ping_timer = self._loop.call_later(
            self._liveness[0], self._ping)

    # -- sending --------------------------------------------------------------------------

    def send_now(self, message: str | bytes, text: bool | None = None) -> None:
        """Queue one message on the socket at once (text unless ``text`` is False or it is
        bytes); raises :class:`~hud.errors.TransportClosed` once the connection is closing."""
        if self.protocol.state is not OPEN:
            raise self._not_open()
        if self._plain and self.transport is not None:
            data = message.encode() if isinstance(message, str) else message
            binary = text is False or (text is None and not isinstance(message, str))
            if self._masked_in:  # the server's end
                frame = wsframes.server_header(len(data), binary) + data
                if self._held is not None:  # one write, one segment: the 101 and this reply
                    frame, self._held = self._held + frame, None
            else:
                frame = wsframes.client_frame(data, binary)
            self.transport.write(frame)
            return
        if text is False or (text is None and not isinstance(message, str)):
            self.protocol.send_binary(message.encode() if isinstance(message, str) else message)
        else:
            self.protocol.send_text(message.encode() if isinstance(message, str) else message)
        self._flush()

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        """:meth:`send_now`, then wait while the peer is not taking data."""
        self.send_now(message, text)
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def close_soon(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake without waiting for it."""
        self.resume_reading()  # the peer's close frame must be read
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        elif self.transport is not None and self.protocol.state is State.CONNECTING:
            self.transport.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake, then TCP; returns when the connection is gone. Idempotent."""
        self.resume_reading()  # the peer's close frame must be read
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        elif self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.close()
        if self.transport is not None and not self.closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
            except TimeoutError:
                self.transport.abort()
                await self.closed

    def _frame_plainly(self, max_size: int | None) -> None:
        """From now on, frame the common data frames here, not through websockets
        (:mod:`hud.wsframes`): on either side of an open connection without extensions.
        websockets keeps no state about the data frames sent, and is handed every control
        frame whole, so it still answers pings and closes correctly. ``max_size`` is the
        protocol's limit on a message (a longer one goes to websockets, which refuses it)."""
        self._plain = not self.protocol.extensions
        self._plain_in = self._plain
        self._masked_in = self.protocol.side is Side.SERVER  # a client masks what it sends
        self._max_size = max_size

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._held is not None:
            transport.write(self._held)
            self._held = None
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._close_timer is None and self.protocol.close_expected():
            # the server closes TCP first; if it never does, drop the connection ourselves
            self._close_timer = self._loop.call_later(
                CLOSE_TIMEOUT, self._abort_if_open
            )

    def _abort_if_open(self) -> None:
        if self.transport is not None and not self.closed.done():
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if getattr(transport, "max_size", 0) > READ_SIZE:  # asyncio's own transports
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        if self.protocol.side is Side.CLIENT:  # the request websockets wrote, if it did;
            self._flush()                      # a server has nothing to say first

    def data_received(self, data: bytes | bytearray) -> None:
        if self._plain_in:
            if self._needed:  # the rest of a frame begun before
                self._unparsed += data
                if len(self._unparsed) < self._needed:
                    return
                data, self._unparsed = self._unparsed, bytearray()
            elif self._one_frame(data):
                return
            data = self._read_plainly(data)
            if not data:
                return
        self.protocol.receive_data(data)
        self._handle_events()

    def _one_frame(self, data: bytes | bytearray) -> bool:
        """Deliver ``data`` and return True when it is exactly one whole text or binary
        frame of up to 64 KiB, as :meth:`_read_plainly` would read it (what a read
        almost always holds on a control connection: one request, or one reply); else
        return False and leave it to that. The same checks as
        :func:`hud.wsframes.classify`, for this one case, in a few operations."""
        size = len(data)
        if size < 2:
            return False
        first, second = data[0], data[1]
        if first != 0x81 and first != 0x82:  # FIN, no reserved bits, text or binary
            return False
        masked = self._masked_in
        if masked:  # a client's frame: masked, the mask after the length
            length, head = second ^ 0x80, 6  # (over 127 if the mask bit is missing)
        else:  # a server's: unmasked
            length, head = second, 2
        if length == 126:
            if size < head + 2:
                return False
            length, head = int.from_bytes(data[2:4], "big"), head + 2
        elif length > 125:  # an 8-byte length, or the mask bit wrong
            return False
        if size != head + length or self.protocol.state is not OPEN:
            return False
        max_size = self._max_size
        if max_size is not None and length > max_size:
            return False  # websockets refuses it
        payload = wsframes.apply_mask(data[head:], data[head - 4:head]) if masked \
            else data[head:]
        self._deliver(payload, first == 0x81)
        return True

    def _read_plainly(self, buf: bytes | bytearray) -> bytes | bytearray:
        """Deliver the whole data frames at the start of ``buf`` and hand each whole control
        frame to websockets; keep an incomplete frame for later. Return what websockets
        must read from here on (an unusual frame, or anything once the connection is no
        longer open)."""
        pos, size = 0, len(buf)
        protocol, masked, max_size = self.protocol, self._masked_in, self._max_size
        while pos < size:
            if protocol.state is not OPEN:
                break
            frame = wsframes.classify(buf, pos, max_size, masked)
            if frame is None:
                break
            if isinstance(frame, int) or size < frame[2]:
                self._needed = frame if isinstance(frame, int) else frame[2] - pos
                self._unparsed += buf[pos:]
                return b""
            kind, start, end = frame
            if kind == wsframes.CONTROL:
                if not (buf[pos] == 0x88 and masked and self._close_plainly(
                        wsframes.apply_mask(bytes(buf[start:end]), buf[start - 4:start]))):
                    protocol.receive_data(buf[pos:end])
                    self._handle_events()
                pos = end
                continue
            pos = end
            payload: bytes | bytearray
            if masked:
                payload = wsframes.apply_mask(memoryview(buf)[start:end], buf[start - 4:start])
            else:
                payload = buf[start:end]
            self._deliver(payload, kind == wsframes.TEXT)
        else:
            self._needed = 0
            return b""
        self._plain_in, self._needed = False, 0
        return buf[pos:]

    def _close_plainly(self, data: bytes) -> bool:
        """A client's close frame carrying ``data`` (its unmasked payload), answered here
        when it is the common one, 1000 or 1001 with a UTF-8 reason: the server's side of
        websockets' own answer (``Protocol.recv_frame``), without parsing the frame into a
        ``Frame`` and serializing one back. The protocol is left as websockets leaves it:
        the close received and echoed, the EOF sent, the rest of the input discarded. False
        for any other close (websockets decides it)."""
        code = int.from_bytes(data[:2], "big")
        if len(data) < 2 or code not in (1000, 1001):
            return False
        try:
            close = Close(code, data[2:].decode())
        except UnicodeDecodeError:
            return False
        protocol = self.protocol
        protocol.close_rcvd = protocol.close_sent = close
        protocol.close_rcvd_then_sent = True
        protocol.state = State.CLOSING
        protocol.eof_sent = True  # a server closes TCP at once
        protocol.parser = protocol.discard()
        next(protocol.parser)
        self._end()
        if self.transport is not None:
            if self._held is not None:
                self.transport.write(self._held)
                self._held = None
            self.transport.write(bytes((0x88, len(data))) + data)  # the close, echoed
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._flush()  # nothing left to write: arms the close timer
        return True

    def eof_received(self) -> bool | None:
        if self._unparsed:  # websockets says what an incomplete frame means
            self.protocol.receive_data(bytes(self._unparsed))
            self._unparsed = bytearray()
        self._plain_in = False
        self.protocol.receive_eof()
        self._handle_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; leaves the protocol CLOSED
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
            self._end()

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()
        if self.on_write_pause is not None:
            self.on_write_pause(True)

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        if self.on_write_pause is not None:
            self.on_write_pause(False)

    def _handle_events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            else:
                self._handshake(event)
        self._flush()  # pongs, the close reply, a handshake response

    def _handshake(self, event: Request | Response) -> None:
        raise NotImplementedError

    def _not_open(self) -> TransportClosed:
        protocol = self.protocol
        if protocol.state is State.CLOSED:
            exc: ConnectionClosed = protocol.close_exc
        else:  # closing
            exc = ConnectionClosedOK(
                protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent
            )
        said = self._said()
        return TransportClosed(f"connection closed: {exc}", said.code if said else None,
                               said.reason if said else "")

    def _said(self) -> Close | None:
        """The close that ended the connection: the peer's, or ours when we hung up
        without waiting for the peer's (:meth:`hud.wsclient.WsClient.close`)."""
        return self.protocol.close_rcvd or self.protocol.close_sent

    def _end_reason(self) -> BaseException | None:
        """None for a clean end (closed with 1000 or 1001), else the reason."""
        protocol = self.protocol
        said = self._said()
        if said is not None and said.code in (1000, 1001):
            return None
        if protocol.state is State.CLOSED:
            return protocol.close_exc
        return ConnectionClosedError(protocol.close_rcvd, protocol.close_sent,
                                     protocol.close_rcvd_then_sent)
