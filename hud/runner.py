"""Drives one task: a template's async generator from setup, through the answer, to cleanup.

The generator's life has three phases, and an error names the one it happened in:

* ``setup``: from the call up to the first ``yield`` (the prompt);
* ``grade``: from sending the answer in up to the second ``yield`` (the reward);
* ``cleanup``: whatever runs after the second ``yield``, or in ``finally`` when the task is
  cancelled, expires, or fails.

Every step is bounded by a timeout. What the generator yields is checked here and turned into
wire types; anything malformed is a :class:`TemplateError`, never passed on as-is.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, Literal

import msgspec

from .protocol.errors import TemplateError
from .protocol.messages import ContentBlock, ImageBlock, Message, Subscore, TextBlock

log = logging.getLogger(__name__)

Phase = Literal["setup", "grade", "cleanup"]

_messages_type = list[Message]


class Prompt(msgspec.Struct, kw_only=True):
    """A normalised first yield."""

    prompt: str | list[ContentBlock]
    messages: list[Message] | msgspec.UnsetType = msgspec.UNSET
    bindings: dict[str, dict[str, Any]] = {}


class Reward(msgspec.Struct, kw_only=True):
    """A normalised second yield."""

    reward: float
    subscores: list[Subscore] | msgspec.UnsetType = msgspec.UNSET
    info: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class TaskRunner:
    """Owns one template generator. Not safe for concurrent use: the session serialises calls."""

    def __init__(self, template_id: str, generator: AsyncGenerator[Any, Any]) -> None:
        self.template_id = template_id
        self._gen = generator
        self.started = False
        self.closed = False

    async def start(self, timeout: float | None) -> Prompt:
        """Run setup up to the first yield and return the prompt."""
        try:
            value = await self._step("setup", self._gen.__anext__(), timeout)
        except StopAsyncIteration:
            await self.aclose()
            raise self._error("setup", "ended before yielding a prompt") from None
        self.started = True
        try:
            return normalize_prompt(value)
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            await self.aclose()
            raise self._error("setup", f"yielded an invalid prompt: {exc}") from None

    async def grade(self, answer: Any, timeout: float | None) -> Reward:
        """Send the answer in, return the reward, then run the generator's cleanup."""
        try:
            value = await self._step("grade", self._gen.asend(answer), timeout)
        except StopAsyncIteration:
            self.closed = True
            raise self._error("grade", "ended without yielding a reward") from None
        try:
            reward = normalize_reward(value)
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            await self.aclose()
            raise self._error("grade", f"yielded an invalid reward: {exc}") from None
        problem = await self._finish(timeout)
        if problem:
            info = {} if reward.info is msgspec.UNSET else dict(reward.info)
            info["cleanup_error"] = problem
            reward.info = info
        return reward

    async def _finish(self, timeout: float | None) -> str | None:
        """Run the code after the second yield; a failure there is reported, not fatal."""
        try:
            await self._step("cleanup", self._gen.__anext__(), timeout)
        except StopAsyncIteration:
            self.closed = True
            return None
        except TemplateError as exc:
            return exc.message
        await self.aclose()
        return "yielded more than twice; the extra values were ignored"

    async def _step(self, phase: Phase, step: Awaitable[Any], timeout: float | None) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await step
        except StopAsyncIteration:
            raise
        except TimeoutError:
            await self.aclose()
            raise self._error(phase, f"timed out after {timeout:g} s", timeout=timeout) from None
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except Exception as exc:
            self.closed = True  # a generator that raised is finished
            log.error("template %r failed during %s", self.template_id, phase, exc_info=exc)
            raise self._error(
                phase, f"{type(exc).__name__}: {exc}", error=type(exc).__name__
            ) from exc

    async def aclose(self, timeout: float = 10.0) -> None:
        """Cancel the task: run the generator's ``finally`` blocks (bounded), at most once."""
        if self.closed:
            return
        self.closed = True
        try:
            async with asyncio.timeout(timeout):
                await self._gen.aclose()
        except TimeoutError:
            log.error("template %r: cleanup did not finish in %g s", self.template_id, timeout)
        except Exception:
            log.exception("template %r: cleanup failed", self.template_id)

    def _error(self, phase: Phase, what: str, **data: Any) -> TemplateError:
        message = f"template {self.template_id!r} {what} (phase: {phase})"
        return TemplateError(message, {"phase": phase, "template": self.template_id, **data})


def normalize_prompt(value: Any) -> Prompt:
    """Accept a string, content blocks, chat messages, or ``{"prompt": ..., "bindings": ...}``."""
    if isinstance(value, str):
        return Prompt(prompt=value)
    if isinstance(value, (TextBlock, ImageBlock)):
        return Prompt(prompt=[value])
    if isinstance(value, dict) and "prompt" in value:
        unknown = set(value) - {"prompt", "bindings"}
        if unknown:
            raise ValueError(f"unexpected keys {sorted(unknown)} beside 'prompt'")
        prompt = normalize_prompt(value["prompt"])
        prompt.bindings = msgspec.convert(value.get("bindings", {}), dict[str, dict[str, Any]])
        return prompt
    if isinstance(value, (list, tuple)) and value:
        items = [msgspec.to_builtins(v) for v in value]
        if all(isinstance(v, dict) and "role" in v for v in items):
            messages = msgspec.convert(items, _messages_type)
            users = [m for m in messages if m.role == "user"]
            if not users:
                raise ValueError("a conversation prompt needs at least one user message")
            return Prompt(prompt=users[-1].content, messages=messages)
        return Prompt(prompt=msgspec.convert(items, list[ContentBlock]))
    raise TypeError(
        f"expected a string, content blocks or chat messages, got {type(value).__name__}"
    )


def normalize_reward(value: Any) -> Reward:
    """Accept a number, ``{"reward"|"score": ..., "subscores", "info"}`` or an object with
    ``.reward``; the reward must be a finite number in [0, 1]."""
    if isinstance(value, dict):
        fields = dict(value)
        if "score" in fields and "reward" not in fields:
            fields["reward"] = fields.pop("score")
    elif hasattr(value, "reward") and not isinstance(value, (int, float)):
        fields = {
            name: getattr(value, name)
            for name in ("reward", "subscores", "info")
            if getattr(value, name, None) is not None
        }
    else:
        fields = {"reward": value}
    reward = fields.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise TypeError(f"the reward must be a number, got {type(reward).__name__}")
    if not math.isfinite(reward) or not 0.0 <= reward <= 1.0:
        raise ValueError(f"the reward must be in [0, 1], got {reward!r}")
    fields["reward"] = float(reward)
    subscores = fields.get("subscores")
    if isinstance(subscores, dict):
        fields["subscores"] = [{"name": k, "score": v} for k, v in subscores.items()]
    elif subscores is not None:
        fields["subscores"] = [msgspec.to_builtins(s) for s in subscores]
    return msgspec.convert(fields, Reward, from_attributes=True)
