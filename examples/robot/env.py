"""CartPole as a robot: a real Gymnasium simulator served over ``openpi/0``.

The reward is task success: the pole stays up for every one of the task's control steps.
"""

from typing import Literal

from hud import Environment

env = Environment("cartpole", version="1.0.0",
                  description="Gymnasium CartPole-v1 behind the robot capability.")


def survived(outcome) -> bool:
    """Success: the episode ran out of steps (truncated) before the pole fell.

    ``outcome`` is a :class:`hud.capabilities.robot.Outcome`: terminated, truncated, steps,
    episode_return and the last step's info."""
    return outcome.truncated and not outcome.terminated


robot = env.gym("CartPole-v1", success=survived, pace="lockstep", action_timeout=10.0)


@env.template()
async def balance(seed: int = 0, steps: int = 200, start_spread: float = 0.05,
                  pace: Literal["lockstep", "realtime"] = "lockstep"):
    """Keep the pole upright for `steps` control steps (50 Hz)."""
    # Task parameters reach the simulator as Gymnasium reset options.
    options = {"low": -start_spread, "high": start_spread}
    episode = await robot.reset(seed=seed, options=options, max_steps=steps, pace=pace,
                                prompt=f"Balance the pole for {steps} steps.")
    yield {"prompt": episode.prompt, "bindings": episode.bindings}
    yield await episode.result()  # reward 1.0 on success; info: return, steps, reason
