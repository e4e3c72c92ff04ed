"""The client side of a control session: connect, manifest, start, grade, cancel, resume.

>>> async with open_client("ws://127.0.0.1:8765") as client:
...     started = await client.start("count_letter", {"word": "strawberry"})
...     graded = await client.grade("3")

Requests may be pipelined: each call sends at once and waits for the reply with its id.
Closing without :meth:`Client.bye` leaves a task in progress parked on the server, so a
later connection can resume it (``session_id=``) or grade it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from . import __version__, address, wsclient
from . import proxy as proxies
from .address import DEFAULT_URL
from .errors import AddressError, HudConnectionError, TransportClosed
from .protocol.connection import ClientConnection
from .protocol.errors import HudError, SessionBusy, Unauthorized
from .protocol.messages import (
    SUPPORTED_VERSIONS,
    UNSET,
    Body,
    ByeParams,
    CancelParams,
    CancelResult,
    Fork,
    ForkParams,
    ForkResult,
    GradeParams,
    GradeResult,
    ListParams,
    ListResult,
    ManifestParams,
    ManifestResult,
    Params,
    PeerInfo,
    SolveParams,
    SolveResult,
    StartParams,
    StartResult,
    StatusParams,
    StatusResult,
    TemplateInfo,
)
from .transport import Transport
from .upgrade import MANIFEST_HEADER, plain_value

if TYPE_CHECKING:
    from .forward import Tunnels
    from .protocol.messages import Binding

B = TypeVar("B", bound=Body)

RESUME_BUSY_FOR = 1.0  # seconds a resume retries session_busy (see Client.connect)
MAX_MANIFEST_HEADER = 4096  # bytes of manifest request sent in the upgrade, at most
PROXY_TIMEOUT = 10.0  # seconds a proxy may take to connect a client to the environment


def control_url(url: str) -> str:
    """``ws://host:port`` (or ``http://``, or bare ``host:port``) → the control endpoint URL."""
    try:
        return address.control_url(url)
    except AddressError as exc:
        raise HudConnectionError(str(exc)) from None


