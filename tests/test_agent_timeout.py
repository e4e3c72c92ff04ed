"""A template's ``agent_timeout`` (what a Harbor task's ``[agent] timeout_sec`` becomes): the
agent is stopped, a ``stop`` step says so, and the rollout grades what the agent left; the
rollout's own deadline, when it comes first, ends the rollout ungraded; a template without
one does not cut its agent off. In process; tests/test_harbor_container.py runs a Harbor
task's verifier after its agent's timeout."""

from __future__ import annotations

import asyncio

import pytest

from hud import Environment
from hud.eval import InProcessRuntime, Run, Taskset

pytestmark = pytest.mark.anyio
LIMIT = 0.2

env = Environment("agent-timeout")


@env.template(agent_timeout=LIMIT)
async def limited():
    answer = yield "Write 'partial', then take your time."
    yield 1.0 if answer == "partial" else 0.0


@env.template(agent_timeout=600)
async def generous():
    answer = yield "Write 'partial', then take your time."
    yield 1.0 if answer == "partial" else 0.0


@env.template()
async def unlimited():
    answer = yield "Write 'partial', then take your time."
    yield 1.0 if answer == "partial" else 0.0


def slow(seconds: float, seen: dict[str, float | None] | None = None):
    """An agent that answers 'partial' and then sleeps ``seconds`` (noting remaining())."""

    async def agent(run: Run) -> None:
        run.answer = "partial"
        if seen is not None:
            seen["remaining"] = run.remaining()
        await asyncio.sleep(seconds)

    return agent


async def test_the_agent_is_stopped_and_what_it_left_is_graded() -> None:
    seen: dict[str, float | None] = {}
    job = await Taskset([limited()]).run(slow(3600, seen), runtime=InProcessRuntime(),
                                         timeout=10)
    [run] = job.runs
    assert (run.status, run.reward, run.error) == ("completed", 1.0, None)
    [stop] = [step for step in run.trace.steps if step.kind == "stop"]
    assert stop.data == {"reason": "agent_timeout", "timeout": LIMIT}
    # The agent's view of its deadline is its own limit, not the rollout's 10 s.
    assert seen["remaining"] is not None and seen["remaining"] <= LIMIT


async def test_a_sooner_rollout_deadline_ends_the_rollout_ungraded() -> None:
    job = await Taskset([generous()]).run(slow(3600), runtime=InProcessRuntime(), timeout=0.5)
    [run] = job.runs
    assert (run.status, run.reward) == ("timeout", None)
    assert run.error is not None and run.error.phase == "agent"
    assert run.error.message == "rollout timed out after 0.5 s (during agent)"
    assert not [step for step in run.trace.steps if step.kind == "stop"]


async def test_without_an_agent_timeout_the_agent_is_not_cut_off() -> None:
    seen: dict[str, float | None] = {}
    job = await Taskset([unlimited()]).run(slow(2 * LIMIT, seen), runtime=InProcessRuntime())
    [run] = job.runs
    assert (run.status, run.reward) == ("completed", 1.0)
    assert not [step for step in run.trace.steps if step.kind == "stop"]
    assert seen["remaining"] is None


async def test_the_agents_own_timeout_error_is_not_the_limits() -> None:
    """A TimeoutError the agent raises before its limit ends the rollout as it did before
    (ungraded, with the agent's message), not as a stop at the limit."""

    async def times_out(run: Run) -> None:
        raise TimeoutError("the model did not answer")

    job = await Taskset([limited()]).run(times_out, runtime=InProcessRuntime())
    [run] = job.runs
    assert (run.status, run.reward) == ("timeout", None)
    assert run.error is not None
    assert (run.error.phase, run.error.message) == ("agent", "the model did not answer")
    assert not [step for step in run.trace.steps if step.kind == "stop"]
