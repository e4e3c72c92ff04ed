"""The client side of capability tunnels: a loopback port per binding, spliced to its daemon.

A :class:`Forwarder` listens on ``127.0.0.1:0``. Each TCP connection accepted there (from an
SSH client, an MCP client, a browser driver, a VNC viewer...) opens its own tunnel to
``/v1/tunnel/{name}`` on the environment's port, with the control connection's token. Over
``ws://`` it asks for a bare tunnel (``Upgrade: hud-tunnel/1``): the bytes then go as they
are, spliced between the two sockets in the kernel (:class:`~hud.tunnel.Splice`). A server
that does not offer one answers 400 or 426, and the forwarder falls back to a WebSocket whose
binary frames carry the bytes, as it does over ``wss://``. Where the server offers local
tunnels (a client on its host, as its user: :mod:`hud.localtunnel`), the forwarder instead
hands the accepted socket itself to the server, which splices it to the daemon: one hop
and one relay fewer (:mod:`hud.splicedtunnel` opens bare and local tunnels). When either
side closes, the other is closed. An opener that can run its protocol client on a socket
(``ssh``, ``rfb``, ``openpi``) skips the port altogether: :func:`dial_direct` has the server
hand over the daemon's connection itself, so its bytes cross no relay. And a client in the
server's own network namespace needs no forwarder for a daemon on a loopback address: its
binding is the daemon's own address (:class:`Tunnels`).

When the environment cannot reach the daemon it accepts the tunnel, then closes it with code
1011 and a reason naming the capability (a bare tunnel answers ``error REASON`` instead of
``ok``). The forwarder keeps that reason
(:attr:`Forwarder.errors`) so that whoever opened the capability can raise it
(:class:`CapabilityUnavailable`) instead of a protocol client's "connection lost".
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus

from . import capability, localtunnel, ports, wsclient
from . import proxy as proxies
from .address import TUNNEL_PREFIX, is_loopback, numeric_family
from .errors import CapabilityUnavailable, HudConnectionError
from .nursery import Nursery
from .protocol.messages import Binding
from .splicedtunnel import Lifelines, hand_over, open_bare, splice_bare
from .tunnel import (
    DIAL_TIMEOUT,
    SPLICE_AVAILABLE,
    Splice,
    TcpEnd,
    daemon_address,
    dial,
    unreachable,
)
from .wsconn import WsConnection

log = logging.getLogger(__name__)

T = TypeVar("T")


def resolve_binding(capabilities: Iterable[Binding], ref: str) -> Binding:
    """The binding ``ref`` names: a capability name, a protocol id (``ssh/2``) or a protocol
    family (``ssh``), tried in that order. Raises ``KeyError`` naming the candidates when
    ``ref`` matches none or more than one."""
    bindings = list(capabilities)
    for matches in (
        [b for b in bindings if b.name == ref],
        [b for b in bindings if b.protocol == ref],
        [b for b in bindings if b.protocol.split("/", 1)[0] == ref],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"{b.name} ({b.protocol})" for b in matches)
            raise KeyError(f"{ref!r} is ambiguous: it matches {names}; name one")
    declared = ", ".join(f"{b.name} ({b.protocol})" for b in bindings) or "none"
    raise KeyError(f"no capability matches {ref!r} (declared: {declared})")


def tunnel_url(control_url: str, name: str) -> str:
    """``ws://host:port/v1/control?q`` → ``ws://host:port/v1/tunnel/{name}?q`` (the query may
    carry the token)."""
    parts = urlsplit(control_url)
    path = TUNNEL_PREFIX + quote(name, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def local_url(binding: Binding, port: int) -> str:
    """The binding's URL with its host and port replaced by ``127.0.0.1:port``."""
    url = binding.url if "://" in binding.url else f"tcp://{binding.url}"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query,
                       parts.fragment))


