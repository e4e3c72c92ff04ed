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
import itertools
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from . import __version__, address, wsconn
from .address import DEFAULT_URL
from .protocol import codec
from .protocol.errors import HudError, Unauthorized, error_from_wire
from .protocol.messages import (
    SUPPORTED_VERSIONS,
    UNSET,
    Body,
    ByeParams,
    CancelParams,
    CancelResult,
    GradeParams,
    GradeResult,
    ListParams,
    ListResult,
    ManifestParams,
    ManifestResult,
    PeerInfo,
    SolveParams,
    SolveResult,
    StartParams,
    StartResult,
    TemplateInfo,
)

if TYPE_CHECKING:
    from .forward import Tunnels
    from .protocol.messages import Binding

B = TypeVar("B", bound=Body)


class HudConnectionError(ConnectionError):
    """The environment could not be reached, refused the handshake, or went away."""


def control_url(url: str) -> str:
    """``ws://host:port`` (or ``http://``, or bare ``host:port``) → the control endpoint URL."""
    try:
        return address.control_url(url)
    except address.AddressError as exc:
        raise HudConnectionError(str(exc)) from None


class Client:
    """One control session. Build it with :func:`open_client` or :meth:`Client.connect`."""

    manifest: ManifestResult

    def __init__(self, ws: Any, url: str) -> None:
        self.ws = ws
        self.url = url
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._lost: BaseException | None = None  # why the connection ended, once it has
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        if hasattr(ws, "attach"):  # a push transport (hud.wsconn): replies arrive as parsed
            ws.attach(self._on_message, self._on_closed)
        else:  # anything with the websockets surface: read it in a task
            self._reader = asyncio.create_task(self._read_replies(), name="hud-client-reader")
        self.token: str | None = None
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
    ) -> Client:
        """Connect and exchange manifests; ``session_id`` resumes a parked session.

        With ``ready_timeout`` > 0, connection failures are retried until it runs out (for an
        environment that is still starting). A rejected token is never retried.
        """
        target = control_url(url)
        ws = await _dial(target, token, ready_timeout, max_size)
        self = await cls.over(ws, target, session_id=session_id, client=client)
        self.token = token  # tunnels authenticate as the control connection did
        return self

    @classmethod
    async def over(
        cls,
        transport: Any,
        url: str,
        *,
        session_id: str | None = None,
        client: PeerInfo | None = None,
    ) -> Client:
        """Exchange manifests over an open transport (a WebSocket, or an in-memory end from
        :meth:`hud.server.Server.connect_memory`)."""
        self = cls(transport, url)
        try:
            params = ManifestParams(
                client=client or PeerInfo(name="hud", version=__version__),
                protocol_versions=list(SUPPORTED_VERSIONS),
                session_id=session_id if session_id is not None else UNSET,
            )
            self.manifest = await self.call("manifest", params, ManifestResult)
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

    async def start(self, template: str, args: dict[str, Any] | None = None) -> StartResult:
        """Start a task; returns the prompt (and per-episode bindings)."""
        params = StartParams(template=template, args=args or {})
        result = await self.call("tasks.start", params, StartResult)
        self.bindings = result.bindings
        return result

    async def binding(self, ref: str) -> Binding:
        """Capability ``ref`` (a name, a protocol id such as ``ssh/2``, or a family such as
        ``ssh``; ambiguity is a ``KeyError``) as this client reaches it: its URL points at a
        local port tunnelled to the daemon, and its params include this task's bindings."""
        return await self._get_tunnels().binding(self.manifest.capabilities, ref, self.bindings)

    async def open(self, ref: str) -> Any:
        """A protocol client for capability ``ref`` through its tunnel: ``ssh`` gives a
        :class:`~hud.capabilities.ssh.Shell`, ``mcp`` a :class:`~hud.capabilities.mcp.Tools`
        (openers are the ``hud.capabilities`` entry points). It closes with this client."""
        return await self._get_tunnels().open(self.manifest.capabilities, ref, self.bindings)

    def _get_tunnels(self) -> Tunnels:
        if self._tunnels is None:
            from .forward import Tunnels

            self._tunnels = Tunnels(self.url, self.token)
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

    async def call(self, method: str, params: Any, result_type: type[B]) -> B:
        """Send one request and wait for its reply; raises the server's error as its class."""
        if self._lost is not None:
            raise self._lost
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (method, future)
        try:
            await self.ws.send(codec.encode_request(rid, method, params), text=True)
        except ConnectionClosed as exc:
            self._pending.pop(rid, None)
            raise HudConnectionError(f"connection to {self.url} closed: {exc}") from None
        try:
            return await future  # type: ignore[no-any-return]
        finally:
            self._pending.pop(rid, None)

    async def aclose(self) -> None:
        """Disconnect without ``bye``: a task in progress stays parked on the server.
        Capability clients and local tunnel ports opened by this client close too."""
        if self._tunnels is not None:
            await self._tunnels.aclose()
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._on_closed(None)

    # -- replies --------------------------------------------------------------------------

    async def _read_replies(self) -> None:
        error: BaseException | None = None
        try:
            async for frame in self.ws:
                self._on_message(frame)
        except ConnectionClosed as exc:
            error = exc
        finally:
            self._on_closed(error)

    def _on_message(self, frame: str | bytes) -> None:
        try:
            self._dispatch(frame)
        except HudError as exc:  # the server broke the protocol: nothing more can be trusted
            self._fail_pending(exc)
            self._closing = asyncio.ensure_future(self.ws.close())

    def _on_closed(self, error: BaseException | None) -> None:
        if error is None:
            lost: BaseException = HudConnectionError(f"connection to {self.url} closed")
        elif isinstance(error, HudError | HudConnectionError):
            lost = error
        else:
            lost = HudConnectionError(f"connection to {self.url} lost: {error}")
        self._fail_pending(lost)

    def _fail_pending(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _dispatch(self, frame: str | bytes) -> None:
        reply = codec.decode_reply(frame)
        entry = self._pending.get(reply.id) if isinstance(reply.id, int) else None
        if entry is None:
            if reply.error is not UNSET:  # an error the server could not tie to a request
                raise error_from_wire(reply.error.code, reply.error.message, reply.error.data
                                      or None)
            return
        method, future = entry
        if future.done():
            return
        if reply.error is not UNSET:
            err = reply.error
            future.set_exception(error_from_wire(err.code, err.message, err.data or None))
        elif reply.result is UNSET:
            future.set_exception(HudError(f"{method}: reply has neither result nor error"))
        else:
            try:
                future.set_result(codec.decode_result(method, reply.result))
            except HudError as exc:
                future.set_exception(exc)


@contextlib.asynccontextmanager
async def open_client(url: str = DEFAULT_URL, **options: Any) -> AsyncIterator[Client]:
    """``async with open_client(url) as client:`` — see :meth:`Client.connect` for options."""
    client = await Client.connect(url, **options)
    try:
        yield client
    finally:
        await client.aclose()


async def _dial(url: str, token: str | None, ready_timeout: float, max_size: int | None) -> Any:
    headers = {"User-Agent": f"hud/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    direct = _is_loopback(url) or _proxy_for(url) is None
    deadline = time.monotonic() + ready_timeout
    delay = 0.02
    while True:
        try:
            if direct:
                return await wsconn.connect(url, headers=headers, max_size=max_size)
            return await ws_connect(  # through the proxy the environment names
                url,
                additional_headers=headers,
                compression=None,
                max_size=max_size,
                open_timeout=10,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            raise _rejected(url, exc) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            if time.monotonic() + delay > deadline:
                raise HudConnectionError(f"cannot reach an environment at {url}: {exc}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment variables name for ``url``, if any."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return proxy
    return None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


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
