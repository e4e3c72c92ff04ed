"""Serves an environment on one port: control sessions and capability tunnels over WebSocket.

Paths on the port:

* ``/v1/control``: a control session (JSON-RPC 2.0, one request or response per text frame);
* ``/v1/tunnel/{capability}``: a byte tunnel to a declared capability's daemon, and
  ``/v1/local``, local tunnels' Unix socket: both served by :mod:`hud.tunnelhost`.

When a token is set, every handshake must carry it (``Authorization: Bearer <token>``, or
``?token=`` in the URL); a server bound beyond loopback always has one. A handshake from a web
page (its ``Origin`` not in ``allowed_origins``) is refused, and so is a new connection beyond
``max_handshakes`` or ``max_connections``: each with an HTTP status and a JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from . import ports
from .address import CONTROL_PATH, is_loopback, numeric_family
from .control import ControlConnection
from .environment import Environment
from .forks import Forks
from .handlers import Host
from .memory import MemoryEnd, memory_pipe
from .nursery import Nursery
from .protocol.errors import InvalidRequest, LimitExceeded, Unauthorized
from .protocol.messages import PROTOCOL_VERSION, TemplateInfo
from .protocol.methods import METHODS
from .session import Registry
from .steps import cancel_caller
from .transport import Transport
from .tunnelhost import TunnelHost
from .upgrade import MANIFEST_HEADER, Fields, Head, plain_value
from .watchdog import Watchdog
from .wsserver import Refusal, Turns, WsServerConnection, reject

log = logging.getLogger(__name__)

UPGRADES_PER_TURN = 16
"""WebSocket upgrades answered per turn of the event loop (:class:`hud.wsserver.Turns`)."""


@dataclass(slots=True)
class ServerConfig:
    """How a server listens and what it tolerates. Every limit is per server."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    park_ttl: float = 600.0
    """Seconds a task survives without a connection before its cleanup runs."""
    call_timeout: float = 300.0
    """Seconds each template phase (setup, grade, cleanup) may take, unless it sets its own."""
    max_message_size: int = 16 * 1024 * 1024
    """Largest control frame answered normally; larger ones get a limit_exceeded error."""
    max_sessions: int = 100_000
    max_parked: int = 10_000
    backlog: int = 4096
    handshake_timeout: float = 10.0
    """Seconds a new connection may take to complete its WebSocket handshake."""
    enable_solutions: bool = False
    """Serve ``tasks.solve`` (reference solutions reveal answers: never on by default)."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins (``https://app.example:8443``) whose pages may connect. Browsers send
    ``Origin`` with every WebSocket handshake; hud's own clients send none. Any other origin
    is refused (403): a page the user visits must not drive a server on their machine."""
    max_handshakes: int = 2048
    """Connections still in their WebSocket handshake; one more is answered 503 unparsed and
    closed, so a flood of half-open connections cannot starve the sessions already open."""
    max_connections: int = 100_000
    """Connections in all (handshaking, control sessions, tunnels); one more gets 503."""
    keepalive: float | None = 20.0
    """Dead peers are found by TCP keepalive (no task or memory per connection). Seconds
    of silence before the kernel probes a peer (then 4 probes 5 s apart); a dead peer
    closes the connection, which parks its session. ``None``: off."""
    ping_interval: float | None = 30.0
    """Frozen peers (a stopped process, whose kernel still answers keepalive) are found by
    WebSocket pings on control connections: after this many seconds, a ping; no pong within
    ``ping_timeout`` seconds drops the connection, which parks its session. ``None``: off."""
    ping_timeout: float = 30.0
    max_forks: int = 0
    """Branches one ``tasks.fork`` may make (:mod:`hud.forks`). 0: the method is not served
    (declined), the default: forking copies the whole process, which suits only a server
    whose process serves one task (a pool worker, a ``hud serve`` per rollout)."""
    local_tunnels: bool = True
    """Offer tunnels handed over a Unix socket to clients on this host running as this
    user (:mod:`hud.localtunnel`): one hop fewer than a bare tunnel. The same answer tells a
    client whether it shares this server's network namespace (then it dials a daemon on
    loopback at its own address); off, every client tunnels every capability."""
    interrupt_blocking: float | None = None
    """Seconds a template may hold the event loop in one go (a ``time.sleep``, a synchronous
    call) before it is interrupted with a template error, so other sessions are served
    (:mod:`hud.watchdog`; main thread only). ``None``: never (``hud serve`` sets 10 s)."""


