"""Trivial environment served by the reference implementation (PyPI ``hud==0.6.21``).

Loaded only by the reference venv's interpreter, e.g.::

    .bench/ref-venv/bin/python -m hud.environment.server bench/ref_env.py --port 0

One template, ``count_letter``: the prompt asks how often ``letter`` occurs in
``word``; the reward is 1.0 when the answer contains the right count.
"""

from hud import Environment

env = Environment(name="bench")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Yield a prompt, receive the answer, yield the reward."""
    answer = yield f"How many times does {letter!r} appear in {word!r}? Answer with a number."
    yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0
