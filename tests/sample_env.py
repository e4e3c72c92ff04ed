"""An environment whose templates exercise every path of the runner: good and broken."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from hud import Environment

env = Environment("sample", version="2.0.0", description="templates for the test suite")
events: list[str] = []


@env.initialize
async def _init() -> None:
    events.append("initialize")


@env.shutdown
def _shutdown() -> None:
    events.append("shutdown")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Count how often a letter occurs in a word."""
    try:
        answer = yield f"How many {letter!r} in {word!r}?"
        yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0
    finally:
        events.append(f"cleanup:{word}")


@count_letter.solution
def _solve_count(word: str, letter: str) -> str:
    return str(word.count(letter))


@env.template(id="after")
async def code_after_second_yield():
    yield "prompt"
    yield 0.5
    events.append("after-second-yield")


class Point(msgspec.Struct):
    x: int
    y: int


@env.template(returns=Point)
async def typed_answer(target_x: int = 3):
    answer = yield "Give a point as JSON."
    assert isinstance(answer, Point)
    yield {"reward": 1.0 if answer.x == target_x else 0.0, "info": {"got": [answer.x, answer.y]}}


@env.template()
async def subscores():
    yield "Do two things."
    yield {"score": 0.75, "subscores": {"first": 1.0, "second": 0.5}}


@env.template()
async def blocks():
    yield [{"type": "text", "text": "What is in this image?"},
           {"type": "image", "data": "iVBORw0KGgo=", "mime_type": "image/png"}]
    yield 1.0


@env.template()
async def chat():
    yield [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}]
    yield 1.0


@env.template()
async def with_bindings(seed: int = 0):
    yield {"prompt": "Balance the pole.", "bindings": {"robot": {"token": f"slot-{seed}"}}}
    yield 1.0


@env.template()
async def crash_setup():
    raise RuntimeError("database seed failed")
    yield "unreachable"


@env.template()
async def crash_grade():
    yield "prompt"
    {}["missing"]  # a KeyError inside the template, not an unknown task
    yield 1.0


@env.template()
async def never_yields():
    if False:
        yield "never"


@env.template()
async def no_reward():
    yield "prompt"


@env.template(timeout=0.2)
async def hangs():
    try:
        await asyncio.sleep(3600)
        yield "never"
    finally:
        events.append("hangs-cleanup")


@env.template()
async def slow_setup(seconds: float = 0.2):
    await asyncio.sleep(seconds)
    yield "ready"
    yield 1.0


@env.template()
async def garbage_prompt():
    yield 42
    yield 1.0


@env.template()
async def garbage_reward(value: Any = "high"):
    yield "prompt"
    yield value