class Client:
    """One control session. Build it with :func:`open_client` or :meth:`Client.connect`.

    It drives a :class:`hud.protocol.connection.ClientConnection` over a
    :class:`hud.transport.Transport`: replies resolve the caller's future as they arrive.
    """

    manifest: ManifestResult
    tunnel_all = False
    """Tunnel every capability through the control port, even one whose daemon this process
    could dial at its own address (it shares the server's network namespace, and the daemon
    is on a loopback address): the server then holds every connection, and cuts them when it
    closes. Set it on the class or on one client; it holds from the next binding on."""

    local_mount: tuple[str, str] | None = None
    """``(server's, ours)``: a directory of the server's (``HUD_LOCAL_DIR``) and where it is
    mounted in this process's view; set by a runtime that mounts it (a container's), so that
    this client reaches the server's socket for local tunnels (:mod:`hud.localtunnel`)."""

    def __init__(self, transport: Transport, url: str, *, attach: bool = True) -> None:
        self.transport = transport
        self.url = url
        self.core = ClientConnection()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._lost: BaseException | None = None  # why the connection ended, once it has
        if attach:
            transport.attach(self._on_message, self._on_closed)
        self.token: str | None = None
        self.proxy: str | None = None
        """The HTTP proxy this client reaches the environment through (see :meth:`connect`)."""
        self.bindings: dict[str, dict[str, Any]] = {}  # this task's, from the last start
        self._tunnels: Tunnels | None = None

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        session_id: str | None = None,
        client: PeerInfo | None = None,
        ready_timeout: float = 0.0,
        max_size: int | None = 64 * 1024 * 1024,
        sock: socket.socket | None = None,
        proxy: str | bool | None = True,
    ) -> Client:
        """Connect and exchange manifests; ``session_id`` resumes a parked session (a
        ``session_busy`` answer is retried for up to :data:`RESUME_BUSY_FOR` seconds: the
        session's last connection may still be ending).

        With ``ready_timeout`` > 0, connection failures are retried until it runs out (for an
        environment that is still starting). A rejected token is never retried.

        ``sock``: a connected stream socket to the server to speak over instead of dialling
        ``url`` (a pool worker hands its rollout's client one end of a Unix socket pair); it
        is tried once, and ``url`` still names the server (its port for tunnels).

        ``proxy``: the HTTP proxy every connection to the environment goes through, its
        control connection and each capability's tunnel (:mod:`hud.proxy`): ``True``, the
        one the environment variables name (``https_proxy``, ``no_proxy``...; a loopback
        host never has one); an ``http://`` URL, that one; ``None``, none.
        """
        target = control_url(url)
        via = proxies.configured(proxy, target)
        params = _manifest_params(session_id, client)
        _, manifest = ClientConnection().send("manifest", params)  # what over() will send
        # A session whose last connection closed is parked once the server has read the close
        # and that connection's requests have ended; a resume that comes sooner is "busy".
        busy_until = time.monotonic() + RESUME_BUSY_FOR
        delay = 0.01
        while True:
            if sock is not None:
                transport = await _dial(target, token, 0.0, max_size, manifest, sock)
                sock = None  # the transport owns it: a busy session's retry dials url
            else:
                transport = await _dial(target, token, ready_timeout, max_size, manifest,
                                        proxy=via)
            try:
                self = await cls._open(transport, target, params, manifest)
            except SessionBusy:
                if time.monotonic() + delay > busy_until:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            self.token = token  # tunnels authenticate as the control connection did
            self.proxy = via  # and go the way it went
            return self

    @classmethod
    async def over(
        cls,
        transport: Transport,
        url: str,
        *,
        session_id: str | None = None,
        client: PeerInfo | None = None,
    ) -> Client:
        """Exchange manifests over an open transport (a WebSocket, or an in-memory end from
        :meth:`hud.server.Server.connect_memory`)."""
        return await cls._open(transport, url, _manifest_params(session_id, client))

    @classmethod
    async def _open(cls, transport: Transport, url: str, params: ManifestParams,
                    sent: bytes | None = None) -> Client:
        """:meth:`over`; ``sent`` is the manifest request the upgrade carried (the
        ``Hud-Manifest`` header): when the server says it took it, the reply comes unasked,
        and is awaited without sending the request again."""
        self = cls(transport, url, attach=False)
        try:
            rid, payload = self.core.send("manifest", params)
            answered = getattr(transport, "manifest_answered", False) and payload == sent
            future = self._expect(rid)  # before attaching: the reply may be in already
            transport.attach(self._on_message, self._on_closed)
            self.manifest = await self._await_reply(
                rid, future, "manifest", ManifestResult, None if answered else payload)
        except BaseException:
            await self.aclose()
            raise
        return self

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    @property
    def templates(self) -> list[TemplateInfo]:
        return self.manifest.templates

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- methods --------------------------------------------------------------------------

    async def list_templates(self) -> list[TemplateInfo]:
        return (await self.call("tasks.list", ListParams(), ListResult)).templates

    async def fork(self, count: int = 1) -> list[Fork]:
        """Branch this session's task (started, not yet graded) into ``count`` new sessions,
        each parked on a server of its own; claim one with :meth:`claim`. This session's
        task goes on unchanged."""
        return (await self.call("tasks.fork", ForkParams(count=count), ForkResult)).sessions

    @classmethod
    async def claim(cls, fork: Fork, **options: Any) -> Client:
        """Connect to a branch made by :meth:`fork` and resume its session; ``options`` as
        for :meth:`connect`. The client's bindings are the branch's."""
        client = await cls.connect(fork.url, token=fork.token, session_id=fork.session_id,
                                   **options)
        client.bindings = dict(fork.bindings)
        return client

    async def status(self) -> StatusResult:
        """Every task the server holds, attached or parked, with its age and expiry."""
        return await self.call("tasks.status", StatusParams(), StatusResult)

    async def start(self, template: str, args: dict[str, Any] | None = None) -> StartResult:
        """Start a task; returns the prompt (and per-episode bindings)."""
        params = StartParams(template=template, args=args or {})
        result = await self.call("tasks.start", params, StartResult)
        self.bindings = result.bindings
        return result

    async def binding(self, ref: str) -> Binding:
        """Capability ``ref`` (a name, a protocol id such as ``ssh/2``, or a family such as
        ``ssh``; ambiguity is a ``KeyError``) as this client reaches it: its URL points at a
        local port tunnelled to the daemon (or at the daemon itself, where this process
        shares the server's network namespace and the daemon is on loopback), and its params
        include this task's bindings."""
        return await self._get_tunnels().binding(self.manifest.capabilities, ref, self.bindings)

    async def open(self, ref: str) -> Any:
        """A protocol client for capability ``ref`` through its tunnel: ``ssh`` gives a
        :class:`~hud.capabilities.ssh.Shell`, ``mcp`` a :class:`~hud.capabilities.mcp.Tools`
        (openers are the ``hud.capabilities`` entry points). It closes with this client."""
        return await self._get_tunnels().open(self.manifest.capabilities, ref, self.bindings)

    def _get_tunnels(self) -> Tunnels:
        if self._tunnels is None:
            # lazy: tunnels are needed only once a capability is opened
            from .forward import Tunnels

            self._tunnels = Tunnels(self.url, self.token, self.proxy)
        self._tunnels.same_network = not self.tunnel_all  # it may change between calls
        self._tunnels.mount = self.local_mount
        raw = getattr(self.transport, "transport", None)  # the lean client's socket, if any
        if raw is not None and self._tunnels.control is None:
            sock = raw.get_extra_info("socket")
            if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
                self._tunnels.unix_control = sock
            else:
                self._tunnels.control = (raw.get_extra_info("sockname"),
                                         raw.get_extra_info("peername"))
        return self._tunnels

    async def grade(self, answer: Any = None, *, template: str | None = None) -> GradeResult:
        """Grade this session's task, or adopt the only parked one (of ``template``)."""
        params = GradeParams(answer=answer, template=template if template else UNSET)
        result = await self.call("tasks.grade", params, GradeResult)
        self.manifest.session_id = result.session_id  # adopting moves us to that session
        return result

    async def solve(self) -> Any:
        """The reference solution's answer for this session's task (servers with solutions
        enabled only)."""
        return (await self.call("tasks.solve", SolveParams(), SolveResult)).answer

    async def cancel(self) -> bool:
        """Cancel the task in progress (its cleanup runs); False if there was none."""
        return (await self.call("tasks.cancel", CancelParams(), CancelResult)).cancelled

    async def bye(self) -> None:
        """End the session for good (any task is cancelled) and close the connection."""
        with contextlib.suppress(HudConnectionError):
            await self.call("bye", ByeParams(), Body)
        await self.aclose()

    async def call(self, method: str, params: Params, result_type: type[B]) -> B:
        """Send one request and wait for its reply; raises the server's error as its class
        (and ``TypeError`` if the result is not a ``result_type``)."""
        if self._lost is not None:
            raise self._lost
        rid, payload = self.core.send(method, params)
        return await self._await_reply(rid, self._expect(rid), method, result_type, payload)

    def _expect(self, rid: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        return future

    async def _await_reply(self, rid: int, future: asyncio.Future[Any], method: str,
                           result_type: type[B], payload: bytes | None) -> B:
        """Send ``payload`` (unless None: already sent), then wait for reply ``rid``."""
        try:
            if payload is not None:
                await self.transport.send(payload, text=True)
            result = await future
        except TransportClosed as exc:
            raise HudConnectionError(f"connection to {self.url} closed: {exc}") from None
        finally:
            if self._waiting.pop(rid, None) is not None:
                self.core.forget(rid)
        if not isinstance(result, result_type):
            raise TypeError(f"{method} returned {type(result).__name__}, "
                            f"not {result_type.__name__}")
        return result

    async def aclose(self) -> None:
        """Disconnect without ``bye``: a task in progress stays parked on the server.
        Capability clients and local tunnel ports opened by this client close too. Over a
        direct WebSocket, this sends the close frame and hangs up without waiting for the
        server's: the server parks the session when it reads the close frame."""
        if self._tunnels is not None:
            await self._tunnels.aclose()
        await self.transport.close()
        self._on_closed(None)

    # -- replies --------------------------------------------------------------------------

    def _on_message(self, frame: str | bytes | bytearray) -> None:
        try:
            reply = self.core.receive(frame)
        except HudError as exc:  # the server broke the protocol: nothing more can be trusted
            self._fail_waiting(exc)
            self.transport.close_soon(1002, "protocol error")
            return
        if reply is None:
            return
        future = self._waiting.pop(reply.id, None)
        if future is None or future.done():
            return
        if isinstance(reply.outcome, HudError):
            future.set_exception(reply.outcome)
        else:
            future.set_result(reply.outcome)

    def _on_closed(self, error: BaseException | None) -> None:
        if error is None:
            lost: BaseException = HudConnectionError(f"connection to {self.url} closed")
        elif isinstance(error, HudError | HudConnectionError):
            lost = error
        elif isinstance(error, ConnectionClosed) and error.rcvd and error.rcvd.reason:
            # the server said why (an environment reloaded by hud dev): that, not the codes
            lost = HudConnectionError(f"connection to {self.url} closed: {error.rcvd.reason}")
        else:
            lost = HudConnectionError(f"connection to {self.url} lost: {error}")
        self._fail_waiting(lost)

    def _fail_waiting(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)


@contextlib.asynccontextmanager
async def open_client(url: str = DEFAULT_URL, **options: Any) -> AsyncIterator[Client]:
    """``async with open_client(url) as client:`` — see :meth:`Client.connect` for options."""
    client = await Client.connect(url, **options)
    try:
        yield client
    finally:
        await client.aclose()


def _manifest_params(session_id: str | None, client: PeerInfo | None) -> ManifestParams:
    return ManifestParams(
        client=client or PeerInfo(name="hud", version=__version__),
        protocol_versions=list(SUPPORTED_VERSIONS),
        session_id=session_id if session_id is not None else UNSET,
    )


async def _dial(
    url: str, token: str | None, ready_timeout: float, max_size: int | None,
    manifest: bytes | None = None, sock: socket.socket | None = None,
    proxy: str | None = None,
) -> Transport:
    """A WebSocket to ``url`` (over ``sock`` where given: see :meth:`Client.connect`;
    else through ``proxy``, an HTTP proxy's URL, where given). It carries ``manifest`` (the
    session's first request) in its upgrade when it fits a header: one round trip fewer
    (see :data:`hud.upgrade.MANIFEST_HEADER`)."""
    if sock is None and urlsplit(url).port == 0:  # (websockets would dial port 80)
        raise HudConnectionError(f"cannot reach an environment at {url}: port 0 names no port")
    headers = {"User-Agent": f"hud/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if manifest is not None and len(manifest) <= MAX_MANIFEST_HEADER \
            and plain_value(value := manifest.decode()):  # else (a DEL in JSON): a frame
        headers[MANIFEST_HEADER] = value
    deadline = time.monotonic() + ready_timeout
    delay = 0.02
    while True:
        try:
            given, sock = sock, None  # a socket given is tried once: the connection owns it
            if given is None and proxy is not None:
                given = await proxies.dial_url(proxy, url, PROXY_TIMEOUT)
            return await wsclient.connect(url, headers=headers, max_size=max_size, sock=given)
        except InvalidStatus as exc:
            raise _rejected(url, exc) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            if time.monotonic() + delay > deadline:
                # some causes have no message (a TimeoutError): name the class then
                reason = str(exc) or type(exc).__name__
                raise HudConnectionError(f"cannot reach an environment at {url}: {reason}") \
                    from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _rejected(url: str, exc: InvalidStatus) -> Exception:
    status = exc.response.status_code
    try:
        body = msgspec.json.decode(exc.response.body or b"{}")
        message = body.get("message") if isinstance(body, dict) else None
    except msgspec.DecodeError:
        message = None
    if status == 401:
        return Unauthorized(f"{url}: {message or 'unauthorized'}")
    return HudConnectionError(f"{url} refused the connection (HTTP {status}): {message or ''}")
