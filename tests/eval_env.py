"""An environment for the eval-engine tests; loaded by path by subprocess and pool runtimes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hud import Environment

env = Environment("eval-sample")
STARTS = 0  # module state: fresh per process in isolated runtimes


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    answer = yield f"How many times does {letter!r} occur in {word!r}?"
    yield 1.0 if str(word.count(letter)) == str(answer).strip() else 0.0


@count_letter.solution
def _solve(word: str, letter: str) -> str:
    return str(word.count(letter))


@env.template()
async def whoami():
    """Reports the serving process and how many tasks it has started."""
    global STARTS
    STARTS += 1
    answer = yield f"{os.getpid()} {STARTS}"
    yield 1.0 if answer else 0.0


@whoami.solution
def _solve_whoami() -> str:
    return "here"


@env.template()
async def marks_cleanup(marker: str = ""):
    try:
        answer = yield "wait for the deadline"
        yield 1.0 if answer else 0.0
    finally:
        if marker:
            Path(marker).write_text("cleaned up")


@env.template()
async def crash_setup():
    raise RuntimeError("seed failed")
    yield "unreachable"


@env.template()
async def crash_grade():
    yield "prompt"
    raise ValueError("grader bug")


@crash_grade.solution
def _solve_crash() -> str:
    return "x"


@env.template()
async def lenient():
    """A bad task: doing nothing scores 1."""
    yield "anything"
    yield 1.0


@lenient.solution
def _solve_lenient() -> str:
    return "done"


@env.template()
async def slow_start(seconds: float = 0.0):
    await asyncio.sleep(seconds)
    yield "ready"
    yield 1.0


@env.template()
async def chatty():
    """Prints in its worker (where stdout is a log: tests/test_pool.py)."""
    print("a chatty worker speaking", flush=True)
    answer = yield "say ok"
    yield 1.0 if answer == "ok" else 0.0


@chatty.solution
def _solve_chatty() -> str:
    return "ok"
