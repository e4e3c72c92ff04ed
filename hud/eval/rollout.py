"""One rollout: environment → start → agent → grade, under one deadline.

Every failure is recorded with the phase it happened in (``environment``, ``setup``,
``agent``, ``grade``) and leaves ``reward`` unset: an infrastructure failure is never a 0.
When the deadline passes, the task is cancelled over the protocol (its cleanup runs) and the
run is marked ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..environment import Task
from .run import Run
from .trace import Phase

if TYPE_CHECKING:
    from ..runtimes import Runtime

log = logging.getLogger(__name__)

AgentCallable = Callable[[Run], Awaitable[None]]
CANCEL_TIMEOUT = 2.0


async def rollout(
    task: Task,
    agent: AgentCallable,
    runtime: Runtime,
    *,
    group_id: str | None = None,
    timeout: float | None = None,
    max_steps: int | None = None,
    on_start: Callable[[Run], object] | None = None,
) -> Run:
    """Run ``agent`` on ``task`` in an environment from ``runtime``; never raises for the
    rollout's own failures (they are in ``run.error``), only for cancellation, after marking
    the run ``cancelled``: ``on_start`` receives the run as soon as it exists, so a caller
    can still record it then."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run = Run(task, group_id=group_id, max_steps=max_steps, deadline=deadline)
    if on_start is not None:
        on_start(run)
    run.describe_agent(agent)
    phase: Phase = "environment"
    run.enter_phase(phase)
    try:
        async with asyncio.timeout_at(_loop_deadline(deadline)), runtime.open(task) as client:
            run.attach(client)
            try:
                phase = "setup"
                run.enter_phase(phase)
                run.started(await client.start(task.id, task.args))
                phase = "agent"
                run.enter_phase(phase)
                await agent(run)
                phase = "grade"
                run.enter_phase(phase)
                run.graded(await client.grade(run.answer, template=task.id))
            except TimeoutError:
                await _cancel(client)
                raise
            finally:
                run.attach(None)
    except TimeoutError as exc:
        run.failed("timeout", phase, TimeoutError(f"rollout timed out after {timeout:g} s "
                                                  f"(during {phase})") if timeout else exc)
    except asyncio.CancelledError:
        run.failed("cancelled", phase, asyncio.CancelledError("rollout cancelled"))
        raise
    except Exception as exc:
        log.debug("rollout of %s failed during %s", task.slug, phase, exc_info=exc)
        run.failed("error", phase, exc)
    return run


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
