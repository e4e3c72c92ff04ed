"""The agent loop: ask the model, run the tools it calls, give back the results, repeat.

It stops when the model answers without calling a tool (its text is the answer), at
``max_steps`` model turns, or when the rollout's deadline has passed. Requests that fail with
429, 5xx or a connection error are retried with exponential backoff (bounded in count and
by the deadline); any other API error, or the last failed retry, fails the run (phase
``agent``), which is never scored as a 0.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from . import chat
from .toolbox import ToolBox, ToolOutput

if TYPE_CHECKING:
    from hud.eval.run import Run

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 409, 429})


class ModelAPIError(RuntimeError):
    """The model's API failed for good: an error that retrying cannot fix, or retries ran out."""


@dataclass(slots=True)
class RequestPolicy:
    """How requests are sent: SDK timeout per request and the retry schedule
    (``retry_delay`` doubles each retry, up to ``max_retry_delay``, with jitter)."""

    request_timeout: float = 600.0
    max_retries: int = 4
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0


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
            return reply.to_dict()

        return await send_with_retries(run, self.policy, send, openai.APIError, _describe,
                                       _failure)


async def send_with_retries(run: Run, policy: RequestPolicy,
                            send: Callable[[float], Awaitable[T]],
                            errors: type[Exception] | tuple[type[Exception], ...],
                            describe: Callable[[Any], str] = str,
                            fail: Callable[[Any, int], str] | None = None) -> tuple[T, float]:
    """``await send(timeout)`` with bounded, deadline-aware retries: an exception of
    ``errors`` that :func:`retryable` accepts is retried with backoff (recorded as a
    ``retry`` step), any other, or the last, raises :class:`ModelAPIError`. Works for any SDK
    whose errors carry ``status_code`` and ``response.headers`` (openai, anthropic) or
    ``code`` (google-genai). Returns the result and how long its attempt took."""
    for attempt in range(policy.max_retries + 1):
        remaining = run.remaining()
        timeout = policy.request_timeout if remaining is None else max(
            min(policy.request_timeout, remaining), 0.001)
        started = time.monotonic()
        try:
            return await send(timeout), time.monotonic() - started
        except errors as exc:
            delay = retry_delay(policy, exc, attempt)
            left = run.remaining()
            if delay is None or (left is not None and delay >= left):
                message = fail(exc, attempt + 1) if fail else (
                    f"model request failed after {attempt + 1} attempt(s): {describe(exc)}")
                raise ModelAPIError(message) from exc
            run.record("retry", attempt=attempt + 1, error=describe(exc), delay=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def retry_delay(policy: RequestPolicy, exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when ``exc`` is final."""
    if attempt >= policy.max_retries or not retryable(exc):
        return None
    hinted = retry_after(exc)
    if hinted is not None:
        return min(hinted, policy.max_retry_delay)
    delay = min(policy.retry_delay * 2.0**attempt, policy.max_retry_delay)
    return delay * random.uniform(0.5, 1.0)  # jitter: concurrent rollouts spread out


def retryable(exc: BaseException) -> bool:
    """429, 408, 409 and 5xx replies, and connection failures (timeouts included): an SDK's
    connection error class has "Connection" or "Timeout" in its name."""
    name = type(exc).__name__
    if isinstance(exc, openai.APIConnectionError) or "Connection" in name or "Timeout" in name:
        return True
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "code", None)  # google-genai's APIError
    return isinstance(status, int) and (status in RETRY_STATUSES or status >= 500)


def retry_after(exc: BaseException) -> float | None:
    """The server's ``retry-after-ms`` or ``retry-after`` (seconds) header, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(float(headers[name]) * scale, 0.0)
        except (KeyError, ValueError, TypeError):
            continue
    return None


async def converse(run: Run, model: ChatModel, toolbox: ToolBox, settings: LoopSettings) -> None:
    """Drive one run to its answer (``run.answer``), recording every turn in its trace."""
    messages = chat.prompt_messages(run.prompt, run.messages, settings.system_prompt)
    if settings.system_prompt:
        run.record("message", role="system", content=settings.system_prompt)
    request = dict(settings.request)
    if len(toolbox):
        request["tools"] = [chat.tool_param(spec) for spec in toolbox.specs]
        if settings.tool_choice is not None:
            request["tool_choice"] = settings.tool_choice
    answer: Any = None
    for step in range(settings.max_steps):
        left = run.remaining()
        if left is not None and left <= 0:
            _stop(run, answer, "deadline", step)
            return
        message = await _turn(run, model, {**request, "messages": messages})
        messages.append(chat.assistant_message(message))
        answer = message.get("content")
        calls = chat.tool_calls(message)
        if not calls:
            _stop(run, answer, "done", step + 1)
            return
        results = await run_tools(run, toolbox, calls, settings.tool_timeout)
        messages.extend(chat.tool_result_messages(results))
    _stop(run, answer, "max_steps", settings.max_steps)


async def _turn(run: Run, model: ChatModel, request: dict[str, Any]) -> dict[str, Any]:
    """One model turn, recorded with its usage; the reply's message."""
    reply, duration = await model.complete(run, request)
    choices = reply.get("choices") or []
    if not choices:
        raise ModelAPIError(f"the reply has no choices: {str(reply)[:300]}")
    message = choices[0].get("message") or {}
    usage = chat.usage_tokens(reply.get("usage"))
    run.trace.add_usage(**usage)
    run.record("model", duration, **chat.model_step(message),
               finish_reason=choices[0].get("finish_reason"), usage=usage,
               model=reply.get("model"))
    return dict(message)


async def run_tools(run: Run, toolbox: ToolBox, calls: Sequence[dict[str, Any]],
                    timeout: float | None) -> list[tuple[str, ToolOutput]]:
    """Run the calls of one turn concurrently; record each result (in call order) with how
    long it took."""

    async def one(call: dict[str, Any]) -> tuple[ToolOutput, float]:
        started = time.monotonic()
        output = await toolbox.call(call["name"], call["arguments"], timeout)
        return output, time.monotonic() - started

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(call)) for call in calls]
    except BaseExceptionGroup as failed:  # only fatal errors escape a tool: raise the first
        raise failed.exceptions[0] from None
    results = []
    for call, task in zip(calls, tasks, strict=True):
        output, duration = task.result()
        run.record("tool_result", duration, **chat.tool_result_step(call["id"], call["name"],
                                                                    output))
        results.append((call["id"], output))
    return results


def _stop(run: Run, answer: Any, reason: str, steps: int) -> None:
    run.answer = answer
    run.record("stop", reason=reason, steps=steps)


def _describe(exc: openai.APIError) -> str:
    status = getattr(exc, "status_code", None)
    if status is None:
        return f"{type(exc).__name__}: {exc.message}"
    return f"{status}: {chat.error_text(exc.body) if exc.body else exc.message}"


def _failure(exc: openai.APIError, attempts: int) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    url = getattr(getattr(exc, "request", None), "url", "")
    return f"chat completions request to {url} failed after {tries}: {_describe(exc)}"
