"""One rollout: environment → start → agent → grade, under one deadline per attempt.

Every failure is recorded with the phase it happened in (``environment``, ``setup``,
``agent``, ``grade``) and leaves ``reward`` unset: an infrastructure failure is never a 0.
When the deadline passes, or the rollout is cancelled (Ctrl-C), the task is cancelled over
the protocol (its cleanup runs) and the run is marked ``timeout`` or ``cancelled``. A
template's own ``agent_timeout`` (a Harbor task's ``[agent] timeout_sec``) only stops the
agent: the rollout goes on to grade what it left, as Harbor runs its verifier then.

With ``retries``, a run that failed for infrastructure reasons (:data:`RETRIED`) is tried
again in a fresh environment, in the same run: its trace keeps every attempt's steps, a
``retry`` step between them, and ``attempt`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..environment import Task
from .run import Run
from .trace import Phase, Trace

if TYPE_CHECKING:
    from ..runtimes import Runtime

log = logging.getLogger(__name__)

AgentCallable = Callable[[Run], Awaitable[None]]
CANCEL_TIMEOUT = 5.0
"""Seconds a cancelled task's cleanup may take before the environment is stopped anyway."""


async def rollout(
    task: Task,
    agent: AgentCallable,
    runtime: Runtime,
    *,
    group_id: str | None = None,
    timeout: float | None = None,
    max_steps: int | None = None,
    retries: int = 0,
    trace: Trace | None = None,
    on_start: Callable[[Run], object] | None = None,
) -> Run:
    """Run ``agent`` on ``task`` in an environment from ``runtime``, up to ``1 + retries``
    times while it fails for infrastructure reasons; ``trace`` continues a stored run (a
    resumed job's: same trace id, its steps kept). Never raises for the rollout's own
    failures (they are in ``run.error``), only for cancellation, after marking the run
    ``cancelled``: ``on_start`` receives the run as soon as it exists, so a caller can
    still record it then."""
    run = Run(task, group_id=group_id, max_steps=max_steps)
    if trace is not None:
        run.trace = trace
        _next_attempt(run, "resume")
    if on_start is not None:
        on_start(run)
    run.describe_agent(agent)
    for attempt in range(retries + 1):
        if attempt:
            _next_attempt(run, "retry")
        if not await _attempt(run, agent, runtime, timeout):
            break
    return run


RETRIED = {
    "environment": "any failure: no environment came up, or none could be reached",
    "setup": "any failure or timeout: the environment's own start",
    "agent": "a lost connection to the environment only (not the agent's own error or "
             "timeout: a harness retries its model calls itself)",
    "grade": "a lost connection to the environment only",
}
"""Which failures ``retries`` tries again, by phase. A completed run is never retried,
whatever its reward, nor a cancelled one."""


def _infrastructure(phase: Phase, exc: BaseException) -> bool:
    return phase in ("environment", "setup") or isinstance(exc, ConnectionError)


async def _attempt(run: Run, agent: AgentCallable, runtime: Runtime,
                   timeout: float | None) -> bool:
    """One attempt at ``run``'s task, under its own deadline; True when it failed for
    infrastructure reasons (:data:`RETRIED`). Raises only ``CancelledError``."""
    task = run.task
    run.deadline = None if timeout is None else time.monotonic() + timeout
    phase: Phase = "environment"
    run.enter_phase(phase)
    try:
        async with asyncio.timeout_at(_loop_deadline(run.deadline)), \
                runtime.open(task) as client:
            run.attach(client)
            try:
                phase = "setup"
                run.enter_phase(phase)
                run.started(await client.start(task.id, task.args))
                phase = "agent"
                run.enter_phase(phase)
                await _agent_phase(run, agent)
                phase = "grade"
                run.enter_phase(phase)
                run.graded(await client.grade(run.answer, template=task.id))
            except (TimeoutError, asyncio.CancelledError):
                await _cancel(client)  # over the protocol, so the template's cleanup runs
                raise
            finally:
                run.attach(None)
    except TimeoutError as exc:
        run.failed("timeout", phase, TimeoutError(f"rollout timed out after {timeout:g} s "
                                                  f"(during {phase})") if timeout else exc)
        return _infrastructure(phase, exc)
    except asyncio.CancelledError:
        run.failed("cancelled", phase, asyncio.CancelledError("rollout cancelled"))
        raise
    except Exception as exc:
        log.debug("rollout of %s failed during %s", task.slug, phase, exc_info=exc)
        run.failed("error", phase, exc)
        return _infrastructure(phase, exc)
    return False


async def _agent_phase(run: Run, agent: AgentCallable) -> None:
    """``agent`` on ``run``, stopped after its template's ``agent_timeout`` if it has one:
    then a ``stop`` step says so (reason ``agent_timeout``, as a harness's own limit
    records it) and the rollout grades what the agent left. Not an error, and no retry:
    Harbor, too, verifies after an agent timeout and keeps the reward. A rollout deadline
    that comes first ends the rollout instead (a ``timeout``, ungraded)."""
    template = run.task.template
    limit = template.agent_timeout if template is not None else None
    if limit is None:
        await agent(run)
        return
    deadline = run.deadline
    ends = time.monotonic() + limit
    run.deadline = ends if deadline is None else min(deadline, ends)  # for run.remaining()
    try:
        async with asyncio.timeout(limit) as cut:
            await agent(run)
    except TimeoutError:
        if not cut.expired():
            raise  # the agent's own TimeoutError, not our limit's
        run.record("stop", reason="agent_timeout", timeout=limit)
    finally:
        run.deadline = deadline


def _next_attempt(run: Run, why: str) -> None:
    """Start another attempt in the same trace: the last one's outcome stays in its steps
    (its ``error`` step) and in a ``retry`` (or ``resume``) step naming it."""
    trace = run.trace
    last = None if trace.error is None else msgspec.to_builtins(trace.error)
    trace.attempt += 1
    trace.record(why, attempt=trace.attempt, after=trace.status, error=last)
    trace.status, trace.error, trace.ended_at = "pending", None, None
    trace.reward, trace.subscores, trace.info = None, [], {}
    run.answer = None
    run.memory.clear()  # a fresh environment: the agent starts over, not from its last try


def _loop_deadline(deadline: float | None) -> float | None:
    """``asyncio.timeout_at`` wants the loop's clock; ``time.monotonic`` is the same clock
    for the default and uvloop loops, but convert to be safe."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


async def _cancel(client: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CANCEL_TIMEOUT):
            await client.cancel()
