"""``oracle``: answers with the task's reference solution, run inside the environment.

A template declares its solution (``solution=`` or ``@template.solution``); the runtime must
serve it (``tasks.solve``), which happens only for harnesses that ask (``needs_solutions``).
A reward of 1 from the oracle shows a task is solvable and its grader accepts a solution.
"""

from __future__ import annotations

from typing import ClassVar

from hud.agents import Agent
from hud.eval.run import Run


class OracleAgent(Agent):
    name: ClassVar[str] = "oracle"
    needs_solutions: ClassVar[bool] = True

    async def __call__(self, run: Run) -> None:
        run.answer = await run.client.solve()
        run.record("answer", answer=run.answer, source="reference solution")
