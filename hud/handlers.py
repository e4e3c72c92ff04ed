"""What the server does for each method: one handler per row of the method table.

A handler takes the connection's :class:`Context` and the decoded params and returns the
result Struct, or raises a :class:`~hud.protocol.errors.HudError`. A handler that never
waits is a plain function: the driver answers it on the spot, without a task; one that may
wait (it runs template code, or waits for other calls) is a coroutine function. It does no
I/O on the connection: the driver (:mod:`hud.control`) sends what it returns. Handlers
reach the server only through :class:`Host`, the narrow view of it they need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .environment import Environment
from .nursery import Nursery
from .protocol.errors import (
    CannotFork,
    HudError,
    InvalidParams,
    InvalidRequest,
    NoTaskInProgress,
    TemplateError,
    UnknownTask,
    UnsupportedVersion,
)
from .protocol.messages import (
    SUPPORTED_VERSIONS,
    UNSET,
    Body,
    ByeParams,
    ByeResult,
    CancelParams,
    CancelResult,
    ForkParams,
    ForkResult,
    GradeParams,
    GradeResult,
    ListParams,
    ListResult,
    ManifestParams,
    ManifestResult,
    SolveParams,
    SolveResult,
    StartParams,
    StartResult,
    StatusParams,
    StatusResult,
    TaskStatus,
    TemplateInfo,
)
from .protocol.methods import METHODS
from .session import Registry, Session

if TYPE_CHECKING:
    from .forks import Forks

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Host:
    """What control connections need of their server, and nothing more."""

    env: Environment
    registry: Registry
    call_timeout: float
    """Seconds each template phase may take, unless the template sets its own."""
    max_message_size: int
    tasks: Nursery
    """The server's: runs a connection's calls (:meth:`Nursery.spawn_quiet`)."""
    templates: list[TemplateInfo] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)
    """Methods of the table this server does not serve, with the reason (for the error)."""
    forks: Forks | None = None
    """Where ``tasks.fork`` makes branches; None where the server does not fork."""

    def timeout(self, own: float | None) -> float:
        return own if own is not None else self.call_timeout


class Context(Protocol):
    """One control connection, as its handlers see it."""

    host: Host
    session: Session | None

    async def cancel_running(self, reason: str) -> None:
        """Cancel the queued requests of this connection (waiting or in progress) and
        return once each has answered."""

    def close_soon(self) -> None:
        """Close the connection once the reply in progress is out."""


Handler = Callable[[Context, Any], Coroutine[Any, Any, Body] | Body]
HANDLERS: dict[str, Handler] = {}
"""The handler of each method, by name; checked against the method table below."""


H = TypeVar("H", bound=Handler)


def handles(method: str) -> Callable[[H], H]:
    def register(func: H) -> H:
        HANDLERS[method] = func
        return func

    return register


def session_of(ctx: Context) -> Session:
    if ctx.session is None:  # the connection core lets no such request through
        raise NoTaskInProgress("no session: send manifest first")
    return ctx.session


# -- session --------------------------------------------------------------------------------


@handles("manifest")
def manifest(ctx: Context, params: ManifestParams) -> ManifestResult:
    common = [v for v in params.protocol_versions if v in SUPPORTED_VERSIONS]
    if not common:
        raise UnsupportedVersion(
            f"no common protocol version: client speaks {params.protocol_versions}, "
            f"server speaks {list(SUPPORTED_VERSIONS)}",
            {"supported": list(SUPPORTED_VERSIONS), "requested": params.protocol_versions},
        )
    host, registry = ctx.host, ctx.host.registry
    resumed = False
    if params.session_id is not UNSET and (
        ctx.session is None or ctx.session.id != params.session_id
    ):
        if ctx.session is not None and ctx.session.has_task:
            raise InvalidRequest(
                f"this connection holds session {ctx.session.id} with a task; "
                "open a new connection to resume another"
            )
        session = registry.resume(params.session_id)
        if ctx.session is not None:
            registry.remove(ctx.session)
        ctx.session = session
        resumed = True
    elif ctx.session is None:
        ctx.session = registry.create()
    return ManifestResult(
        protocol_version=max(common, key=int),
        session_id=ctx.session.id,
        resumed=resumed,
        environment=host.env.info(),
        templates=host.templates,
        capabilities=host.env.capabilities,
        task=ctx.session.task if resumed and ctx.session.task else UNSET,
    )


@handles("bye")
async def bye(ctx: Context, params: ByeParams) -> ByeResult:
    await cancel(ctx, CancelParams())
    ctx.host.registry.remove(session_of(ctx))
    ctx.session = None
    ctx.close_soon()
    return ByeResult()


# -- tasks ----------------------------------------------------------------------------------


@handles("tasks.list")
def list_templates(ctx: Context, params: ListParams) -> ListResult:
    return ListResult(templates=ctx.host.templates)


@handles("tasks.status")
def status(ctx: Context, params: StatusParams) -> StatusResult:
    registry, now = ctx.host.registry, time.monotonic()
    tasks = [
        TaskStatus(
            session_id=s.id,
            task=s.task,
            attached=s.attached,
            started=s.runner.started,
            age=round(now - s.started_at, 3),
            expires_in=UNSET if s.attached else round(
                max(0.0, s.parked_at + registry.park_ttl - now), 3),
        )
        for s in registry
        if s.has_task and s.task is not None and s.runner is not None
    ]
    return StatusResult(sessions=len(registry), tasks=tasks)


@handles("tasks.start")
async def start(ctx: Context, params: StartParams) -> StartResult:
    session, env = session_of(ctx), ctx.host.env
    template = env.templates.get(params.template)
    if template is None:
        available = sorted(env.templates)
        raise UnknownTask(
            f"unknown task template {params.template!r} (available: {', '.join(available)})",
            {"template": params.template, "available": available},
        )
    runner, ref = template.open(params.args)
    previous = session.take_runner()
    if previous is not None:
        await previous.aclose()
    session.hold(runner, ref)
    try:
        prompt = await runner.start(ctx.host.timeout(template.timeout))
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


@handles("tasks.grade")
async def grade(ctx: Context, params: GradeParams) -> GradeResult:
    session, registry = session_of(ctx), ctx.host.registry
    template_id = None if params.template is UNSET else params.template
    if not session.has_task:
        adopted = registry.adopt(template_id)
        registry.remove(session)
        ctx.session = session = adopted
    assert session.runner is not None and session.task is not None
    if template_id is not None and session.task.template != template_id:
        raise InvalidParams(
            f"the task in progress is {session.task.template!r}, not {template_id!r}",
            {"path": "$.params.template"},
        )
    template = ctx.host.env.templates[session.task.template]
    answer = template.answer.parse(params.answer)
    task = session.task
    try:
        reward = await session.runner.grade(answer, ctx.host.timeout(template.timeout))
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


@handles("tasks.solve")
async def solve(ctx: Context, params: SolveParams) -> SolveResult:
    session = session_of(ctx)
    if not session.has_task or session.task is None or session.runner is None:
        raise NoTaskInProgress("no task in progress to solve: start one first")
    template = ctx.host.env.templates[session.task.template]
    if template.solution_func is None:
        raise UnknownTask(f"template {template.id!r} declares no solution",
                          {"template": template.id})
    phase = {"phase": "solution", "template": template.id}
    try:
        # in the task's scope, so the solution acts in this task's sandbox, browser, ...
        with session.runner.scope.entered():
            async with asyncio.timeout(ctx.host.timeout(template.timeout)):
                answer = await template.solve(session.task.args)
    except TimeoutError:
        raise TemplateError(f"solution of {template.id!r} timed out", phase) from None
    except HudError:
        raise
    except Exception as exc:
        log.error("solution of %r failed", template.id, exc_info=exc)
        raise TemplateError(f"solution of {template.id!r} failed: {type(exc).__name__}: "
                            f"{exc}", phase) from exc
    return SolveResult(answer=answer)


@handles("tasks.fork")
async def fork(ctx: Context, params: ForkParams) -> ForkResult:
    session, forks = session_of(ctx), ctx.host.forks
    if forks is None:  # a host that declines tasks.fork never gets here; one built by hand
        raise CannotFork("this server does not fork tasks", {"cause": "runtime"})
    branches = await forks.branch(ctx.host.env, session, params.count)
    return ForkResult(session_id=session.id, sessions=branches)


@handles("tasks.cancel")
async def cancel(ctx: Context, params: CancelParams) -> CancelResult:
    await ctx.cancel_running("cancelled by tasks.cancel")
    runner = session_of(ctx).take_runner()
    if runner is None:
        return CancelResult(cancelled=False)
    await runner.aclose()
    return CancelResult(cancelled=True)


if set(METHODS) != set(HANDLERS):  # a method added to the table needs its handler here
    raise RuntimeError(f"methods and handlers differ: {set(METHODS) ^ set(HANDLERS)}")