class Handed:
    """A connection to a capability's daemon that the environment's server handed over
    (``dial``, :mod:`hud.localtunnel`): :attr:`socket`, connected and non-blocking, and its
    lifeline; or, where nothing can be handed over, a bare tunnel's own connection to the
    server (no lifeline: the socket is the tunnel). :meth:`close` closes both, and the
    server then shuts the connection down; a protocol client that takes :attr:`socket`
    (``asyncssh.connect(sock=...)``) may close the socket itself first. Idempotent."""

    __slots__ = ("_lifeline", "_owner", "socket")

    def __init__(self, sock: socket.socket, lifeline: socket.socket | None,
                 owner: set[Handed]) -> None:
        self.socket = sock
        self._lifeline = lifeline
        self._owner = owner
        owner.add(self)

    def close(self) -> None:
        self._owner.discard(self)
        self.socket.close()
        if self._lifeline is not None:
            self._lifeline.close()


_forwarding: dict[int, Forwarder] = {}
"""This process's forwarders by loopback port: what :func:`dial_direct` looks a binding up in."""


async def dial_direct(binding: Binding) -> Handed | None:
    """For a capability's client opener, where ``binding`` points at a forwarder of this
    process (``Client.binding``, ``Client.open``): a connection straight to the daemon,
    where the environment's server can hand the daemon's connection over (a local server,
    as this user: its bytes then cross no tunnel at all); else a bare tunnel's own socket
    (a server on another machine or in a container: its bytes cross the server's relay
    alone, not the forwarder's as well). None where there is neither (a server that offers
    no bare tunnels, ``wss://``): connect to ``binding.url`` as usual. Raises
    :class:`CapabilityUnavailable` when the server refuses (it cannot reach the daemon,
    say). Close what it returns when done."""
    url = binding.url if "://" in binding.url else f"tcp://{binding.url}"
    parts = urlsplit(url)
    forwarder = _forwarding.get(parts.port or 0) if parts.hostname == "127.0.0.1" else None
    if forwarder is None or forwarder.name != binding.name:
        return None
    return await forwarder.dial()


async def connect_direct(binding: Binding,
                         connect: Callable[[socket.socket | None], Awaitable[T]],
                         ) -> tuple[T, Handed | None]:
    """What an opener calls: ``connect(sock)`` on the daemon's connection handed over
    (:func:`dial_direct`), or ``connect(None)`` where there is none (then it dials
    ``binding.url``). Returns its result and the :class:`Handed` to close once the client
    is closed (None without one); when ``connect`` fails, the handed connection is closed
    here."""
    handed = await dial_direct(binding)
    try:
        return await connect(None if handed is None else handed.socket), handed
    except BaseException:
        if handed is not None:
            handed.close()
        raise


