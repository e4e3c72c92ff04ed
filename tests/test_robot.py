"""The robot capability end to end: a real Gymnasium simulator, the real server, real
WebSockets through the control port's tunnel, and the bad-input cases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from conftest import serving  # noqa: E402
from hud.capabilities.robot import ActionRejected, Outcome, Robot  # noqa: E402
from hud.capabilities.robot.wire import Claim, Error, decode_to_agent, encode  # noqa: E402
from hud.harnesses.robot import RandomHarness, RobotHarness, ScriptedHarness, cartpole  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from hud import Environment  # noqa: E402
from hud.client import Client  # noqa: E402
from hud.eval import InProcessRuntime, Taskset  # noqa: E402
from hud.protocol.errors import TemplateError  # noqa: E402

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


class Crashes(gymnasium.Wrapper):
    """CartPole whose step raises at step ``crash_at`` (a reset option)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        options = dict(options or {})
        self.crash_at, self.steps = options.pop("crash_at", None), 0
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().step(action)


def survived(outcome: Outcome) -> bool:
    return outcome.truncated and not outcome.terminated


env = Environment("robots")
pole = env.gym(lambda: Crashes(gymnasium.make("CartPole-v1")), success=survived,
               pace="lockstep", control_rate=100.0)
arm = env.gym("Pendulum-v1", name="arm", pace="lockstep", max_steps=50, control_rate=100.0)


@env.template()
async def balance(seed: int = 0, steps: int = 100, pace: str = "lockstep",
                  action_timeout: float = 5.0, crash_at: int = 0):
    episode = await pole.reset(seed=seed, options={"crash_at": crash_at or None},
                               max_steps=steps, pace=pace, action_timeout=action_timeout,
                               prompt="balance")
    yield {"prompt": episode.prompt, "bindings": episode.bindings}
    yield await episode.result()


@env.template()
async def swing(seed: int = 0, pace: str = "lockstep", steps: int = 50):
    episode = await arm.reset(seed=seed, prompt="swing up", pace=pace, max_steps=steps)
    yield {"prompt": episode.prompt, "bindings": episode.bindings}
    yield await episode.result()


async def episode(server: Any, template: str = "balance", **args: Any) -> tuple[Client, Robot]:
    client = await Client.connect(server.url)
    await client.start(template, args)
    return client, await client.open("robot" if template == "balance" else "arm")


async def solve(robot: Robot) -> None:
    async for observation in robot:
        if not (observation.terminated or observation.truncated):
            await robot.act(cartpole({"observation.state": observation.arrays()[
                "observation.state"][None]})[0])


async def test_a_scripted_policy_balances_the_pole_through_the_tunnel() -> None:
    async with serving(env) as server:
        client, robot = await episode(server, steps=150)
        async with client:
            assert robot.contract.robot_type == "gymnasium/CartPole-v1"
            assert robot.contract.control_rate == 100.0
            assert (robot.start.pace, robot.start.max_steps, robot.prompt) == (
                "lockstep", 150, "balance")
            await solve(robot)
            assert robot.result is not None and robot.result.success
            assert (robot.result.steps, robot.result.episode_return) == (150, 150.0)
            graded = await client.grade(None)
            assert graded.reward == 1.0 and graded.info["status"] == "completed"
        assert pole._open == 0 and not pole.episodes  # the simulator went back


async def test_chunks_run_open_loop_and_invalid_actions_are_refused_without_effect() -> None:
    async with serving(env) as server:
        client, robot = await episode(server, steps=100)
        async with client:
            robot.cast = False
            first = await robot.observe()
            assert first is not None and first.index == 0
            cases = [(np.zeros(2, np.float64), "dtype is float64"),
                     (np.zeros((2, 2), np.int64), r"shape is \[2, 2\]"),
                     (np.array(7), r"value 7 \(action 0, element \[\]\) is outside \[0, 1\]"),
                     (np.zeros(65, np.int64), "1 to 64 actions, got 65")]
            for number, (bad, message) in enumerate(cases):
                await robot.act(bad)
                with pytest.raises(ActionRejected, match=message):
                    await robot.observe()
                if number % 2:  # a valid action in between: the episode goes on
                    await robot.act(np.array(1, np.int64))
                    assert (await robot.observe()).index == (number + 1) // 2
            await robot.act(np.array([1, 0, 1], np.int64))  # a chunk: three steps, no replies
            indices = [(await robot.observe()).index for _ in range(3)]
            assert indices == [3, 4, 5] and robot.last.queued == 0
            await robot.act(np.array([0, 1], np.int64), index=4)  # index 4's step passed
            assert (await robot.observe()).index == 6  # ran the entry meant for step 5
            await robot.aclose()
            graded = await client.grade(None)
        assert graded.reward == 0.0
        assert graded.info["invalid_actions"] == 4 and graded.info["dropped_actions"] >= 1
        assert "disconnected at step" in graded.info["reason"]


