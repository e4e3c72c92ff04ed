"""Trivial environment served by this project's ``hud`` (the twin of ``bench/ref_env.py``).

Served by the benchmark in its own process, e.g.::

    .venv/bin/hud serve bench/bench_env.py --port 0

One template, ``count_letter``: the prompt asks how often ``letter`` occurs in
``word``; the reward is 1.0 when the answer contains the right count.
"""

from hud import Environment

env = Environment("bench")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Yield a prompt, receive the answer, yield the reward."""
    answer = yield f"How many times does {letter!r} appear in {word!r}? Answer with a number."
    yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0