class Forwarder:
    """One capability's loopback port. ``await start()``, then hand :attr:`port` to a client;
    :meth:`aclose` stops listening and closes every tunnel it opened.

    Each accepted TCP connection gets its own tunnel: a bare one spliced to it
    (:class:`~hud.tunnel.Splice`) where the server offers it, else a WebSocket joined to it
    at the protocol level (:class:`~hud.tunnel.TcpEnd`); bytes are not copied through
    tasks either way."""

    raw = SPLICE_AVAILABLE
    """Ask for bare tunnels (``ws://`` URLs only); False once the server has declined."""

    def __init__(self, control_url: str, name: str, token: str | None = None,
                 local: str | None = None, bound: str | None = None,
                 proxy: str | None = None) -> None:
        self.name = name
        self.proxy = proxy  # the HTTP proxy each tunnel goes through (None: none)
        self.token = token
        self.local = local
        self.bound = bound  # the path the server bound its socket at, where ``local`` differs
        """The server's Unix socket for local tunnels; None once unreachable (or never)."""
        self.url = tunnel_url(control_url, name)
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.errors: list[str] = []
        self.failed = asyncio.Event()  # set when a tunnel fails; cleared by whoever reads it
        self._server: asyncio.Server | None = None
        self._claimed = 0  # the port registered in hud.ports
        self._opening = Nursery(f"hud-forwarder-{name}")  # tunnels being opened
        self._ends: set[TcpEnd] = set()
        self._sockets: set[WsConnection] = set()
        self._splices: set[Splice] = set()
        self._lifelines = Lifelines()  # one per local tunnel
        self._handed: set[Handed] = set()  # connections handed over by dial()
        if not self.url.startswith("ws://"):
            self.raw = False

    @property
    def port(self) -> int:
        assert self._server is not None, "the forwarder is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> Forwarder:
        loop = asyncio.get_running_loop()
        await self._opening.open()
        # shielded: a caller cancelled while the port is being made must not leave it open
        listening = asyncio.ensure_future(loop.create_server(self._accept, "127.0.0.1", 0))
        try:
            self._server = await asyncio.shield(listening)
        except BaseException:
            listening.add_done_callback(_close_made)
            await self._opening.aclose()
            raise
        self._claimed = ports.claim(self.port)  # a tunnel's end: not for the agent's browser
        _forwarding[self.port] = self
        return self

    async def _through_proxy(self) -> socket.socket | None:
        """A connection to the server through :attr:`proxy`; None without one (the caller
        dials the server itself)."""
        if self.proxy is None:
            return None
        return await proxies.dial_url(self.proxy, self.url, DIAL_TIMEOUT)

    def raise_for_errors(self) -> None:
        """Raise :class:`CapabilityUnavailable` if a tunnel was refused since the last call."""
        if self.errors:
            reason, self.errors = self.errors[-1], []
            self.failed.clear()
            raise CapabilityUnavailable(f"capability {self.name!r} is unavailable: {reason}")

    async def aclose(self) -> None:
        if self._server is not None:
            if _forwarding.get(self._claimed) is self:
                del _forwarding[self._claimed]
            ports.release(self._claimed)
            self._server.close()
        await self._opening.aclose()
        for end in list(self._ends):
            end.close()
        for splice in list(self._splices):
            splice.close()
        self._lifelines.close()
        for handed in list(self._handed):
            handed.close()
        await asyncio.gather(*(ws.close() for ws in list(self._sockets)))
        if self._server is not None:
            await self._server.wait_closed()

    async def dial(self) -> Handed | None:
        """A connection to the daemon itself, handed over by the server: see
        :func:`dial_direct`; where the server offers no local tunnels or they cannot be
        reached, a bare tunnel's socket (:meth:`_dial_bare`). None where neither is
        offered, or the server does not know ``dial`` (an older hud)."""
        if self.local is None:
            return await self._dial_bare()
        conn = await localtunnel.connect(self.local, self.bound)
        if conn is None:
            log.info("local tunnels unreachable at %s: using bare tunnels", self.local)
            self.local = None
            return await self._dial_bare()
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                status, sock = await localtunnel.dial(conn, self.name, self.token)
        except BaseException:
            conn.close()
            raise
        if sock is None:
            conn.close()
            if status.startswith("error bad request: unknown request"):
                return None  # a server without dial: the port still works
            reason = status.removeprefix("error ") or "the environment refused the connection"
            self._fail(reason)
            self.raise_for_errors()
        assert sock is not None
        return Handed(sock, conn, self._handed)

    async def _dial_bare(self) -> Handed | None:
        """A bare tunnel, its socket handed to the caller as it is after the server's
        ``ok`` (the daemon's first bytes not yet read): the server's relay is the only one
        its bytes cross. None (and :attr:`raw` off) where the server offers none."""
        if not self.raw:
            return None
        try:
            via = await self._through_proxy()  # (its own deadline: an error naming it)
            async with asyncio.timeout(DIAL_TIMEOUT):
                opened = await open_bare(self.url, self.headers, exact=True, sock=via)
        except (OSError, TimeoutError) as exc:
            self._fail(f"cannot open a tunnel to {self.url}: {str(exc) or type(exc).__name__}")
            self.raise_for_errors()
        if opened is None:
            self.raw = False
            return None
        sock, status, _ = opened
        if status != "ok":
            sock.close()
            self._fail(status.removeprefix("error ") or "the environment refused the tunnel")
            self.raise_for_errors()
        return Handed(sock, None, self._handed)

    def _accept(self) -> TcpEnd:
        end = TcpEnd()
        if not self._opening.accepting:  # closing: refuse the connection
            end.close()
            return end
        self._ends.add(end)
        self._opening.spawn(self._open(end))
        return end

    async def _open(self, end: TcpEnd) -> None:
        try:
            if self.local is not None and await self._open_local(end):
                return
            if self.raw and await self._open_bare(end):
                return
            ws = await wsclient.connect(self.url, headers=self.headers, max_size=None,
                                        sock=await self._through_proxy())
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            detail = (f"HTTP {exc.response.status_code}" if isinstance(exc, InvalidStatus)
                      else str(exc) or type(exc).__name__)
            self._fail(f"cannot open a tunnel to {self.url}: {detail}")
            end.close()
            self._ends.discard(end)
            return
        except asyncio.CancelledError:
            end.close()
            self._ends.discard(end)
            raise
        self._sockets.add(ws)
        ws.closed.add_done_callback(lambda _: self._tunnel_ended(ws, end))
        end.join(ws)

    async def _open_bare(self, end: TcpEnd) -> bool:
        """Open a bare tunnel for ``end`` and splice them; False (and :attr:`raw` off) when
        the server offers none. Errors as :meth:`_open` has them."""
        via = await self._through_proxy()  # (its own deadline: an error naming it)
        async with asyncio.timeout(DIAL_TIMEOUT):
            opened = await open_bare(self.url, self.headers, sock=via)
        if opened is None:
            self.raw = False
            return False
        self._ends.discard(end)
        splice = await splice_bare(end, opened, self._fail, self._splices.discard)
        if splice is not None:
            self._splices.add(splice)
        return True

    async def _open_local(self, end: TcpEnd) -> bool:
        """Hand ``end``'s socket to the server for a local tunnel; False (and :attr:`local`
        off) when its Unix socket cannot be reached. Errors as :meth:`_open` has them."""
        assert self.local is not None
        await end.wait_made()
        conn = await localtunnel.connect(self.local, self.bound)
        if conn is None:
            log.info("local tunnels unreachable at %s: using bare tunnels", self.local)
            self.local = None
            return False
        self._ends.discard(end)
        if await hand_over(end, conn, self.name, self.token, self._fail):
            self._lifelines.hold(conn)
        return True

    def _tunnel_ended(self, ws: WsConnection, end: TcpEnd) -> None:
        self._sockets.discard(ws)
        self._ends.discard(end)
        end.close()
        close = ws.protocol.close_rcvd
        if close is not None and close.code == 1011 and not end.received:
            self._fail(close.reason or "the environment closed the tunnel (1011)")

    def _fail(self, reason: str) -> None:
        log.warning("tunnel to capability %r failed: %s", self.name, reason)
        self.errors.append(reason)
        self.failed.set()


