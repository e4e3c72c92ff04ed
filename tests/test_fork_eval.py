"""The eval API's side of ``tasks.fork``: ``run.fork(n)`` and ``Taskset.run(...,
branch_at=K, branches=N)``, over the pool runtime (each rollout its own process), recorded in
the trace store and in ``hud export`` rows."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from fakes.chat_completions import call, reply, serve_chat_completions
from fork_env import env
from hud.harnesses.openai_compatible import OpenAICompatibleAgent

from hud.eval import Taskset
from hud.eval.branching import finish_branch
from hud.eval.rollout import rollout
from hud.eval.run import Run
from hud.eval.store import TraceStore
from hud.runtimes import InProcessRuntime, PoolRuntime

pytestmark = pytest.mark.anyio


class RouteAgent:
    """Leaves a note ``start`` in the prefix; each branch then picks the next way."""

    name = "route-agent"

    def __init__(self) -> None:
        self.ways = itertools.cycle(["left", "right"])

    async def __call__(self, run: Run) -> None:
        tools = await run.client.open("tools")
        if run.trace.parent_id is None:
            await tools.call_tool("write_note", {"name": "start", "text": "home"})
            run.record("tool_call", name="write_note", note="start")
            run.memory["notes"] = ["start"]
            return
        way = next(self.ways)
        await tools.call_tool("write_note", {"name": "route", "text": way})
        run.record("tool_call", name="write_note", note="route", way=way)
        run.memory["notes"].append("route")


async def test_taskset_branches_each_rollout_and_records_the_tree(tmp_path: Path) -> None:
    agent = RouteAgent()
    taskset = Taskset([env.templates["plan"](want="left")], name="routes")
    with TraceStore(tmp_path / "traces") as store:
        async with PoolRuntime(size=1) as runtime:
            job = await taskset.run(agent, runtime=runtime, store=store, branch_at=1,
                                    branches=2)
        prefix, *branches = job.runs
        assert prefix.status == "branched" and prefix.reward is None and prefix.error is None
        assert prefix.trace.steps[-1].data["branches"] == [b.trace_id for b in branches]
        (summary,) = store.jobs()
        assert (summary["planned"], summary["runs"], summary["errors"]) == (3, 3, 0)
        assert len(branches) == 2
        shared = len(prefix.trace.steps) - 1  # its last step, after the fork: it branched
        ways = {}
        for branch in branches:
            assert branch.status == "completed", branch.error
            assert (branch.trace.parent_id, branch.trace.branch_step) == (prefix.trace_id,
                                                                           shared)
            assert branch.group_id == branch.trace.group_id == prefix.trace_id  # siblings: a group
            assert branch.trace.steps[:shared] == prefix.trace.steps[:shared]
            assert branch.memory["notes"] == ["start", "route"]
            way = branch.trace.steps[-2].data["way"]  # the last tool call, before the grade
            ways[way] = branch.reward
        assert ways == {"left": 1.0, "right": 0.0}
        assert prefix.memory["notes"] == ["start"]  # each branch had a copy
        stored = store.run(branches[0].trace_id)["trace"]
        assert stored["parent_id"] == prefix.trace_id
        rows = list(store.export(job.id))
        assert {r["trace_id"] for r in rows} == {b.trace_id for b in branches}
        assert {(r["prefix_id"], r["branch_step"]) for r in rows} == {(prefix.trace_id,
                                                                      shared)}
        assert sorted(r["advantage"] for r in rows) == [-1.0, 1.0]


async def test_run_fork_by_hand() -> None:
    taskset = Taskset([env.templates["plan"](want="right")])
    forked: list[Run] = []

    async def agent(run: Run) -> None:
        tools = await run.client.open("tools")
        await tools.call_tool("write_note", {"name": "start", "text": "home"})
        for branch, way in zip(await run.fork(2), ["left", "right"], strict=True):
            branch_tools = await branch.client.open("tools")
            await branch_tools.call_tool("write_note", {"name": "route", "text": way})
            forked.append(await finish_branch(branch))
        run.answer = None  # the original leaves no route: reward 0

    async with PoolRuntime(size=1) as runtime:
        job = await taskset.run(agent, runtime=runtime)
    [original] = job.runs
    assert original.reward == 0.0
    assert [(b.reward, b.trace.parent_id) for b in forked] == [
        (0.0, original.trace_id), (1.0, original.trace_id)]


async def test_a_harness_branch_goes_on_from_the_prefix_conversation() -> None:
    ways = iter(["left", "right"])

    def respond(body: dict[str, object]) -> object:
        said = [m for m in body["messages"] if m["role"] == "tool"]  # type: ignore[index]
        if not said:  # the prefix's one turn
            return reply(tool_calls=[call("write_note", {"name": "start", "text": "home"})])
        if len(said) == 1:  # a branch's first turn: it saw the prefix's tool result
            return reply(tool_calls=[call("write_note", {"name": "route",
                                                         "text": next(ways)})])
        return reply("done")

    with serve_chat_completions(respond) as fake:
        agent = OpenAICompatibleAgent(model="fake-model", base_url=fake.base_url)
        taskset = Taskset([env.templates["plan"](want="left")])
        async with PoolRuntime(size=1) as runtime:
            job = await taskset.run(agent, runtime=runtime, branch_at=1, branches=2)
    prefix, *branches = job.runs
    assert sorted(b.reward for b in branches) == [0.0, 1.0], [b.error for b in branches]
    bodies = [r["body"] for r in fake.requests if r["path"].endswith("/completions")]
    assert len(bodies) == 5  # the prefix's turn, then two turns per branch
    prefix_turn = bodies[0]["messages"]
    firsts = [b["messages"] for b in bodies if len(b["messages"]) == len(prefix_turn) + 2]
    assert len(firsts) == 2
    for messages in firsts:  # each branch's first request carries the prefix's conversation
        assert messages[:len(prefix_turn)] == prefix_turn
        assert messages[-1]["role"] == "tool"
    assert len(prefix.memory["messages"]) == len(prefix_turn) + 2  # untouched by branches


async def test_a_retried_attempt_starts_with_empty_memory() -> None:
    seen: list[dict[str, object]] = []

    async def agent(run: Run) -> None:
        seen.append(dict(run.memory))
        run.memory["messages"] = ["the first attempt's conversation"]
        if len(seen) == 1:
            raise ConnectionError("the environment went away")
        run.answer = "7"

    async with InProcessRuntime() as runtime:
        run = await rollout(env.templates["guess"](), agent, runtime, retries=1)
    assert run.reward == 1.0 and run.trace.attempt == 2
    assert seen == [{}, {}]  # the retry did not go on from the failed attempt's memory
