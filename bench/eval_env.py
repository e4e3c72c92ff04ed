"""Trivial environment for the eval-engine benchmark (``bench/eval.py``), served by our ``hud``.

The twin of ``bench/ref_env.py`` plus a reference solution, so the ``oracle`` harness can
solve every task. One template, ``count_letter``: the prompt asks how often ``letter``
occurs in ``word``; the reward is 1.0 when the answer contains the right count.
"""

from hud import Environment

env = Environment("bench-eval")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Yield a prompt, receive the answer, yield the reward."""
    answer = yield f"How many times does {letter!r} appear in {word!r}? Answer with a number."
    yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0


@count_letter.solution
def solve(word: str, letter: str) -> str:
    """The reference solution the ``oracle`` harness runs inside the environment."""
    return str(word.count(letter))