def _close_made(made: asyncio.Future[asyncio.Server]) -> None:
    """Close the server ``made`` made, if it made one (its maker stopped waiting for it)."""
    if not made.cancelled() and made.exception() is None:
        made.result().close()


def find_opener(family: str) -> Callable[[Binding], Awaitable[Any]]:
    """The installed opener for a protocol family (entry point group ``hud.capabilities``,
    named by family, e.g. ``ssh``): ``await opener(binding)`` returns a protocol client."""
    try:
        opener: Callable[[Binding], Awaitable[Any]] = capability.find(
            family, capability.CLIENT_GROUP)  # what the group's entry points are
        return opener
    except LookupError:
        installed = ", ".join(sorted(capability.available(capability.CLIENT_GROUP))) or "none"
        raise ValueError(f"no client is installed for protocol family {family!r} (installed: "
                         f"{installed}); use binding() instead") from None


async def _first_of(opening: Awaitable[Any], forwarder: Forwarder) -> Any:
    """``opening``'s result, unless a tunnel of ``forwarder`` fails first: then
    :class:`CapabilityUnavailable` at once, rather than after the protocol client's retries."""
    task = asyncio.ensure_future(opening)
    failed = asyncio.ensure_future(forwarder.failed.wait())
    try:
        await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, failed, return_exceptions=True)
    if task.cancelled() or task.exception() is not None:
        forwarder.raise_for_errors()  # the tunnel's own reason, when there is one
    return task.result()


