"""Serves an environment on one port: control sessions and capability tunnels over WebSocket.

Paths on the port:

* ``/v1/control``: a control session (JSON-RPC 2.0, one request or response per text frame);
* ``/v1/tunnel/{capability}``: a byte tunnel to a declared capability's daemon.

When a token is set, every handshake must carry it (``Authorization: Bearer <token>``, or
``?token=`` in the URL); a server bound beyond loopback always has one. A handshake from a web
page (its ``Origin`` not in ``allowed_origins``) is refused, and so is a new connection beyond
``max_handshakes`` or ``max_connections``: each with an HTTP status and a JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from . import ports
from .address import CONTROL_PATH, TUNNEL_PREFIX
from .control import ControlConnection
from .environment import Environment
from .forks import Forks
from .handlers import Host
from .localtunnel import LOCAL_PATH, LocalTunnels
from .memory import MemoryEnd, memory_pipe
from .nursery import Nursery
from .protocol import codec
from .protocol.errors import InvalidRequest, LimitExceeded, Unauthorized
from .protocol.messages import PROTOCOL_VERSION, TemplateInfo
from .protocol.methods import METHODS
from .session import Registry
from .steps import cancel_caller
from .transport import Transport
from .tunnel import RAW_UPGRADE, SPLICE_AVAILABLE, BareTunnel, link_daemon, take_socket
from .watchdog import Watchdog
from .wsserver import Turns, WsServerConnection

log = logging.getLogger(__name__)

LINGER = 1.0
"""Seconds a refused connection may take to read its 503 and hang up."""
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
    user (:mod:`hud.localtunnel`): one hop fewer than a bare tunnel."""
    interrupt_blocking: float | None = None
    """Seconds a template may hold the event loop in one go (a ``time.sleep``, a synchronous
    call) before it is interrupted with a template error, so other sessions are served
    (:mod:`hud.watchdog`; main thread only). ``None``: never (``hud serve`` sets 10 s)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self._bare_pending: set[WsServerConnection] = set()  # answered hud-tunnel/1
        self._bare: set[BareTunnel] = set()  # bare and local tunnels (see hud.tunnel)
        self._local: LocalTunnels | None = None
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
        if listen and self.config.local_tunnels and SPLICE_AVAILABLE:
            # its socket is made at the first ask: most servers' clients open no tunnel
            self._local = LocalTunnels(self.token, self._local_refusal, self._open_local,
                                       lambda work: self._tasks.spawn(work, guarded=True))
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
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a name, or "" (every interface): the loop resolves it
            return await loop.create_server(self._accept, host, port, backlog=backlog,
                                            reuse_address=True)
        # A numeric address needs no resolver: binding it here spares uvloop's, which
        # starts four threads in a fresh process (each pool worker is one).
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
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
        if self._local is not None:
            self._local.close()
        conns = list(self.connections)
        for conn in conns:
            conn.cancel_soon(reason)
        for ws in list(self._sockets):  # tunnels (control sockets close below)
            ws.close_soon(code, reason)
        for tunnel in list(self._bare):
            tunnel.close()
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

    def _spawn(self, work: Coroutine[Any, Any, None], transport: Transport) -> None:
        """Run ``work`` in the server's nursery; once shutting down, close instead."""
        if self._closing or not self._tasks.accepting:
            work.close()
            transport.close_soon(1001, "server shutting down")
            return
        self._tasks.spawn(work, guarded=True)

    async def _sweep(self) -> None:
        interval = max(min(self.config.park_ttl / 4, 5.0), 0.01)
        while True:
            await asyncio.sleep(interval)
            for runner in self.registry.expire():
                log.info("parked task %r expired; running its cleanup", runner.template_id)
                await runner.aclose()

    # -- handshake ------------------------------------------------------------------------

    def _check_request(self, connection: WsServerConnection, request: Request) -> Response | None:
        refused = self._check_headers(connection, request.headers)
        if refused is not None:
            return refused
        parts = urlsplit(request.path)
        if self.token is not None and not self._authorized(request.headers, parts.query):
            err = Unauthorized("missing or wrong token: pass --token or set HUD_TOKEN")
            return _reject(connection, 401, err.code, err.message)
        if parts.path == CONTROL_PATH:
            return None
        if parts.path == LOCAL_PATH:
            return self._local_answer(connection)
        if parts.path.startswith(TUNNEL_PREFIX):
            name = unquote(parts.path.removeprefix(TUNNEL_PREFIX))
            names = [b.name for b in self.env.capabilities]
            if name in names:
                return self._bare_upgrade(connection, request)
            return _reject(connection, 404, -32602,
                           f"no capability {name!r} is declared (declared: {names})")
        return _reject(connection, 404, -32601,
                       f"no such path {parts.path!r}: control sessions are on {CONTROL_PATH}")

    def _bare_upgrade(self, connection: WsServerConnection, request: Request) -> Response | None:
        """A 101 to ``hud-tunnel/1`` for a client that asks for a bare tunnel (and a
        platform that can splice); None, the WebSocket handshake, for any other."""
        asked = [token.strip().lower() for value in request.headers.get_all("Upgrade")
                 for token in value.split(",")]
        if not SPLICE_AVAILABLE or RAW_UPGRADE not in asked:
            return None
        self._bare_pending.add(connection)
        return Response(101, "Switching Protocols",
                        Headers([("Upgrade", RAW_UPGRADE), ("Connection", "Upgrade")]))

    def _local_answer(self, connection: WsServerConnection) -> Response:
        """``GET /v1/local``: the Unix socket's path for local tunnels, to a loopback peer of
        a server that offers them; 404 otherwise (what a server without them answers)."""
        peer = connection.transport.get_extra_info("peername") if connection.transport else None
        local = self._local
        if local is not None and local.path is None and not self._closing and not local.start():
            self._local = local = None  # cannot listen here: no use trying again
        if local is None or local.path is None or not peer or not is_loopback(peer[0]):
            return _reject(connection, 404, -32601, "no local tunnels here")
        return connection.respond(200, local.path)

    def _check_headers(self, connection: WsServerConnection, headers: Headers) -> Response | None:
        """400 for a repeated ``Authorization`` or ``Origin`` (which one would count?); 403
        for an ``Origin`` not allowed: only browsers send one, for the page that opened it."""
        for name in ("Authorization", "Origin"):
            if (count := len(headers.get_all(name))) > 1:
                return _reject(connection, 400, InvalidRequest.code,
                               f"the handshake carries {count} {name} headers: send one")
        origin = headers.get("Origin")
        if origin is not None and origin.lower() not in self._origins:
            err = Unauthorized(f"connections from web pages are refused (Origin {origin!r}); "
                               "allow this origin with --allow-origin (ServerConfig."
                               "allowed_origins)")
            return _reject(connection, 403, err.code, err.message)
        return None

    def _authorized(self, headers: Headers, query: str) -> bool:
        assert self.token is not None
        supplied = headers.get("Authorization", "")
        if supplied.startswith("Bearer "):
            supplied = supplied.removeprefix("Bearer ")
        else:
            supplied = (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(supplied.encode(), self.token.encode())

    # -- connections ----------------------------------------------------------------------

    def _accept(self) -> asyncio.Protocol:
        """The protocol for a new connection: a WebSocket, or a refusal past a limit."""
        refused = self._over_limit()
        if refused is not None:
            return _Refusal(refused)
        ws = WsServerConnection(
            self._check_request,
            self._opened,
            self._lost,
            max_size=max(4 * self.config.max_message_size, 1 << 20),
            server_header=f"hud/{PROTOCOL_VERSION}",
            open_timeout=self.config.handshake_timeout,
            turns=self._turns,
        )
        self._handshaking.add(ws)
        return ws

    def _over_limit(self) -> LimitExceeded | None:
        config = self.config
        if len(self._handshaking) >= config.max_handshakes:
            return LimitExceeded(
                f"too many connections in their handshake (limit {config.max_handshakes}): "
                "try again shortly", {"limit": "max_handshakes", "value": config.max_handshakes})
        if len(self._handshaking) + len(self._sockets) + len(self._bare) \
                >= config.max_connections:
            return LimitExceeded(
                f"too many connections (limit {config.max_connections}): try again later",
                {"limit": "max_connections", "value": config.max_connections})
        return None

    def _opened(self, ws: WsServerConnection, target: str) -> None:
        self._handshaking.discard(ws)
        if ws in self._bare_pending:
            self._bare_pending.discard(ws)
            self._open_bare(ws, unquote(urlsplit(target).path.removeprefix(TUNNEL_PREFIX)))
            return
        self._sockets.add(ws)
        path = urlsplit(target).path
        if path == CONTROL_PATH:
            if self.config.ping_interval:
                ws.watch_liveness(self.config.ping_interval, self.config.ping_timeout)
            self._serve_control(ws)
        else:
            self._spawn(self._tunnel(ws, unquote(path.removeprefix(TUNNEL_PREFIX))), ws)

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
        conn.open()

    def _open_bare(self, ws: WsServerConnection, name: str) -> None:
        # from here on the socket is the tunnel's: the WebSocket object is dropped
        self._adopt(BareTunnel(take_socket(ws.transport)), name)

    def _open_local(self, reader: socket.socket, control: socket.socket, name: str,
                    early: bytes) -> None:
        self._adopt(BareTunnel(reader, control), name, early)

    def _local_refusal(self, name: str) -> str | None:
        """Why a local tunnel to ``name`` may not open: the checks of the handshake."""
        names = [b.name for b in self.env.capabilities]
        if name not in names:
            return f"no capability {name!r} is declared (declared: {names})"
        refused = self._over_limit()
        return None if refused is None else refused.message

    def _adopt(self, tunnel: BareTunnel, name: str, early: bytes = b"") -> None:
        if self._closing or not self._tasks.accepting:
            tunnel.close()
            return
        self._bare.add(tunnel)
        tunnel.closed.add_done_callback(lambda _: self._bare.discard(tunnel))
        self._tasks.spawn(self._bare_tunnel(tunnel, name, early), guarded=True)

    async def _bare_tunnel(self, tunnel: BareTunnel, name: str, early: bytes) -> None:
        try:
            await tunnel.run(self.env.capability(name), early)
        except OSError as exc:
            log.warning("tunnel to %r failed: %s", name, exc)
        except Exception:  # a bug in hud: this tunnel ends, the server serves on
            log.exception("tunnel to %r failed", name)

    async def _tunnel(self, ws: WsServerConnection, name: str) -> None:
        try:
            await link_daemon(ws, self.env.capability(name))
        except OSError as exc:
            log.warning("tunnel to %r failed: %s", name, exc)
            await ws.close(1011, str(exc)[:120])
        except Exception:  # a bug in hud: this tunnel ends, the server serves on
            log.exception("tunnel to %r failed", name)
            await ws.close(1011, "internal error")


def _probe_when_silent(sock: socket.socket | Any, idle: float) -> None:
    """Turn on TCP keepalive for a socket (Linux names the timings)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), int(value))


class _Refusal(asyncio.Protocol):
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


def _reject(connection: WsServerConnection, status: int, code: int, message: str) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    response = connection.respond(status, codec.encode(body).decode() + "\n")
    del response.headers["Content-Type"]  # a multidict: replace the plain-text one
    response.headers["Content-Type"] = "application/json"
    return response
