"""``nop``: does nothing and answers nothing. A task it passes has a grader that rewards
doing nothing, which ``hud check`` reports."""

from __future__ import annotations

from typing import ClassVar

from hud.agents import Agent
from hud.eval.run import Run


class NopAgent(Agent):
    name: ClassVar[str] = "nop"

    async def __call__(self, run: Run) -> None:
        run.answer = None