def _on_loopback(url: str) -> bool:
    """Whether ``url`` names a port on a loopback address, written as one (a host name may
    resolve otherwise here than where the environment runs)."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        port = parts.port
    except ValueError:  # out of range
        return False
    host = parts.hostname
    return port is not None and host is not None and numeric_family(host) is not None \
        and is_loopback(host)


async def _open_at_daemon(opener: Callable[[Binding], Awaitable[T]], binding: Binding) -> T:
    """``opener(binding)`` on the daemon's own address (a loopback one). When it fails and
    the daemon cannot be reached, that is :class:`CapabilityUnavailable` with the words a
    tunnel's refusal has, rather than whatever the protocol client makes of a refused
    connection."""
    try:
        return await opener(binding)
    except CapabilityUnavailable:
        raise
    except Exception as exc:
        host, port = daemon_address(binding)
        try:
            sock = await asyncio.wait_for(dial(host, port), DIAL_TIMEOUT)
        except (OSError, TimeoutError) as refused:
            raise CapabilityUnavailable(f"capability {binding.name!r} is unavailable: "
                                        f"{unreachable(binding, host, port, refused)}") from exc
        sock.close()  # reachable: the opener's own error stands
        raise


class Tunnels:
    """One client's forwarders (one per capability) and the protocol clients opened on them.
    Everything closes with :meth:`aclose`.

    A client connected in memory (``memory://``, the in-process runtime) shares the
    environment's host, so its bindings point straight at the daemons: no tunnel needed. So
    does a client in the server's network namespace (the kernel says so, through the
    server's local-tunnel socket: :func:`hud.localtunnel.same_network`) for a daemon on a
    loopback address: this process reaches it exactly as the server would, with no relay
    in between.
    """

    local = True
    """Ask the server for local tunnels (:mod:`hud.localtunnel`) before the first forwarder."""

    same_network = True
    """Give a capability its daemon's own address where this process shares the server's
    network namespace and the daemon is on a loopback address. False: tunnel every one
    (``Client.tunnel_all``)."""

    def __init__(self, control_url: str, token: str | None, proxy: str | None = None) -> None:
        scheme = urlsplit(control_url).scheme
        if scheme not in ("ws", "wss", "memory"):
            raise HudConnectionError(f"tunnels need a WebSocket connection, not {control_url!r}")
        self.direct = scheme == "memory"
        # port 0: the server listens on none (a pool worker whose environment declares no
        # capabilities); dialled, it would mean port 80 to some libraries
        self.portless = not self.direct and urlsplit(control_url).port == 0
        self.control_url = control_url
        self.token = token
        self.proxy = proxy
        """The HTTP proxy every tunnel goes through, as the control connection did. A
        client behind one reaches the server by no other way: it asks for no local tunnel,
        and gives no capability its daemon's own address."""
        self.forwarders: dict[str, Forwarder] = {}
        self.handles: list[Any] = []
        self.mount: tuple[str, str] | None = None  # see Client.local_mount
        self.control: tuple[Any, Any] | None = None
        """(local, remote) addresses of the client's control connection, where it has one."""
        self.unix_control: socket.socket | None = None
        """The client's control connection where it is a Unix socket (a pool worker's)."""
        self._offer: localtunnel.Offer | None = None
        self._same: bool | None = None  # whether the server shares this network namespace
        self._socket: str | None = None  # the server's socket, as this process reaches it
        self._probed = False  # whether the server was asked for local tunnels
        # Bindings asked for at once wait for one answer, and one forwarder per capability:
        # a second probe would cost a round trip and could answer differently meanwhile,
        # and a second forwarder would be one nobody closes.
        self._asking = asyncio.Lock()  # the probe and the namespace check
        self._starting = asyncio.Lock()  # a forwarder's start

    async def _probe(self) -> localtunnel.Offer | None:
        """What the server offers this client (asked once: most clients open no tunnel)."""
        if not self.local or self.portless or self.proxy is not None:
            return None
        if not self._probed:
            async with self._asking:
                if not self._probed:
                    self._offer = await localtunnel.probe(self.control_url, self.token)
                    if self._offer is not None:
                        self._socket = self._here(self._offer.path)
                    self._probed = True
        return self._offer

    def _here(self, path: str) -> str | None:
        """The server's socket path ``path`` as this process reaches it: through
        :attr:`mount`, where the server's directory is mounted here. None where it is not
        a server's socket (:func:`~hud.localtunnel.plausible`) or not in that directory."""
        here = path if os.path.isabs(path) else ""
        if here and self.mount is not None:
            theirs, ours = (os.path.normpath(side) for side in self.mount)
            if os.path.commonpath([theirs, os.path.normpath(path)]) != theirs:
                here = ""  # not in the directory the runtime mounted: not the server's
            else:  # a link out of it is caught as the socket answers (its bound name)
                here = os.path.join(ours, os.path.relpath(os.path.normpath(path), theirs))
        if not here or not localtunnel.plausible(here, path):
            log.warning("local tunnels: the server's socket %r is not one: bare tunnels", path)
            return None
        return here

    async def _reaches(self, declared: Binding) -> bool:
        """Whether this process reaches ``declared``'s daemon at its own address, as the
        server does: in memory, or in the server's network namespace for a loopback one."""
        if self.direct:
            return True
        if not self.same_network or self.proxy is not None or not _on_loopback(declared.url):
            return False
        if self._same is None and self.unix_control is not None:  # the kernel names its peer
            self._same = localtunnel.peer_shares_network(self.unix_control)
        if self._same is None:  # asked once: the answer holds for the client's life
            offer = await self._probe()
            async with self._asking:
                if self._same is None:
                    self._same = self._socket is not None and offer is not None \
                        and await localtunnel.same_network(self._socket, offer, self.token,
                                                           self.control)
        return self._same

    async def forwarder(self, name: str) -> Forwarder:
        forwarder = self.forwarders.get(name)
        if forwarder is None and self.portless:
            raise HudConnectionError(f"cannot tunnel to capability {name!r}: the server at "
                                     f"{self.control_url} listens on no port")
        if forwarder is None:
            offer = await self._probe()
            async with self._starting:
                forwarder = self.forwarders.get(name)
                if forwarder is None:
                    forwarder = await Forwarder(self.control_url, name, self.token,
                                                self._socket,
                                                None if offer is None else offer.path,
                                                self.proxy).start()
                    self.forwarders[name] = forwarder
        return forwarder

    async def binding(
        self, capabilities: Iterable[Binding], ref: str, session: dict[str, dict[str, Any]]
    ) -> Binding:
        return (await self._resolve(capabilities, ref, session))[0]

    async def _resolve(
        self, capabilities: Iterable[Binding], ref: str, session: dict[str, dict[str, Any]]
    ) -> tuple[Binding, Forwarder | None]:
        """The binding as this client reaches it, and the forwarder it goes through (None:
        the daemon's own address)."""
        declared = resolve_binding(capabilities, ref)
        params = {**declared.params, **session.get(declared.name, {})}
        if await self._reaches(declared):
            return Binding(name=declared.name, protocol=declared.protocol, url=declared.url,
                           params=params), None
        forwarder = await self.forwarder(declared.name)
        return Binding(name=declared.name, protocol=declared.protocol,
                       url=local_url(declared, forwarder.port), params=params), forwarder

    async def open(
        self, capabilities: Iterable[Binding], ref: str, session: dict[str, dict[str, Any]]
    ) -> Any:
        binding, forwarder = await self._resolve(capabilities, ref, session)
        opener = find_opener(binding.protocol.split("/", 1)[0])
        if self.direct:  # in memory: as the environment's own code would open it
            handle = await opener(binding)
        elif forwarder is None:
            handle = await _open_at_daemon(opener, binding)
        else:
            forwarder.errors.clear()
            forwarder.failed.clear()
            handle = await _first_of(opener(binding), forwarder)
        self.handles.append(handle)
        return handle

    async def aclose(self) -> None:
        handles, self.handles = self.handles, []
        for handle in reversed(handles):
            try:
                await handle.aclose()
            except Exception:
                log.exception("closing %r failed", handle)
        forwarders, self.forwarders = self.forwarders, {}
        for forwarder in forwarders.values():
            await forwarder.aclose()
