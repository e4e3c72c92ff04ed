"""The client end of a lean WebSocket connection (:mod:`hud.wsconn`), from its opening
handshake on: what :class:`hud.client.Client` and the tunnels' local ports dial.

The common handshake is written from a template and its answer checked by
:mod:`hud.upgrade` (websockets' ``ClientProtocol`` builds the request header by header and
parses the 101 with its generic HTTP parser: about a tenth of a short-lived client's time);
anything else the server answers (a refusal, an unusual 101) goes to websockets, which
decides it as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import select
import socket
import ssl as ssl_module

from websockets.client import ClientProtocol
from websockets.frames import Close
from websockets.headers import build_host
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri
from websockets.utils import generate_key

from . import wsframes
from .address import numeric_family
from .upgrade import MANIFEST_HEADER, MAX_HEAD, accept_value, switched, upgrade_request
from .wsconn import CLOSE_TIMEOUT, OPEN, WsConnection

_ANSWERED_KEY = MANIFEST_HEADER.lower()
_parse_uri = functools.lru_cache(maxsize=256)(parse_uri)  # the same few URLs, dialled often
_host = functools.lru_cache(maxsize=256)(build_host)  # (it parses the host with ipaddress)
_LOGGER = logging.getLogger("websockets.client")  # the default, not looked up per connection
_poll = getattr(select, "poll", None)


class WsClient(WsConnection):
    """The client end; :func:`connect` builds it and waits for the handshake. ``request`` is
    the upgrade request to write (the template's, with ``key``; empty when it was written
    already), and ``protocol`` is then
    already open: it frames what follows a 101 checked here. ``request`` is None when
    ``protocol`` holds the request (websockets built it, and decides the answer).
    ``max_size`` is the limit on a message."""

    protocol: ClientProtocol

    def __init__(self, protocol: ClientProtocol, request: bytes | None = None,
                 max_size: int | None = None, key: str = "") -> None:
        super().__init__(protocol)
        self._max_size = max_size
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request = request
        self._key = key
        self._head: bytearray | None = None if request is None else bytearray()
        self.manifest_answered = False
        """Whether the server took the ``Hud-Manifest`` request header (its reply is the
        first message)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._request:  # what the socket did not take before (see _client)
            self.transport.write(self._request)
        self._request = None

    def data_received(self, data: bytes | bytearray) -> None:
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fall_back()
            return
        headers = switched(self._head[:end], accept_value(self._key))
        if headers is None:
            self._fall_back()
            return
        self.manifest_answered = headers.get(_ANSWERED_KEY) == ["answered"]
        rest, self._head = bytes(self._head[end + 4:]), None
        self._frame_plainly(self._max_size)
        self.opened.set_result(None)
        if rest:  # frames the server sent right behind its 101
            super().data_received(rest)

    def _fall_back(self) -> None:
        """Hand what arrived to websockets, which parses the answer to the same request."""
        assert self._head is not None
        data, self._head = bytes(self._head), None
        opened = self.protocol
        opened.parser.close()  # dropped: its parser would keep it alive as cyclic garbage
        self.protocol = ClientProtocol(opened.uri, max_size=self._max_size, logger=_LOGGER)
        self.protocol.key = self._key  # the key our request sent
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._head is not None:
            self._fall_back()
        return super().eof_received()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame and hang up at once, without waiting for the server's close
        frame: a hud server ends the session's connection when it reads ours (and parks
        its task), so the round trip would tell us nothing. On asyncio's loop the frame and
        the end of our stream (a FIN) go out in this call, and the loop closes the socket
        on its next turn, as it always does once asked to (awaiting that took three more
        turns, each a few hundred Python instructions). uvloop sends the FIN only when its
        loop next runs, and TLS ends with a message of its own, so there this returns once
        the socket is closed, as before: a caller that blocks the loop right after must not
        leave the server waiting. If the server is not taking data, this waits
        :data:`CLOSE_TIMEOUT` at most for what is buffered to be written. Idempotent."""
        if self.transport is None or self.closed.done():
            return
        protocol = self.protocol
        if protocol.state is OPEN:
            if self._plain:  # what send_close does, without a Frame serialized for it
                close = Close(code, reason)
                payload = close.serialize()  # checks the code, as send_close does
                protocol.close_sent, protocol.state = close, State.CLOSING
                self.transport.write(wsframes.client_close(payload))
            else:
                protocol.send_close(code, reason)
                for data in protocol.data_to_send():  # no close timer: we close now
                    if data:
                        self.transport.write(data)
        transport = self.transport
        if isinstance(self._loop, asyncio.BaseEventLoop) and transport.can_write_eof() \
                and not transport.get_write_buffer_size() and not transport.is_closing():
            transport.write_eof()  # asyncio's own loop: the socket is shut down here and now
            transport.close()
            return
        transport.close()  # after what is buffered is written
        if transport.get_write_buffer_size():  # the server is not taking data
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
            except TimeoutError:
                transport.abort()
        await asyncio.shield(self.closed)

    def _handshake(self, event: Request | Response) -> None:
        if self.opened.done():
            return
        if self.protocol.handshake_exc is not None:
            self.opened.set_exception(self.protocol.handshake_exc)
            self.transport.close()
        else:
            assert isinstance(event, Response)
            self.manifest_answered = event.headers.get_all(MANIFEST_HEADER) == ["answered"]
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                exc or ConnectionError("connection closed during the WebSocket handshake")
            )
        super().connection_lost(exc)


async def _dial_numeric(host: str, port: int) -> socket.socket | None:
    """A connected TCP socket to a numeric ``host``, or None where the event loop had better
    dial itself: a name to resolve, or a connection refused at once (the loop's own attempt
    then reports it in its words). Dialling here lets :func:`connect` write the upgrade
    request before the loop has made a transport of the socket, so the server reads it
    while this side sets up. A non-blocking ``connect`` answers EINPROGRESS even where, as
    on loopback, the handshake completed within the call; one ``poll`` without waiting
    tells, which on asyncio's loop also saves two of its turns (waiting for the socket to be
    writable, then resuming the caller). A connection still on its way is waited for by the
    loop, as it would have been."""
    family = numeric_family(host)
    if family is None or _poll is None:  # (Windows has no poll: the loop dials there)
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code == errno.EINPROGRESS:
            poller = _poll()
            poller.register(sock, select.POLLOUT)
            if poller.poll(0):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            else:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
                code = 0
    except BaseException:
        sock.close()
        raise
    if code:
        sock.close()
        return None
    return sock


def _client(uri: WebSocketURI, headers: dict[str, str], max_size: int | None,
            sock: socket.socket | None = None) -> WsClient:
    """The connection's protocol: the template's upgrade request with an open
    ``ClientProtocol`` for what follows, or websockets' own request and handshake. Given
    ``sock``, connected and not yet a transport, the template's request is written to it
    first: the server reads it while this side builds the rest and the event loop makes
    the transport (what the socket does not take is written once it is one)."""
    if not uri.user_info:  # credentials in the URL: websockets encodes them
        key = generate_key()
        request = upgrade_request(uri.resource_name, _host(uri.host, uri.port, uri.secure),
                                  key, headers)
        if request is not None:
            if sock is not None:
                with contextlib.suppress(OSError):  # full, or gone: the transport says so
                    request = request[sock.send(request):]
            opened = ClientProtocol(uri, state=State.OPEN, max_size=max_size, logger=_LOGGER)
            return WsClient(opened, request, max_size, key)
    protocol = ClientProtocol(uri, max_size=max_size, logger=_LOGGER)
    built = protocol.connect()
    for name, value in headers.items():
        if name in built.headers:  # Headers is a multidict: replace, never add a second
            del built.headers[name]
        built.headers[name] = value
    protocol.send_request(built)
    return WsClient(protocol, None, max_size)


async def connect(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    max_size: int | None = 2**20,
    ssl: ssl_module.SSLContext | None = None,
    open_timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> WsClient:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``). Raises ``InvalidStatus`` when
    the server answers the handshake with an HTTP error, ``OSError`` when it cannot be
    reached, ``TimeoutError`` after ``open_timeout``. Given ``sock``, a connected stream
    socket to the server (a pool worker's Unix socket pair, a connection through a proxy),
    the WebSocket is opened over it (with TLS for ``wss://``), and ``url`` only names the
    resource and host the upgrade asks for; the connection owns ``sock`` from then on, and
    closes it on failure."""
    uri = _parse_uri(url)
    loop = asyncio.get_running_loop()
    if uri.secure and ssl is None:
        ssl = ssl_module.create_default_context()
    async with asyncio.timeout(open_timeout):
        if sock is None and not uri.secure:
            sock = await _dial_numeric(uri.host, uri.port)
        if sock is not None:
            try:
                # (the request is written ahead on a plain socket only: TLS comes first)
                made = _client(uri, headers or {}, max_size, None if uri.secure else sock)
                _, conn = await loop.create_connection(
                    lambda: made, sock=sock, ssl=ssl if uri.secure else None,
                    server_hostname=uri.host if uri.secure else None)
            except BaseException:
                sock.close()
                raise
        else:
            _, conn = await loop.create_connection(
                lambda: _client(uri, headers or {}, max_size), uri.host, uri.port,
                ssl=ssl if uri.secure else None,
            )
        try:
            await conn.opened
        except BaseException:
            conn.transport.abort()
            raise
    return conn
