"""The Chat Completions agent loop: ask the model, run the tools it calls (in the order the
model gave them: :func:`~hud.harnesses.dialogue.run_tools` says which may overlap), give back
the results, repeat.

It stops when the model answers without calling a tool (its text is the answer), at
``max_steps`` model turns, or when the rollout's deadline has passed. Requests are retried as
:mod:`hud.harnesses.retry` says; an error retrying cannot fix fails the run (phase
``agent``), which is never scored as a 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai

from hud.errors import ModelAPIError

from ..dialogue import price, run_tools
from ..retry import RequestPolicy, send_with_retries
from ..toolbox import ToolBox
from ..usage import default_prices, from_chat_completions
from . import wire

if TYPE_CHECKING:
    from hud.eval.run import Run


@dataclass(slots=True)
class LoopSettings:
    """What one conversation needs besides the client and the tools."""

    max_steps: int
    system_prompt: str | None = None
    tool_timeout: float | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """Request fields sent on every turn: ``model``, ``temperature``, ``extra_body``, ..."""
    tool_choice: str | dict[str, Any] | None = None


class ChatModel:
    """Chat Completions requests with bounded, deadline-aware retries; replies as dicts."""

    def __init__(self, client: openai.AsyncOpenAI, policy: RequestPolicy) -> None:
        self.client = client
        self.policy = policy

    async def complete(self, run: Run, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """The reply to ``request`` and how long its successful attempt took."""

        async def send(timeout: float) -> dict[str, Any]:
            reply = await self.client.chat.completions.create(**request, timeout=timeout)
            return dict(reply.to_dict())

        return await send_with_retries(run, self.policy, send, openai.APIError, _describe,
                                       _failure)


async def converse(run: Run, model: ChatModel, toolbox: ToolBox, settings: LoopSettings) -> None:
    """Drive one run to its answer (``run.answer``), recording every turn in its trace."""
    # kept in run.memory: a branch of this run (run.fork) goes on from this conversation
    messages = run.memory.get("messages")
    if messages is None:
        messages = run.memory["messages"] = wire.prompt_messages(
            run.prompt, run.messages, settings.system_prompt)
        if settings.system_prompt:
            run.record("message", role="system", content=settings.system_prompt)
    request = dict(settings.request)
    if len(toolbox):
        request["tools"] = [wire.tool_param(spec) for spec in toolbox.specs]
        if settings.tool_choice is not None:
            request["tool_choice"] = settings.tool_choice
    run.set_tools(toolbox.specs)
    run.set_agent_settings(**{k: v for k, v in request.items() if k != "tools"})
    answer: Any = None
    for step in range(settings.max_steps):
        left = run.remaining()
        if left is not None and left <= 0:
            _stop(run, answer, "deadline", step)
            return
        message = await _turn(run, model, {**request, "messages": messages})
        messages.append(wire.assistant_message(message))
        answer = message.get("content")
        calls = wire.tool_calls(message)
        if not calls:
            _stop(run, answer, "done", step + 1)
            return
        results = await run_tools(run, toolbox, calls, settings.tool_timeout)
        messages.extend(wire.tool_result_messages(results))
    _stop(run, answer, "max_steps", settings.max_steps)


async def _turn(run: Run, model: ChatModel, request: dict[str, Any]) -> dict[str, Any]:
    """One model turn, recorded with its usage; the reply's message."""
    reply, duration = await model.complete(run, request)
    choices = reply.get("choices") or []
    if not choices:
        raise ModelAPIError(f"the reply has no choices: {str(reply)[:300]}")
    message = choices[0].get("message") or {}
    usage = from_chat_completions(reply.get("usage"))
    cost = price(run, usage, default_prices())
    summary = {key: value for key, value in request.items() if key not in ("messages", "tools")}
    run.record_model_call(latency=duration, **wire.model_step(message),
                          **wire.sampled_tokens(choices[0]),
                          stop_reason=choices[0].get("finish_reason"), usage=usage,
                          request={**summary, "messages": len(request.get("messages", []))},
                          response=reply, finish_reason=choices[0].get("finish_reason"),
                          model=reply.get("model"),
                          **({"cost_usd": cost} if cost is not None else {}))
    return dict(message)


def _stop(run: Run, answer: Any, reason: str, steps: int) -> None:
    run.answer = answer
    run.record("stop", reason=reason, steps=steps)


def _describe(exc: openai.APIError) -> str:
    status = getattr(exc, "status_code", None)
    if status is None:
        return f"{type(exc).__name__}: {exc.message}"
    return f"{status}: {wire.error_text(exc.body) if exc.body else exc.message}"


def _failure(exc: openai.APIError, attempts: int) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    url = getattr(getattr(exc, "request", None), "url", "")
    return f"chat completions request to {url} failed after {tries}: {_describe(exc)}"
