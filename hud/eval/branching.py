"""Branching runs (``tasks.fork``): one prefix, many continuations.

:meth:`Run.fork <hud.eval.run.Run.fork>` turns a run, mid-episode, into ``count`` runs, each
driving a branch of the environment (an independent copy of the episode as it is now), each
with a copy of the run's trace so far and of :attr:`Run.memory <hud.eval.run.Run.memory>`
(where an agent keeps what it needs to go on: its conversation). A branch's trace names its
prefix (``parent_id``) and how many of the prefix's steps it shares (``branch_step``); its
group id is the prefix's trace id, so ``hud export`` computes each branch's advantage against
its siblings. :func:`branch_rollout` drives a whole tree for
``Taskset.run(..., branch_at=K, branches=N)``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import TYPE_CHECKING

import msgspec

from ..client import Client
from ..runtimes.base import end_session
from .trace import new_id

if TYPE_CHECKING:
    from ..environment import Task
    from ..protocol.messages import Fork
    from ..runtimes import Runtime
    from .rollout import AgentCallable
    from .run import Run

log = logging.getLogger(__name__)


async def fork_run(run: Run, count: int) -> list[Run]:
    """``count`` runs continuing ``run`` from now, each with a live client of its own
    (claimed); finish each with :func:`finish_branch`. ``run`` goes on unchanged."""
    forks = await run.client.fork(count)
    branches: list[Run] = []
    try:
        for fork in forks:
            claimed = await Client.claim(fork, proxy=run.client.proxy)  # the parent's way
            branches.append(_branch_of(run, claimed, fork))
    except BaseException:
        await asyncio.gather(*(end_session(b.client) for b in branches))
        raise
    return branches


def _branch_of(parent: Run, client: Client, fork: Fork) -> Run:
    # lazy: run.py imports this module for Run.fork
    from .run import Run

    branch = Run(parent.task, group_id=parent.trace.id, max_steps=parent.max_steps,
                 deadline=parent.deadline)
    branch.job_id, branch.agent_name, branch.model = parent.job_id, parent.agent_name, \
        parent.model
    branch.memory = copy.deepcopy(parent.memory)
    branch.answer = copy.deepcopy(parent.answer)
    # everything but the steps copied deeply (the trace's lists and records are appended to
    # and changed as a run goes on); the steps so far are shared, as they never change
    trace = copy.deepcopy(msgspec.structs.replace(parent.trace, steps=[]))
    branch.trace = msgspec.structs.replace(
        trace, id=new_id(), group_id=branch.group_id, steps=list(parent.trace.steps),
        parent_id=parent.trace.id, branch_step=len(parent.trace.steps))
    branch.started_from(parent, fork)
    branch.attach(client)
    branch.record("branch", parent=parent.trace.id, session_id=fork.session_id)
    return branch


async def finish_branch(run: Run) -> Run:
    """Grade a branch with its :attr:`~Run.answer` (failures recorded, never raised) and end
    its session."""
    client = run.client
    try:
        run.graded(await client.grade(run.answer, template=run.task.id))
    except Exception as exc:
        run.failed("error", "grade", exc)
    finally:
        run.attach(None)
        await end_session(client)
    return run


async def branch_rollout(task: Task, agent: AgentCallable, runtime: Runtime, *,
                         branch_at: int, branches: int, group_id: str | None = None,
                         max_steps: int | None = None) -> list[Run]:
    """Run ``agent`` on ``task`` for ``branch_at`` steps (its ``max_steps``), fork the
    episode ``branches`` ways, and run ``agent`` again on each branch (``max_steps``) to
    its grade. Returns the prefix (status ``branched``: it has no reward of its own) then the
    branches. Failures are recorded in the runs, never raised."""
    # lazy: run.py imports this module for Run.fork
    from .run import Run

    prefix = Run(task, group_id=group_id, max_steps=branch_at)
    prefix.agent_name = getattr(agent, "name", type(agent).__name__)
    prefix.model = getattr(agent, "model", None)
    phase = "environment"
    try:
        async with runtime.open(task) as client:
            prefix.attach(client)
            phase = "setup"
            prefix.started(await client.start(task.id, task.args))
            phase = "agent"
            await agent(prefix)
            children = await fork_run(prefix, branches)
            done = await asyncio.gather(*(_continue(b, agent, max_steps) for b in children))
            prefix.branched(done)
            prefix.attach(None)
            return [prefix, *done]
    except Exception as exc:
        log.debug("branched rollout of %s failed during %s", task.slug, phase, exc_info=exc)
        prefix.failed("error", phase, exc)  # type: ignore[arg-type]
        return [prefix]


async def _continue(branch: Run, agent: AgentCallable, max_steps: int | None) -> Run:
    branch.max_steps = max_steps
    try:
        await agent(branch)
    except Exception as exc:
        branch.failed("error", "agent", exc)
        client = branch.client
        branch.attach(None)
        await end_session(client)
        return branch
    return await finish_branch(branch)
