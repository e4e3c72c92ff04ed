"""A harness written outside hud: it reads a letter-count prompt and counts, no model needed.

It shows the whole harness contract: read ``run.prompt_text``, record what you did with
``run.record``, set ``run.answer``.
"""

from __future__ import annotations

import re

from hud.agents import Agent
from hud.eval.run import Run


class LetterCounter(Agent):
    name = "letter_counter"

    async def __call__(self, run: Run) -> None:
        match = re.search(r"does '(.)' occur in '([^']*)'", run.prompt_text)
        if match is None:
            run.answer = "I cannot tell."
        else:
            letter, word = match.groups()
            run.answer = str(word.count(letter))
        run.record("model", content=run.answer, tool_calls=[])
