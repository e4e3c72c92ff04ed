"""The ``gemini`` harness's side of the agent loop: ``generate_content`` requests (with
retries, :mod:`..retry`), replies read as turns under :mod:`.outcomes`, and tool results
given back as function responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..dialogue import Turn
from ..retry import send_with_retries
from ..tool import ToolOutput
from ..usage import from_gemini
from . import outcomes, wire

if TYPE_CHECKING:
    from hud.eval.run import Run

    from .agent import Settings


@dataclass(slots=True)
class Reply:
    """A reply (the SDK's ``GenerateContentResponse``), its dict form and its outcome."""

    raw: Any
    data: dict[str, Any]
    outcome: outcomes.Outcome


class GeminiDialect:
    """``generate_content`` requests and replies; model turns are kept as the SDK's
    ``Content`` (thought signatures included), our turns as dicts. ``screen`` (if any) is
    shown in the first request, as Google's guide asks: the prompt and a screenshot of the
    screen's current state (https://ai.google.dev/gemini-api/docs/computer-use)."""

    def __init__(self, client: Any, settings: Settings, tools: list[dict[str, Any]],
                 system: str | None, functions: tuple[str, ...], screen: Any = None) -> None:
        self.client = client
        self.settings = settings
        self.tools = tools
        self.system = system
        self.functions = frozenset(functions)
        self.screen = screen
        self.calls = 0

    async def send(self, run: Run, messages: list[Any]) -> tuple[Reply, float]:
        """The reply to ``messages``: an empty malformed turn is asked again (recorded as a
        ``finish`` step); a reply that ends the run, and every safety check, are recorded."""
        if self.screen is not None:
            await self._show_screen(messages)
        for attempt in range(outcomes.MALFORMED_RETRIES + 1):
            raw, duration = await self._request(run, messages)
            reply = self._judge(raw)
            if reply.outcome.action != outcomes.RETRY:
                break
            run.record("finish", reason=reply.outcome.reason, outcome="retry",
                       attempt=attempt + 1)
        else:
            reply.outcome.action = outcomes.END
        if reply.outcome.action == outcomes.END:
            run.record("finish", reason=reply.outcome.reason, outcome="end")
        for check in reply.outcome.checks:
            run.record("safety_check", policy=self.settings.safety, **check)
        return reply, duration

    async def _request(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        from google.genai import errors, types

        async def attempt(timeout: float) -> Any:
            tools: types.ToolListUnion = [types.Tool.model_validate(t) for t in self.tools]
            config = types.GenerateContentConfig(
                system_instruction=self.system, tools=tools or None,
                http_options=types.HttpOptions(timeout=int(timeout * 1000)),
                **(self.settings.extra or {}))
            contents = [types.Content.model_validate(m) if isinstance(m, dict) else m
                        for m in messages]  # typed: the SDK then writes the wire's camelCase
            return await self.client.aio.models.generate_content(
                model=self.settings.model, contents=contents, config=config)

        return await send_with_retries(run, self.settings.policy, attempt, errors.APIError,
                                       describe)

    def _judge(self, raw: Any) -> Reply:
        data = raw.model_dump(mode="json", exclude_none=True)
        content = _content(data)
        calls = wire.calls(content, self.calls + 1)
        return Reply(raw, data, outcomes.outcome(data, calls, wire.text(content),
                                                 self.settings.safety))

    async def _show_screen(self, messages: list[Any]) -> None:
        """Add a screenshot to the opening user turn, unless it carries an image already."""
        screen, self.screen = self.screen, None
        opening = messages[-1] if messages and isinstance(messages[-1], dict) else None
        if opening is None or opening.get("role") != "user" or any(
                "inline_data" in p for p in opening["parts"]):
            return
        opening["parts"].append(wire.inline(await screen.screenshot(), "image/png"))

    def read(self, reply: Reply) -> Turn:
        candidates = reply.raw.candidates or []
        content = candidates[0].content if candidates and candidates[0].content else None
        data = _content(reply.data)
        calls = wire.calls(data, self.calls + 1)
        self.calls += len(calls)
        extra = {"finish_reason": reply.outcome.reason, "model": reply.raw.model_version}
        if reply.outcome.action == outcomes.END:  # never run a cut-off or blocked call
            calls, extra["stop_reason"] = [], reply.outcome.reason
        usage = reply.data.get("usage_metadata")
        return Turn(text=wire.text(data), calls=calls, messages=[content] if content else [],
                    usage=from_gemini(usage), extra=extra)

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return [wire.function_responses(results, self.functions)]

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)


def _content(data: dict[str, Any]) -> dict[str, Any]:
    candidates = data.get("candidates") or []
    content = candidates[0].get("content") if candidates else None
    return content or {"parts": []}


def describe(exc: Any) -> str:
    """A google-genai error (``code status: message``) or a transport failure, in one line."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"{code} {exc.status or ''}: {exc.message}".replace(" :", ":")
    return f"{type(exc).__name__}: {exc}"
