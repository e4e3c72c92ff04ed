"""One control connection: reads requests, answers them by id, drives its session.

``manifest``, ``tasks.list``, ``tasks.cancel`` and ``bye`` are answered at once. ``tasks.start``
and ``tasks.grade`` run the template, so each runs as its own task, one after another in
arrival order; ``tasks.cancel`` can interrupt them. When the connection drops, requests
already accepted still finish, then the session is parked if it holds a task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from .protocol import codec
from .protocol.errors import (
    Cancelled,
    HudError,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    NoTaskInProgress,
    TemplateError,
    UnknownTask,
    UnsupportedVersion,
)
from .protocol.messages import (
    SUPPORTED_VERSIONS,
    UNSET,
    Body,
    ByeResult,
    CancelResult,
    GradeParams,
    GradeResult,
    ListResult,
    ManifestParams,
    ManifestResult,
    Params,
    Request,
    RequestId,
    SolveParams,
    SolveResult,
    StartParams,
    StartResult,
)
from .session import Session
from .wsconn import WsConnection

if TYPE_CHECKING:
    from .memory import MemoryEnd
    from .server import Server

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Body]]

MAX_HELD = 64
"""Frames waiting behind a request in progress before the socket stops being read."""


def _ignore(_reason: BaseException | None) -> None:
    """The end of the connection is awaited in :meth:`ControlConnection.run` instead."""


class ControlConnection:
    # Methods that run the template are queued (one at a time, in arrival order); the others
    # are answered at once. Class-level, so a connection costs no dictionaries of its own.
    QUEUED = frozenset({"tasks.start", "tasks.grade", "tasks.solve"})
    HANDLERS = {"manifest": "manifest", "tasks.list": "list", "tasks.cancel": "cancel",
                "bye": "bye", "tasks.start": "start", "tasks.grade": "grade",
                "tasks.solve": "solve"}

    __slots__ = ("_held", "_inline", "op_lock", "ops", "server", "session", "ws")

    def __init__(self, server: Server, ws: WsConnection | MemoryEnd) -> None:
        self.server = server
        self.ws = ws
        self.session: Session | None = None
        # requests in flight (start, grade, solve) and their replies-in-progress
        self.ops: dict[asyncio.Task[None], Request | None] = {}
        self.op_lock = asyncio.Lock()  # FIFO: pipelined start/grade run in arrival order
        self._held: collections.deque[str | bytes] | None = None  # frames waiting their turn
        self._inline: asyncio.Task[None] | None = None  # the request they wait for

    # -- reading ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the connection closes, then :meth:`disconnect`."""
        try:
            if isinstance(self.ws, WsConnection):  # frames are pushed as they are parsed
                self.ws.attach(self.take, _ignore)
                await self.ws.closed
            else:
                async for frame in self.ws:
                    self.take(frame)
        except ConnectionClosed:
            pass
        finally:
            await self.disconnect()

    def take(self, frame: str | bytes) -> None:
        """One incoming frame. Queued methods get a task each; while any other request
        is being answered, later frames wait their turn (so ``manifest`` is done before a
        pipelined ``tasks.start`` reads the session)."""
        if self._held is not None:
            self._held.append(frame)
            if len(self._held) >= MAX_HELD and isinstance(self.ws, WsConnection):
                self.ws.pause_reading()
            return
        self._dispatch(frame)

    def _dispatch(self, frame: str | bytes) -> None:
        if not isinstance(frame, str):  # bytes, or a bytearray from the transport
            error = InvalidRequest("binary frames are not accepted on the control channel; "
                                   "send each request as one JSON text frame")
            self.send_now(codec.encode_error(None, error))
            return
        limit = self.server.config.max_message_size
        if len(frame) > limit:
            error = LimitExceeded(
                f"frame of {len(frame)} characters exceeds the limit of {limit}",
                {"limit": "max_message_size", "value": limit, "size": len(frame)},
            )
            self.send_now(codec.encode_error(codec.request_id_of(frame), error))
            return
        try:
            request = codec.decode_request(frame)
        except HudError as exc:
            self.send_now(codec.encode_error(codec.request_id_of(frame), exc))
            return
        handler = self._handler(request.method)
        if request.method in self.QUEUED:
            # No done callbacks here: each would cost the loop one more turn per request.
            # The op leaves ``ops`` itself (``_queued``), or through ``cancel_ops``.
            op = asyncio.create_task(self._queued(request, handler))
            self.ops[op] = request
        else:
            self._held = collections.deque()
            self._inline = asyncio.create_task(self._answer_in_turn(request, handler))

    async def _answer_in_turn(self, request: Request, handler: Handler | None) -> None:
        try:
            await self.answer(request, handler)
        finally:
            held, self._held, self._inline = self._held, None, None
            while held:
                if self._held is not None:  # another such request: it holds the rest
                    self._held.extend(held)
                    break
                self._dispatch(held.popleft())
            if self._held is None and isinstance(self.ws, WsConnection):
                self.ws.resume_reading()

    def _handler(self, method: str) -> Handler | None:
        if method == "tasks.solve" and not self.server.config.enable_solutions:
            return None
        name = self.HANDLERS.get(method)
        return None if name is None else getattr(self, name)

    async def answer(self, request: Request, handler: Handler | None, serial: bool = False) -> None:
        """Run one request and send its response (none for a notification)."""
        rid = None if request.id is UNSET else request.id
        try:
            params = codec.decode_params(request)
            if handler is None:  # a method the codec knows but this side does not serve
                raise MethodNotFound(
                    f"{request.method!r} is not served here"
                    + (" (start the server with solutions enabled)"
                       if request.method == "tasks.solve" else ""),
                    {"method": request.method},
                )
            if self.session is None and request.method != "manifest":
                raise InvalidRequest(f"send manifest before {request.method}")
            if serial:
                async with self.op_lock:
                    result = await handler(params)
            else:
                result = await handler(params)
        except HudError as exc:
            if request.id is not UNSET:
                await self.send_error(rid, exc)
            return
        except asyncio.CancelledError:
            if request.id is not UNSET:
                await self.send_error(rid, Cancelled(f"{request.method} was cancelled"))
            return
        except Exception as exc:  # a bug in hud itself: say so, keep serving
            log.exception("internal error while handling %s", request.method)
            if request.id is not UNSET:
                await self.send_error(rid, InternalError(f"internal error: {exc!r}"))
            return
        if request.id is not UNSET:
            await self.send(codec.encode_result(rid, result))

    async def _queued(self, request: Request, handler: Handler | None) -> None:
        try:
            await self.answer(request, handler, serial=True)
        finally:
            self.ops.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    def _cancelled_before_start(self, op: asyncio.Task[None]) -> None:
        """A request cancelled before its coroutine ran never answered: answer it now."""
        request = self.ops.pop(op, None)
        if op.cancelled() and request is not None and request.id is not UNSET:
            error = Cancelled(f"{request.method} was cancelled before it started")
            self._track(asyncio.ensure_future(self.send_error(request.id, error)))

    def _track(self, task: asyncio.Future[None]) -> None:
        self.ops[task] = None  # type: ignore[index]
        task.add_done_callback(self._untrack)

    def _untrack(self, task: asyncio.Future[None]) -> None:
        self.ops.pop(task, None)  # type: ignore[call-overload]

    async def send(self, payload: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # the client left; the session stays
            await self.ws.send(payload, text=True)

    def send_now(self, payload: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.send_now(payload, text=True)

    async def send_error(self, rid: RequestId, error: HudError) -> None:
        await self.send(codec.encode_error(rid, error))

    def cancel_ops(self, reason: str) -> list[asyncio.Task[None]]:
        ops = list(self.ops)
        for op in ops:
            if op.cancel(reason) and self.ops.get(op) is not None:
                op.add_done_callback(self._cancelled_before_start)
        return ops

    async def disconnect(self) -> None:
        """The connection is gone: let accepted work finish, then park or drop the session."""
        while pending := [t for t in (*self.ops, self._inline) if t is not None and not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.session is not None:
            runner = self.server.registry.detach(self.session)
            if runner is not None:
                log.warning("parking limit reached: cancelling task of session %s",
                            self.session.id)
                await runner.aclose()

    # -- methods --------------------------------------------------------------------------

    async def manifest(self, params: ManifestParams) -> ManifestResult:
        common = [v for v in params.protocol_versions if v in SUPPORTED_VERSIONS]
        if not common:
            raise UnsupportedVersion(
                f"no common protocol version: client speaks {params.protocol_versions}, "
                f"server speaks {list(SUPPORTED_VERSIONS)}",
                {"supported": list(SUPPORTED_VERSIONS), "requested": params.protocol_versions},
            )
        registry = self.server.registry
        resumed = False
        if params.session_id is not UNSET and (
            self.session is None or self.session.id != params.session_id
        ):
            if self.session is not None and self.session.has_task:
                raise InvalidRequest(
                    f"this connection holds session {self.session.id} with a task; "
                    "open a new connection to resume another"
                )
            session = registry.resume(params.session_id)
            if self.session is not None:
                registry.remove(self.session)
            self.session = session
            resumed = True
        elif self.session is None:
            self.session = registry.create()
        env = self.server.env
        return ManifestResult(
            protocol_version=max(common, key=int),
            session_id=self.session.id,
            resumed=resumed,
            environment=env.info(),
            templates=self.server.templates,
            capabilities=env.capabilities,
            task=self.session.task if resumed and self.session.task else UNSET,
        )

    async def list(self, params: Params) -> ListResult:
        return ListResult(templates=self.server.templates)

    async def start(self, params: StartParams) -> StartResult:
        session = self._session()
        template = self.server.env.templates.get(params.template)
        if template is None:
            available = sorted(self.server.env.templates)
            raise UnknownTask(
                f"unknown task template {params.template!r} (available: {', '.join(available)})",
                {"template": params.template, "available": available},
            )
        runner, ref = template.open(params.args)
        previous = session.take_runner()
        if previous is not None:
            await previous.aclose()
        session.runner, session.task = runner, ref
        try:
            prompt = await runner.start(self._timeout(template.timeout))
        except (TemplateError, asyncio.CancelledError):
            session.take_runner()
            raise
        return StartResult(
            session_id=session.id,
            task=ref,
            prompt=prompt.prompt,
            messages=prompt.messages,
            bindings=prompt.bindings,
        )

    async def grade(self, params: GradeParams) -> GradeResult:
        session = self._session()
        template_id = None if params.template is UNSET else params.template
        if not session.has_task:
            adopted = self.server.registry.adopt(template_id)
            self.server.registry.remove(session)
            self.session = session = adopted
        assert session.runner is not None and session.task is not None
        if template_id is not None and session.task.template != template_id:
            raise InvalidParams(
                f"the task in progress is {session.task.template!r}, not {template_id!r}",
                {"path": "$.params.template"},
            )
        template = self.server.env.templates[session.task.template]
        answer = template.answer.parse(params.answer)
        task = session.task
        try:
            reward = await session.runner.grade(answer, self._timeout(template.timeout))
        finally:
            if session.runner is not None and session.runner.closed:
                session.take_runner()
        return GradeResult(
            session_id=session.id,
            task=task,
            reward=reward.reward,
            subscores=reward.subscores,
            info=reward.info,
        )

    async def solve(self, params: SolveParams) -> SolveResult:
        session = self._session()
        if not session.has_task or session.task is None:
            raise NoTaskInProgress("no task in progress to solve: start one first")
        template = self.server.env.templates[session.task.template]
        if template.solution_func is None:
            raise UnknownTask(f"template {template.id!r} declares no solution",
                              {"template": template.id})
        assert session.runner is not None
        try:
            # in the task's scope, so the solution acts in this task's sandbox, browser, ...
            with session.runner.scope.entered():
                async with asyncio.timeout(self._timeout(template.timeout)):
                    answer = await template.solve(session.task.args)
        except TimeoutError:
            raise TemplateError(f"solution of {template.id!r} timed out",
                                {"phase": "solution", "template": template.id}) from None
        except HudError:
            raise
        except Exception as exc:
            log.error("solution of %r failed", template.id, exc_info=exc)
            raise TemplateError(f"solution of {template.id!r} failed: {type(exc).__name__}: "
                                f"{exc}", {"phase": "solution", "template": template.id}) from exc
        return SolveResult(answer=answer)

    async def cancel(self, params: Params) -> CancelResult:
        cancelled = self.cancel_ops("cancelled by tasks.cancel")
        if cancelled:  # let the cancelled requests answer (and clean up) first
            await asyncio.gather(*cancelled, return_exceptions=True)
        runner = self._session().take_runner()
        if runner is None:
            return CancelResult(cancelled=False)
        await runner.aclose()
        return CancelResult(cancelled=True)

    async def bye(self, params: Params) -> ByeResult:
        await self.cancel(params)
        session = self._session()
        self.server.registry.remove(session)
        self.session = None
        asyncio.get_running_loop().call_soon(self._close_soon)
        return ByeResult()

    def _close_soon(self) -> None:
        self._track(asyncio.ensure_future(self.ws.close(1000, "bye")))

    # -- helpers --------------------------------------------------------------------------

    def _session(self) -> Session:
        if self.session is None:
            raise NoTaskInProgress("no session: send manifest first")
        return self.session

    def _timeout(self, own: float | None) -> float:
        return own if own is not None else self.server.config.call_timeout
