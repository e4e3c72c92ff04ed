"""The agent loop shared by the native-API harnesses (``claude``, ``openai``, ``gemini``).

Each provider supplies a :class:`Dialect`: how to send its messages (with retries, see
:func:`~hud.harnesses.openai_compatible.loop.send_with_retries`), how to read a reply and
how to give tool results back. The loop asks, runs the calls of a turn concurrently on a
:class:`~hud.harnesses.openai_compatible.ToolBox` (each under ``tool_timeout``: a timeout is
a tool error the model reads), prunes old screenshots, and stops when the model answers
without calling a tool, at ``max_steps`` turns, or at the agent phase's deadline (the
rollout's, or ``agent_timeout`` seconds, whichever comes first).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .openai_compatible.loop import run_tools
from .openai_compatible.toolbox import ToolBox, ToolOutput

if TYPE_CHECKING:
    from hud.eval.run import Run


@dataclass(slots=True)
class Turn:
    """One model reply, read: its text, its tool calls (``{"id", "name", "arguments"}``,
    arguments a dict), the messages to append to the conversation, and token usage."""

    text: str | None
    calls: list[dict[str, Any]]
    messages: list[Any]
    usage: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Dialect(Protocol):
    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        """The reply to the conversation so far, and how long it took (retries inside)."""

    def read(self, reply: Any) -> Turn: ...

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        """The messages that give a turn's tool results back, in call order."""

    def prune(self, messages: list[Any], keep: int) -> None:
        """Drop the images of all but the last ``keep`` tool results that carry any."""


@dataclass(slots=True)
class Limits:
    max_steps: int = 50
    tool_timeout: float | None = 120.0
    agent_timeout: float | None = None
    keep_screenshots: int = 3


async def converse(run: Run, dialect: Dialect, toolbox: ToolBox, messages: list[Any],
                   limits: Limits) -> None:
    """Drive ``run`` to its answer, recording ``model``, ``tool_result`` and ``stop`` steps."""
    started = time.monotonic()
    state: dict[str, Any] = {"answer": None, "steps": 0}
    try:
        async with asyncio.timeout(limits.agent_timeout):
            reason = await _turns(run, dialect, toolbox, messages, limits, state)
    except TimeoutError:
        if limits.agent_timeout is None or time.monotonic() - started < limits.agent_timeout:
            raise
        reason = "agent_timeout"
    run.answer = state["answer"]
    run.record("stop", reason=reason, steps=state["steps"])


async def _turns(run: Run, dialect: Dialect, toolbox: ToolBox, messages: list[Any],
                 limits: Limits, state: dict[str, Any]) -> str:
    for step in range(limits.max_steps):
        left = run.remaining()
        if left is not None and left <= 0:
            return "deadline"
        reply, duration = await dialect.send(run, messages)
        turn = dialect.read(reply)
        state["steps"] = step + 1
        run.trace.add_usage(**turn.usage)
        run.record("model", duration, content=turn.text, tool_calls=turn.calls,
                   usage=turn.usage, **turn.extra)
        messages.extend(turn.messages)
        if turn.text is not None:
            state["answer"] = turn.text
        if not turn.calls:
            return "done"
        outputs = await run_tools(run, toolbox, turn.calls, _tool_timeout(run, limits))
        messages.extend(dialect.results(
            [(call, output) for call, (_, output) in zip(turn.calls, outputs, strict=True)]))
        dialect.prune(messages, limits.keep_screenshots)
    return "max_steps"


def _tool_timeout(run: Run, limits: Limits) -> float | None:
    left = run.remaining()
    if left is None:
        return limits.tool_timeout
    return max(min(left, limits.tool_timeout or left), 0.001)


def image_positions(flags: list[bool], keep: int) -> set[int]:
    """Of items flagged as carrying images, the indexes whose images go (all but the last
    ``keep``)."""
    flagged = [i for i, has in enumerate(flags) if has]
    return set(flagged[:max(len(flagged) - keep, 0)])
