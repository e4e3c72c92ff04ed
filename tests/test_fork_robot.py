"""``tasks.fork`` of a robot episode mid-way: CartPole, branched at step K and driven by
different policies, each branch its own simulator (a copy of the original's, in the branch's
process) on a thread of its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from conftest import serving  # noqa: E402
from hud.capabilities.robot import Outcome, Robot  # noqa: E402
from hud.harnesses.robot import cartpole  # noqa: E402

from hud import Environment  # noqa: E402
from hud.client import Client, open_client  # noqa: E402

pytestmark = pytest.mark.anyio


def survived(outcome: Outcome) -> bool:
    return outcome.truncated and not outcome.terminated


env = Environment("forked-robots")
pole = env.gym("CartPole-v1", success=survived, pace="lockstep", control_rate=100.0)


@env.template()
async def balance(seed: int = 0, steps: int = 120):
    episode = await pole.reset(seed=seed, max_steps=steps, prompt="balance")
    yield {"prompt": episode.prompt, "bindings": episode.bindings}
    yield await episode.result()


def state_of(observation: Any) -> np.ndarray:
    return np.asarray(observation.arrays()["observation.state"])


def balancing(observation: Any) -> np.ndarray:
    return cartpole({"observation.state": state_of(observation)[None]})[0]


async def drive(robot: Robot, policy: Any, steps: int | None = None) -> Any:
    """Act with ``policy`` on each observation (``steps`` of them, or to the end); returns
    the last observation."""
    last = None
    async for observation in robot:
        last = observation
        if observation.terminated or observation.truncated or steps == 0:
            break
        await robot.act(policy(observation))
        steps = None if steps is None else steps - 1
    return last


async def test_cartpole_branched_mid_episode_follows_each_branch_policy() -> None:
    async with serving(env, max_forks=4) as server, open_client(server.url) as client:
        await client.start("balance", {"seed": 3, "steps": 120})
        robot = await client.open("robot")
        at_fork = await drive(robot, balancing, steps=30)
        assert at_fork.index == 30
        branches = await client.fork(2)
        tokens = {b.bindings["robot"]["token"] for b in branches}
        assert len(tokens) == 2 and client.bindings["robot"]["token"] not in tokens
        policies = [balancing, lambda _: np.array(0, np.int64)]  # balance; always push left
        graded = []
        for branch, policy in zip(branches, policies, strict=True):
            async with await Client.claim(branch) as claimed:
                branch_robot = await claimed.open("robot")
                first = await branch_robot.observe()
                # the branch starts where the original was: same step, same state
                assert first is not None and first.index == 30
                assert np.array_equal(state_of(first), state_of(at_fork))
                await branch_robot.act(policy(first))
                await drive(branch_robot, policy)
                await branch_robot.aclose()
                graded.append(await claimed.grade(None))
        good, bad = graded
        assert (good.reward, good.info["status"], good.info["steps"]) == (1.0, "completed", 120)
        assert bad.reward == 0.0 and bad.info["status"] == "completed"
        assert 30 < bad.info["steps"] < 120  # pushed left, the pole fell after the fork
        # the original goes on from step 30, unchanged by its branches
        await robot.act(balancing(at_fork))
        last = await drive(robot, balancing)
        assert last.index == 120
        original = await client.grade(None)
        assert (original.reward, original.info["steps"]) == (1.0, 120)