async def test_three_invalid_actions_in_a_row_fail_the_episode() -> None:
    async with serving(env) as server:
        client, robot = await episode(server, template="swing")
        async with client:
            await robot.observe()
            robot.cast = False
            for value, message in [(np.array([np.nan], np.float32), "NaN"),
                                   (np.array([3.0], np.float32), r"outside \[-2, 2\]"),
                                   (np.array([[0.5]] * 2, np.float64), "float64")]:
                await robot.act(value)
                with pytest.raises(ActionRejected, match=message):
                    await robot.observe()
            assert await robot.observe() is None
            assert robot.result.status == "failed"
            assert "3 invalid actions in a row; the last:" in robot.result.reason
            assert (await client.grade(None)).reward == 0.0


async def test_a_policy_that_stops_answering_fails_with_a_clear_reason() -> None:
    async with serving(env) as server:
        client, robot = await episode(server, action_timeout=0.3)
        async with client:
            began = asyncio.get_running_loop().time()
            await robot.observe()
            assert await robot.observe() is None  # the environment gave up, at 0.3 s
            assert asyncio.get_running_loop().time() - began < 3
            assert robot.error.code == "policy_timeout" and robot.error.fatal
            graded = await client.grade(None)
        assert graded.reward == 0.0
        assert graded.info["reason"] == "the policy sent no valid action for 0.3 s (at step 0)"


async def test_realtime_holds_the_last_action_when_the_policy_is_late() -> None:
    async with serving(env) as server:
        client, robot = await episode(server, "swing", steps=30, pace="realtime")
        async with client:
            began = asyncio.get_running_loop().time()
            await robot.observe()
            await robot.act(np.zeros((4, 1), np.float32))  # 4 of 30 ticks at 100 Hz
            while (observation := await robot.observe()) is not None:
                if observation.index == 10:  # answer late, for a step long gone
                    await robot.act(np.ones((4, 1), np.float32), index=5)
            elapsed = asyncio.get_running_loop().time() - began
            result = robot.result
        assert result.steps == 30 and result.status == "completed"
        assert elapsed > 0.25  # 30 ticks at 100 Hz, not as fast as possible
        assert result.late_ticks >= 20 and result.dropped_actions >= 4


async def test_a_simulator_crash_is_an_error_and_other_sessions_keep_running() -> None:
    async with serving(env) as server:
        healthy, healthy_robot = await episode(server, seed=3, steps=200)
        crashing, crashing_robot = await episode(server, crash_at=5)
        async with healthy, crashing:
            solving = asyncio.create_task(solve(healthy_robot))
            await solve(crashing_robot)
            assert crashing_robot.result.status == "crashed"
            assert crashing_robot.error.code == "simulator_error"
            assert "RuntimeError: simulated crash" in crashing_robot.result.reason
            with pytest.raises(TemplateError, match="simulated crash") as caught:
                await crashing.grade(None)
            assert caught.value.data["phase"] == "grade"
            await solving
            assert (await healthy.grade(None)).reward == 1.0
        assert pole._open == 0


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_tokens_are_one_time_and_the_first_frame_must_claim(tunnel_all: bool) -> None:
    async with serving(env) as server:
        client = await Client.connect(server.url)
        client.tunnel_all = tunnel_all
        async with client:
            started = await client.start("balance", {})
            local = (await client.binding("robot")).url
            token = started.bindings["robot"]["token"]

            async def claim(frame: bytes) -> tuple[Error, int | None]:
                async with connect(local, compression=None) as ws:
                    await ws.send(frame)
                    reply = decode_to_agent(await ws.recv())
                    await ws.wait_closed()
                    return reply, ws.close_code

            reply, code = await claim(encode(Claim(token="forged")))
            assert (reply.code, reply.fatal, code) == ("unknown_token", True, 1008)
            reply, code = await claim(msgspec.msgpack.encode({"type": "action"}))
            assert (reply.code, code) == ("invalid_message", 1008)
            robot = await client.open("robot")
            # in the server's network namespace the robot is dialled at its own address; a
            # client that tunnels gets the connection handed over by the local server
            assert (robot.handed is not None) == tunnel_all
            assert (local == next(b.url for b in client.manifest.capabilities
                                  if b.name == "robot")) != tunnel_all
            reply, code = await claim(encode(Claim(token=token)))
            assert (reply.code, reply.message) == ("token_used",
                                                   "this episode's token was already used")
            await solve(robot)
            assert (await client.grade(None)).reward == 1.0


