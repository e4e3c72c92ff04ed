"""Harnesses that attack their own rollout, registered by tests/test_reward_integrity.py."""

from __future__ import annotations

from hud.agents import Agent
from hud.eval.run import Run


class SandboxKiller(Agent):
    """Kills every process in its sandbox, the sandbox's supervisor included, then answers."""

    name = "sandbox_killer"

    async def __call__(self, run: Run) -> None:
        shell = await run.client.open("shell")
        # Its own shell dies with the rest: the command ends by timing out, as a model's
        # tool call would, and the agent answers anyway.
        result = await shell.run("kill -9 -1", timeout=3)
        run.record("tool_result", tool_call_id="1", content=f"timed out: {result.timed_out}")
        run.answer = "done"
