"""The agent loop shared by the native-API harnesses (``claude``, ``openai``, ``gemini``).

Each provider supplies a :class:`Dialect`: how to send its messages (with retries, see
:func:`~hud.harnesses.retry.send_with_retries`), how to read a reply and how to give tool
results back. The loop asks, runs the calls of a turn in the model's order on a
:class:`~hud.harnesses.toolbox.ToolBox` (:func:`run_tools` states which may overlap; each under
``tool_timeout``: a timeout is a tool error the model reads), prunes old screenshots, and
stops when the model answers without calling a tool, when a reply says to stop
(:attr:`Turn.stop`), at ``max_steps`` turns, or at the agent phase's deadline (the
rollout's, or ``agent_timeout`` seconds, whichever comes first). Each model step carries its
normalised usage record and its cost (see :mod:`~hud.harnesses.usage`); the trace's usage
holds the run's totals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .tool import Image, ToolOutput
from .toolbox import ToolBox
from .usage import Prices

if TYPE_CHECKING:
    from hud.eval.run import Run


@dataclass(slots=True)
class Turn:
    """One model reply, read: its text, its tool calls (``{"id", "name", "arguments"}``,
    arguments a dict), the messages to append to the conversation, and its usage record
    (:mod:`~hud.harnesses.usage`). ``stop``, when set, ends the run with that reason after
    this reply is recorded, and none of its calls runs (a truncated reply, a refusal, a safety
    check the policy will not pass); ``resume`` asks the model again with no tool results (a
    paused turn, a retry)."""

    text: str | None
    calls: list[dict[str, Any]]
    messages: list[Any]
    usage: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stop: str | None = None
    resume: bool = False


class Dialect(Protocol):
    """One provider's side of the loop; ``messages`` are in the provider's own format."""

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        """The reply to the conversation so far, and how long it took (retries inside)."""

    def read(self, reply: Any) -> Turn: ...

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        """The messages that give a turn's tool results back, in call order."""

    def prune(self, messages: list[Any], keep: int) -> None:
        """Drop the images of old tool results, keeping at least the last ``keep`` that
        carry any (see :func:`prunable`)."""


@dataclass(slots=True)
class Limits:
    """When the loop stops (``max_steps`` turns; ``agent_timeout`` seconds), how long one
    tool call may take, and how many tool results keep their screenshots."""

    max_steps: int = 50
    tool_timeout: float | None = 120.0
    agent_timeout: float | None = None
    keep_screenshots: int = 3


def prunable(count: int, keep: int) -> int:
    """How many of ``count`` image-carrying results (oldest first) lose their images: a
    multiple of ``keep``, so the conversation's prefix changes once per ``keep`` new images,
    not every step, and a provider's prompt cache survives in between."""
    if keep <= 0:
        return count
    return max(count - keep, 0) // keep * keep


def price(run: Run, usage: dict[str, int], prices: Prices | None) -> float | None:
    """One call's cost in dollars when the model has a price (else ``None``), added to the
    run's ``cost_usd`` total; the tokens are added when the call is recorded
    (:meth:`Run.record_model_call`)."""
    cost = prices.cost(run.model or "", usage) if prices is not None else None
    if cost is not None:
        run.trace.add_usage(cost_usd=cost)
    return cost


async def converse(run: Run, dialect: Dialect, toolbox: ToolBox, messages: list[Any],
                   limits: Limits, prices: Prices | None = None) -> None:
    """Drive ``run`` to its answer, recording ``model``, ``tool_result`` and ``stop`` steps."""
    state: dict[str, Any] = {"answer": None, "steps": 0, "prices": prices}
    try:
        async with asyncio.timeout(limits.agent_timeout) as cut:
            reason = await _turns(run, dialect, toolbox, messages, limits, state)
    except TimeoutError:
        if not cut.expired():
            raise  # a TimeoutError of the loop's own, not the agent's limit
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
        extra = dict(turn.extra)
        cost = price(run, turn.usage, state["prices"])
        if cost is not None:
            extra["cost_usd"] = cost
        run.record_model_call(
            latency=duration, content=turn.text, tool_calls=turn.calls, usage=turn.usage,
            stop_reason=extra.pop("stop_reason", extra.get("finish_reason")),
            request={"messages": len(messages)},
            response=reply if isinstance(reply, dict) else None, **extra)
        messages.extend(turn.messages)
        if turn.text is not None:
            state["answer"] = turn.text
        if turn.stop is not None:
            return turn.stop
        if turn.resume:
            continue
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



async def run_tools(run: Run, toolbox: ToolBox, calls: Sequence[dict[str, Any]],
                    timeout: float | None) -> list[tuple[str, ToolOutput]]:
    """Run the calls of one turn (``{"id", "name", "arguments"}``) in the order the model
    gave them, and record each result (in call order) as a ``tool_result`` step with how long
    it took. Only a fatal error (see :class:`~hud.harnesses.toolbox.ToolBox`) escapes.

    The ordering rule: a call starts only after every call before it has finished, because
    calls share state (a screen, a file, a shell session) and the model wrote them as a
    sequence (click, then type; two edits of one file). The one exception is a run of
    consecutive calls to tools marked ``read_only`` (independent by construction, such as an
    MCP tool annotated ``readOnlyHint``): those overlap, and the next call waits for all.
    """

    async def one(call: dict[str, Any]) -> tuple[ToolOutput, float]:
        started = time.monotonic()
        output = await toolbox.call(call["name"], call["arguments"], timeout)
        return output, time.monotonic() - started

    done: list[tuple[ToolOutput, float]] = []
    for batch in _batches(toolbox, calls):
        if len(batch) == 1:
            done.append(await one(batch[0]))
            continue
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(call)) for call in batch]
        except BaseExceptionGroup as failed:  # only fatal errors escape a tool: the first
            raise failed.exceptions[0] from None
        done.extend(task.result() for task in tasks)
    results = []
    for call, (output, duration) in zip(calls, done, strict=True):
        run.record("tool_result", duration, **tool_result_step(call["id"], call["name"],
                                                               output))
        results.append((call["id"], output))
    return results


def _batches(toolbox: ToolBox, calls: Sequence[dict[str, Any]]
             ) -> list[list[dict[str, Any]]]:
    """``calls`` cut into the groups that may run together: each run of consecutive
    read-only calls is one group, every other call a group of its own."""
    batches: list[list[dict[str, Any]]] = []
    overlapping = False  # whether the last group is a run of read-only calls
    for call in calls:
        read_only = toolbox.read_only(call["name"])
        if read_only and overlapping:
            batches[-1].append(call)
        else:
            batches.append([call])
        overlapping = read_only
    return batches


def tool_result_step(call_id: str, name: str, output: ToolOutput) -> dict[str, Any]:
    """A tool result as a trace ``tool_result`` step (images as our image blocks)."""
    result: str | list[dict[str, Any]] = output.text
    if output.images:
        result = [{"type": "text", "text": output.text}, *(_image_block(i) for i in output.images)]
    return {"tool_call_id": call_id, "name": name, "content": result,
            "is_error": output.is_error}


def _image_block(image: Image) -> dict[str, Any]:
    return {"type": "image", "data": image.data, "mime_type": image.mime_type}