class Server:
    """One environment on one port. Use as ``async with Server(env, config) as server:``.

    Entering runs the environment's initialize hooks, then binds; :attr:`url` is then the
    address to give clients. Leaving (or :meth:`aclose`) stops listening, cancels requests in
    flight, runs every open task's cleanup, then the environment's shutdown hooks.
    """

    def __init__(self, env: Environment, config: ServerConfig | None = None) -> None:
        self.env = env
        self.config = config or ServerConfig()
        self.token = self.config.token
        if self.token is None and not is_loopback(self.config.host):
            self.token = secrets.token_urlsafe(24)
            log.warning(
                "listening beyond loopback on %s needs a token; generated one: %s",
                self.config.host,
                self.token,
            )
        self.registry = Registry(
            park_ttl=self.config.park_ttl,
            max_sessions=self.config.max_sessions,
            max_parked=self.config.max_parked,
        )
        self.forks = Forks(self.config) if self.config.max_forks > 0 else None
        self._tasks = Nursery("hud-server")  # owns every task of the server
        self.host = Host(
            env=env,
            registry=self.registry,
            call_timeout=self.config.call_timeout,
            max_message_size=self.config.max_message_size,
            tasks=self._tasks,
            templates=[tpl.info() for tpl in env.templates.values()],
            declined=self._declined(),
            forks=self.forks,
        )
        self.connections: set[ControlConnection] = set()
        self._origins = {origin.lower() for origin in self.config.allowed_origins}
        self._handshaking: set[WsServerConnection] = set()  # accepted, not yet open
        self._turns = Turns(UPGRADES_PER_TURN)
        self._listener: asyncio.Server | None = None
        self._sockets: set[WsServerConnection] = set()  # every open WebSocket
        self.tunnels = TunnelHost(env, self.token, self._tasks, self._over_limit)
        self._sweeper: asyncio.Task[None] | None = None
        self._watchdog: Watchdog | None = None
        self._closing = False

    def _declined(self) -> dict[str, str]:
        """The optional methods this server's config leaves unserved, with the reason."""
        served = {"tasks.solve": self.config.enable_solutions,
                  "tasks.fork": self.config.max_forks > 0}
        return {name: m.optional for name, m in METHODS.items()
                if m.optional and not served.get(name, False)}

    @property
    def templates(self) -> list[TemplateInfo]:
        return self.host.templates

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self, *, listen: bool = True) -> None:
        """Run the initialize hooks, then bind (unless ``listen=False``: in-memory use only).

        Every task the server starts from here on (connections, tunnels, the park sweeper)
        belongs to one task group, run by one task that :meth:`aclose` waits for."""
        await self.env.start()
        try:
            if listen:
                self._listener = await self._listen()
                if self.config.keepalive:  # accepted sockets inherit these options (Linux)
                    for sock in self._listener.sockets:
                        _probe_when_silent(sock, self.config.keepalive)
        except BaseException:
            await self.env.stop()
            raise
        await self._tasks.open()
        self._sweeper = self._tasks.spawn(self._sweep(), name="hud-park-sweeper")
        if listen and self.config.local_tunnels:
            self.tunnels.offer_local()
        if self.config.interrupt_blocking:
            self._watchdog = Watchdog(self.config.interrupt_blocking)
            if not self._watchdog.start():
                log.warning("interrupt_blocking needs the server's loop in the main thread: "
                            "a template that blocks the loop will not be interrupted")
        if listen:
            ports.claim(self.port)  # the agent's browser must never reach the control port
            log.info("serving %r on %s", self.env.name, self.url)

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        host, port, backlog = self.config.host, self.config.port, self.config.backlog
        family = numeric_family(host)
        if family is None:  # a name, or "" (every interface): the loop resolves it
            return await loop.create_server(self._accept, host, port, backlog=backlog,
                                            reuse_address=True)
        # A numeric address needs no resolver: binding it here spares uvloop's, which
        # starts four threads in a fresh process (each pool worker is one).
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return await loop.create_server(self._accept, sock=sock, backlog=backlog)

    @property
    def listening(self) -> bool:
        """Whether the server has a port (``start(listen=False)`` makes none)."""
        return self._listener is not None

    @property
    def port(self) -> int:
        assert self._listener is not None, "the server is not started"
        return int(self._listener.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}"

    def connect_memory(self) -> MemoryEnd:
        """A control connection without sockets: the returned end speaks to this server.

        The connection is owned by the server and closed by :meth:`aclose`.
        """
        client_end, server_end = memory_pipe()
        self._serve_control(server_end)
        return client_end

    async def adopt(self, sock: socket.socket) -> asyncio.Future[None]:
        """Serve ``sock``, a connected stream socket that nothing else reads (a pool
        worker's end of the socket pair its rollout's client holds), as a connection
        accepted on the port: the same upgrade, token check and limits. Returns a future
        that is done once that connection has ended."""
        loop = asyncio.get_running_loop()
        # no handshake timeout: the pool holds the other end until a rollout needs it
        _, protocol = await loop.connect_accepted_socket(lambda: self._accept(waits=True),
                                                         sock=sock)
        if isinstance(protocol, WsServerConnection):
            return protocol.closed
        ended = loop.create_future()  # refused past a limit: it ends with its answer
        ended.set_result(None)
        return ended

    async def serve_forever(self) -> None:
        assert self._listener is not None, "the server is not started"
        await self._listener.serve_forever()

    async def aclose(self, *, code: int = 1001, reason: str = "server shutting down") -> None:
        """Shut down: stop listening, cancel requests in flight, close every connection
        (all at once: an unresponsive client costs its close timeout, not everyone's), run
        every open task's cleanup (all at once), then the shutdown hooks. Idempotent.

        Clients read ``code`` and ``reason`` in the close frame (1012, "service restart",
        when ``hud dev`` reloads the environment)."""
        if self._closing:
            return
        self._closing = True
        if self._listener is not None:
            ports.release(self.port)  # still bound: aclose runs once
            self._listener.close()
        conns = list(self.connections)
        for conn in conns:
            conn.cancel_soon(reason)
        for ws in list(self._sockets):  # tunnels (control sockets close below)
            ws.close_soon(code, reason)
        self.tunnels.close()
        await asyncio.gather(
            *(conn.transport.close(code, reason) for conn in conns),
            *(ws.close() for ws in list(self._sockets)),
            return_exceptions=True,
        )
        if self._sweeper is not None:
            cancel_caller(self._sweeper, reason)  # it may be running a template's cleanup
        await self._tasks.aclose(cancel=False)  # the connections finish accepted work
        if self.forks is not None:
            await self.forks.aclose()
        if self._watchdog is not None:
            self._watchdog.stop()
        runners = []
        for session in self.registry:
            self.registry.remove(session)
            runner = session.take_runner()
            if runner is not None:
                runners.append(runner.aclose())
        await asyncio.gather(*runners, return_exceptions=True)
        await self.env.stop()
        log.info("stopped %r", self.env.name)

    async def _sweep(self) -> None:
        interval = max(min(self.config.park_ttl / 4, 5.0), 0.01)
        while True:
            await asyncio.sleep(interval)
            for runner in self.registry.expire():
                log.info("parked task %r expired; running its cleanup", runner.template_id)
                await runner.aclose()

    # -- handshake ------------------------------------------------------------------------

    def _check_request(self, connection: WsServerConnection,
                       request: Request | Head) -> Response | None:
        refused = self._check_headers(connection, request.headers)
        if refused is not None:
            return refused
        parts = urlsplit(request.path)
        if self.token is not None and not self._authorized(request.headers, parts.query):
            err = Unauthorized("missing or wrong token: pass --token or set HUD_TOKEN")
            return reject(connection, 401, err.code, err.message)
        if parts.path == CONTROL_PATH:
            first = request.headers.get(MANIFEST_HEADER)  # once: checked above
            if first is not None and plain_value(first):  # else ignored: the client sends it
                connection.first = first
            return None
        if self.tunnels.serves(parts.path):
            return self.tunnels.check_request(connection, request, parts.path)
        return reject(connection, 404, -32601,
                      f"no such path {parts.path!r}: control sessions are on {CONTROL_PATH}")

    def _check_headers(self, connection: WsServerConnection,
                       headers: Headers | Fields) -> Response | None:
        """400 for a repeated ``Authorization``, ``Origin`` or ``Hud-Manifest`` (which one
        would count?); 403 for an ``Origin`` not allowed: only browsers send one, for the page
        that opened it."""
        for name in ("Authorization", "Origin", MANIFEST_HEADER):
            if (count := len(headers.get_all(name))) > 1:
                return reject(connection, 400, InvalidRequest.code,
                              f"the handshake carries {count} {name} headers: send one")
        origin = headers.get("Origin")
        if origin is not None and origin.lower() not in self._origins:
            err = Unauthorized(f"connections from web pages are refused (Origin {origin!r}); "
                               "allow this origin with --allow-origin (ServerConfig."
                               "allowed_origins)")
            return reject(connection, 403, err.code, err.message)
        return None

    def _authorized(self, headers: Headers | Fields, query: str) -> bool:
        assert self.token is not None
        supplied = headers.get("Authorization", "")
        if supplied.startswith("Bearer "):
            supplied = supplied.removeprefix("Bearer ")
        else:
            supplied = (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(supplied.encode(), self.token.encode())

    # -- connections ----------------------------------------------------------------------

    def _accept(self, *, waits: bool = False) -> asyncio.Protocol:
        """The protocol for a new connection: a WebSocket, or a refusal past a limit.
        ``waits``: its handshake may come any time (no ``handshake_timeout``)."""
        refused = self._over_limit()
        if refused is not None:
            return Refusal(refused)
        ws = WsServerConnection(
            self._check_request,
            self._opened,
            self._lost,
            max_size=max(4 * self.config.max_message_size, 1 << 20),
            server_header=f"hud/{PROTOCOL_VERSION}",
            open_timeout=None if waits else self.config.handshake_timeout,
            turns=self._turns,
            loop=self._tasks.loop,
        )
        self._handshaking.add(ws)
        return ws

    def _over_limit(self) -> LimitExceeded | None:
        config = self.config
        if len(self._handshaking) >= config.max_handshakes:
            return LimitExceeded(
                f"too many connections in their handshake (limit {config.max_handshakes}): "
                "try again shortly", {"limit": "max_handshakes", "value": config.max_handshakes})
        if len(self._handshaking) + len(self._sockets) + len(self.tunnels.bare) \
                >= config.max_connections:
            return LimitExceeded(
                f"too many connections (limit {config.max_connections}): try again later",
                {"limit": "max_connections", "value": config.max_connections})
        return None

    def _opened(self, ws: WsServerConnection, target: str) -> None:
        self._handshaking.discard(ws)
        if self.tunnels.take_bare(ws, target):
            return
        self._sockets.add(ws)
        if urlsplit(target).path == CONTROL_PATH:
            if self.config.ping_interval:
                ws.watch_liveness(self.config.ping_interval, self.config.ping_timeout)
            self._serve_control(ws)
        else:
            self.tunnels.link(ws, target)

    def _lost(self, ws: WsServerConnection) -> None:
        self._handshaking.discard(ws)
        self._sockets.discard(ws)

    def _serve_control(self, transport: Transport) -> None:
        """Serve a control connection (it runs from the transport's callbacks, and its calls
        in the server's nursery); once shutting down, close instead."""
        if self._closing or not self._tasks.accepting:
            transport.close_soon(1001, "server shutting down")
            return
        conn = ControlConnection(self.host, transport, self.connections.discard)
        self.connections.add(conn)
        first = None
        if isinstance(transport, WsServerConnection):  # the manifest sent in the upgrade
            first, transport.first = transport.first, None
        conn.open(first)


def _probe_when_silent(sock: socket.socket | Any, idle: float) -> None:
    """Turn on TCP keepalive for a socket (Linux names the timings)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), int(value))