async def test_cancelling_the_task_ends_the_episode_and_frees_the_simulator() -> None:
    async with serving(env) as server:
        client, robot = await episode(server)
        async with client:
            await robot.observe()
            assert pole._open == 1
            assert await client.cancel()
            assert await robot.observe() is None
            assert robot.result.status == "cancelled"
        for _ in range(100):
            if pole._open == 0:
                break
            await asyncio.sleep(0.01)
        assert pole._open == 0 and not pole.episodes


async def test_harnesses_in_process_with_batched_inference() -> None:
    tasks = Taskset([balance(seed=s, steps=60) for s in range(4)])
    scripted = ScriptedHarness(batch_wait=0.002)
    job = await tasks.run(scripted, runtime=InProcessRuntime(), max_concurrent=4)
    assert [run.reward for run in job.runs] == [1.0] * 4
    batcher = next(iter(scripted._batchers.values()))
    inferences = sum(e.data["inferences"] for run in job.runs for e in run.trace.steps
                     if e.kind == "episode")
    assert inferences == 240 and batcher.calls < inferences  # coalesced across rollouts
    # 200 steps: a random policy keeps the pole up that long with negligible probability
    # (it can last 60, and batching makes its draws depend on scheduling).
    long = Taskset([balance(seed=s, steps=200) for s in range(4)])
    random = await long.run(RandomHarness(seed=0), runtime=InProcessRuntime())
    assert random.reward == 0.0 and not random.errors
    realtime = await Taskset([balance(steps=40, pace="realtime")]).run(
        ScriptedHarness(), runtime=InProcessRuntime())
    assert realtime.reward == 1.0  # 40 ticks at 100 Hz, the policy keeping up


POLICY = """
import numpy as np

seen = []


def make_policy(contract):
    seen.append(contract.robot_type)
    from hud.harnesses.robot import cartpole

    def policy(batch):
        seen.append((sorted(batch), batch["task"]))
        return np.repeat(cartpole(batch)[:, None], 4, axis=1)  # chunks [B, 4]

    return policy
"""


async def test_a_learned_policy_plugs_in_by_reference(tmp_path: Path) -> None:
    path = tmp_path / "my_policy.py"
    path.write_text(POLICY)
    with pytest.raises(ValueError, match="needs a policy"):
        RobotHarness().check()
    harness = RobotHarness(policy=f"{path}:make_policy", chunk=1)  # n_action_steps = 1
    harness.check()
    job = await Taskset([balance(steps=50)]).run(harness, runtime=InProcessRuntime())
    assert job.reward == 1.0
    (run,) = job.runs
    episode_step = next(e for e in run.trace.steps if e.kind == "episode")
    assert episode_step.data["inferences"] == 50  # one chunk per step, first action only
    module = next(m for m in sys.modules.values()
                  if getattr(m, "__file__", None) == str(path))
    assert module.seen[0] == "gymnasium/CartPole-v1"
    assert module.seen[1] == (["observation.state", "task"], ["balance"])


@pytest.mark.parametrize(("harness", "reward"), [("robot_scripted", 1.0),
                                                 ("robot_random", 0.0)])
def test_cli_eval_of_the_example(harness: str, reward: float, tmp_path: Path) -> None:
    argv = ["eval", "examples/robot/tasks.py", harness, "--json", "--timeout", "60"]
    done = subprocess.run([sys.executable, "-m", "hud", *argv], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "HUD_TRACE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["reward"] == reward and summary["errors"] == 0
    assert {run["status"] for run in summary["runs"]} == {"completed"}
    assert all(run["answer"]["status"] == "completed" for run in summary["runs"])
