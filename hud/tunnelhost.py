"""The server's side of capability tunnels: which handshakes open one, and running them.

Paths on the port (:mod:`hud.server` serves control sessions on the rest):

* ``/v1/tunnel/{capability}``: a byte tunnel to a declared capability's daemon, over a
  WebSocket (:func:`~hud.tunnel.link_daemon`) or, where the client asks for ``hud-tunnel/1``
  and the platform can splice, bare (:class:`~hud.tunnel.BareTunnel`);
* ``/v1/local``: the Unix socket's path for local tunnels (:mod:`hud.localtunnel`) and the
  server's id, to a loopback peer of a server that offers them; on that
  socket, a client's socket is spliced to the daemon, or the daemon's connection is handed
  to the client (:class:`~hud.tunnel.HandedTunnel`).

A bare, local or handed tunnel leaves the WebSocket machinery: the :class:`TunnelHost`
holds it until it ends, and closes it when the server shuts down.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .address import TUNNEL_PREFIX, is_loopback
from .localtunnel import ID_HEADER, LOCAL_PATH, LocalTunnels
from .tunnel import (
    RAW_UPGRADE,
    SPLICE_AVAILABLE,
    BareTunnel,
    HandedTunnel,
    link_daemon,
    take_socket,
)
from .upgrade import Head
from .wsserver import WsServerConnection, reject

if TYPE_CHECKING:
    from .environment import Environment
    from .nursery import Nursery
    from .protocol.errors import LimitExceeded

log = logging.getLogger(__name__)


class TunnelHost:
    """A server's tunnels to ``env``'s capabilities, each run in the server's nursery
    ``tasks``. ``over_limit()`` says why one more connection may not open (None: it may).

    The server routes the handshake of a tunnel path to :meth:`check_request`, hands each
    opened connection to :meth:`take_bare` (then to :meth:`link` when it stays a WebSocket),
    and calls :meth:`close` as it shuts down."""

    def __init__(self, env: Environment, token: str | None, tasks: Nursery,
                 over_limit: Callable[[], LimitExceeded | None]) -> None:
        self.env = env
        self.token = token
        self.bare: set[BareTunnel | HandedTunnel] = set()  # bare, local and handed ones
        self.local: LocalTunnels | None = None
        self._tasks = tasks
        self._over_limit = over_limit
        self._pending: set[WsServerConnection] = set()  # answered hud-tunnel/1
        self._closing = False

    def offer_local(self) -> None:
        """Offer local tunnels (where the platform can splice)."""
        if SPLICE_AVAILABLE:
            # its socket is made at the first ask: most servers' clients open no tunnel
            self.local = LocalTunnels(self.token, self._local_refusal, self._open_local,
                                      self._open_handed,
                                      lambda work: self._tasks.spawn(work, guarded=True))

    def close(self) -> None:
        """Stop offering local tunnels and close every bare and local one."""
        self._closing = True
        if self.local is not None:
            self.local.close()
        for tunnel in list(self.bare):
            tunnel.close()

    @staticmethod
    def serves(path: str) -> bool:
        return path == LOCAL_PATH or path.startswith(TUNNEL_PREFIX)

    # -- handshake ------------------------------------------------------------------------

    def check_request(self, connection: WsServerConnection, request: Request | Head,
                      path: str) -> Response | None:
        """The answer to an authorized handshake on a path this host :meth:`serves`: None
        lets the WebSocket handshake go on."""
        if path == LOCAL_PATH:
            return self._local_answer(connection)
        name = unquote(path.removeprefix(TUNNEL_PREFIX))
        names = [b.name for b in self.env.capabilities]
        if name in names:
            return self._bare_upgrade(connection, request)
        return reject(connection, 404, -32602,
                      f"no capability {name!r} is declared (declared: {names})")

    def _bare_upgrade(self, connection: WsServerConnection,
                      request: Request | Head) -> Response | None:
        """A 101 to ``hud-tunnel/1`` for a client that asks for a bare tunnel (and a
        platform that can splice); None, the WebSocket handshake, for any other."""
        asked = [token.strip().lower() for value in request.headers.get_all("Upgrade")
                 for token in value.split(",")]
        if not SPLICE_AVAILABLE or RAW_UPGRADE not in asked:
            return None
        self._pending.add(connection)
        return Response(101, "Switching Protocols",
                        Headers([("Upgrade", RAW_UPGRADE), ("Connection", "Upgrade")]))

    def _local_answer(self, connection: WsServerConnection) -> Response:
        """``GET /v1/local``: the Unix socket's path for local tunnels, to a loopback peer of
        a server that offers them (to any peer where the socket is in a directory mounted
        from the client's side); 404 otherwise (what a server without them answers)."""
        peer = connection.transport.get_extra_info("peername") if connection.transport else None
        local = self.local
        if local is not None and local.path is None and not self._closing and not local.start():
            self.local = local = None  # cannot listen here: no use trying again
        if local is None or local.path is None \
                or not (local.mounted or (peer and is_loopback(peer[0]))):
            return reject(connection, 404, -32601, "no local tunnels here")
        response = connection.respond(200, local.path)
        response.headers[ID_HEADER] = local.id
        return response

    def _local_refusal(self, name: str) -> str | None:
        """Why a local tunnel to ``name`` may not open: the checks of the handshake."""
        names = [b.name for b in self.env.capabilities]
        if name not in names:
            return f"no capability {name!r} is declared (declared: {names})"
        refused = self._over_limit()
        return None if refused is None else refused.message

    # -- tunnels --------------------------------------------------------------------------

    def take_bare(self, ws: WsServerConnection, target: str) -> bool:
        """Take ``ws`` over as a bare tunnel if its handshake was answered ``hud-tunnel/1``
        (True: the WebSocket object is dropped); False for any other."""
        if ws not in self._pending:
            return False
        self._pending.discard(ws)
        # from here on the socket is the tunnel's: the WebSocket object is dropped
        self._adopt(BareTunnel(take_socket(ws.transport)), _capability(target))
        return True

    def link(self, ws: WsServerConnection, target: str) -> None:
        """Link WebSocket ``ws`` (opened on ``target``) to its daemon; once shutting down,
        close it instead."""
        if self._closing or not self._tasks.accepting:
            ws.close_soon(1001, "server shutting down")
            return
        self._tasks.spawn(self._tunnel(ws, _capability(target)), guarded=True)

    def _open_local(self, reader: socket.socket, control: socket.socket, name: str,
                    early: bytes) -> None:
        self._adopt(BareTunnel(reader, control), name, early)

    def _open_handed(self, control: socket.socket, name: str) -> None:
        self._adopt(HandedTunnel(control), name)

    def _adopt(self, tunnel: BareTunnel | HandedTunnel, name: str, early: bytes = b"") -> None:
        if self._closing or not self._tasks.accepting:
            tunnel.close()
            return
        self.bare.add(tunnel)
        tunnel.closed.add_done_callback(lambda _: self.bare.discard(tunnel))
        self._tasks.spawn(self._bare_tunnel(tunnel, name, early), guarded=True)

    async def _bare_tunnel(self, tunnel: BareTunnel | HandedTunnel, name: str,
                           early: bytes) -> None:
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


def _capability(target: str) -> str:
    """The capability a tunnel's request target names."""
    return unquote(urlsplit(target).path.removeprefix(TUNNEL_PREFIX))
