"""``openai``: OpenAI's Responses API with its native tools.

Tools, by capability and by model family (``models.json``, see :mod:`.models`): the first
``ssh`` shell gets the native ``shell`` and ``apply_patch`` tools where the model has them
(V4A diffs applied here; other shells, and every shell of an older model, get function tools
``bash``...); ``rfb`` and ``cdp`` get the model's computer tool (GA ``computer`` on
gpt-5.4/5.5, else ``computer_use_preview`` with ``truncation: "auto"``; screenshots fitted
to ``display_width`` x ``display_height``, coordinates scaled back; scroll distances are
pixels; a ``switch_screen`` function with several screens); ``mcp`` tools are function tools.
Calls run in the model's order (:func:`~hud.harnesses.dialogue.run_tools`).

Settings (``--config key=value``): ``api_key`` (else ``$OPENAI_API_KEY``), ``base_url`` (else
``$OPENAI_BASE_URL``), ``model`` (``gpt-5.1``), ``tool_version`` (``computer`` or
``computer_use_preview``: overrides the table), ``safety`` (``acknowledge``, the default, or
``stop``: what to do with a computer call's ``pending_safety_checks``; each check and the
decision are recorded as a ``safety_check`` step), ``max_output_tokens``, ``max_steps``,
``system_prompt`` (sent as ``instructions``), ``tool_timeout`` (120 s), ``agent_timeout``,
``keep_screenshots`` (3), ``display_width``/``display_height`` (1280 x 800), ``extra``
(request fields: ``reasoning``, ``temperature``...), and the retry policy.

A response with status ``incomplete`` (``max_output_tokens``, ``content_filter``) ends the
run with that reason, recorded as an ``incomplete`` step: none of its calls runs, since a
truncated call's arguments are cut.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ..dialogue import Turn
from ..provider import (
    SAFETY_POLICIES,
    ProviderAgent,
    ProviderSettings,
    check_choice,
    describe_error,
)
from ..retry import send_with_retries
from ..tool import ToolOutput
from ..toolbox import ToolBox
from ..usage import from_openai_responses
from ..workbench import Workbench
from . import wire
from .models import ModelTools, model_tools
from .tools import responses_tools

if TYPE_CHECKING:
    from hud.eval.run import Run

DEFAULT_MODEL = "gpt-5.1"


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    max_output_tokens: int | None = None
    tool_version: str | None = None
    safety: str = "acknowledge"


class OpenAIAgent(ProviderAgent):
    """GPT models on their native tools, through the Responses API; see the module doc."""

    name: ClassVar[str] = "openai"
    settings_type = Settings
    key_env = ("OPENAI_API_KEY",)
    base_env = ("OPENAI_BASE_URL",)
    settings: Settings

    def check(self) -> None:
        super().check()
        check_choice("openai", "safety", self.settings.safety, SAFETY_POLICIES)
        model_tools(self.settings.model, self.settings.tool_version)  # a bad tool_version

    def request_fields(self) -> frozenset[str]:
        from openai.types.responses import response_create_params as params

        return frozenset(set(params.ResponseCreateParamsBase.__annotations__)
                         - {"model", "input", "tools", "instructions", "stream"})

    def request_settings(self) -> dict[str, Any]:
        found = super().request_settings()
        if self.settings.max_output_tokens:
            found["max_output_tokens"] = self.settings.max_output_tokens
        return found

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        import openai

        client = openai.AsyncOpenAI(api_key=self.settings.api_key,
                                    base_url=self.settings.base_url, max_retries=0)
        stack.push_async_callback(client.close)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[ResponsesDialect, ToolBox, list[Any]]:
        spec = model_tools(self.settings.model, self.settings.tool_version)
        toolbox, tools = responses_tools(bench, spec, self.settings.tool_timeout)
        return (ResponsesDialect(client, self.settings, tools, spec), toolbox,
                wire.prompt_items(run.prompt, run.messages))


class ResponsesDialect:
    """Responses requests (stateless: the whole input each turn) and replies. Each reply's
    safety checks and an ``incomplete`` status are recorded as it arrives (:meth:`review`)
    and decide whether its calls run (:meth:`read`)."""

    def __init__(self, client: Any, settings: Settings, tools: list[dict[str, Any]],
                 spec: ModelTools) -> None:
        self.client = client
        self.settings = settings
        self.tools = tools
        self.spec = spec

    def body(self, messages: list[Any]) -> dict[str, Any]:
        """The request for the conversation so far."""
        body: dict[str, Any] = {"model": self.settings.model, "input": messages,
                                **(self.settings.extra or {})}
        if self.tools:
            body["tools"] = self.tools
            body["parallel_tool_calls"] = True
        if any(tool["type"] == "computer_use_preview" for tool in self.tools):
            # https://developers.openai.com/api/docs/guides/tools-computer-use: required with it
            body["truncation"] = "auto"
        if self.settings.system_prompt:
            body["instructions"] = self.settings.system_prompt
        if self.settings.max_output_tokens:
            body["max_output_tokens"] = self.settings.max_output_tokens
        return body

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        import openai

        body = self.body(messages)

        async def attempt(timeout: float) -> dict[str, Any]:
            reply = await self.client.responses.create(**body, timeout=timeout)
            return dict(reply.to_dict())

        reply, duration = await send_with_retries(run, self.settings.policy, attempt,
                                                  openai.APIError, describe_error)
        self.review(run, reply)
        return reply, duration

    def review(self, run: Run, reply: dict[str, Any]) -> None:
        """Record each pending safety check with the policy's decision, and an incomplete
        response with its reason and the calls that will not run."""
        output = reply.get("output") or []
        decision = "acknowledged" if self.settings.safety == "acknowledge" else "stopped"
        for call_id, check in wire.safety_checks(output):
            run.record("safety_check", policy=self.settings.safety, call_id=call_id,
                       id=check.get("id"), code=check.get("code"), message=check.get("message"),
                       decision=decision)
        reason = wire.incomplete_reason(reply)
        if reason is not None:
            run.record("incomplete", reason=reason,
                       calls_not_run=[call["id"] for call in wire.calls(output)])

    def read(self, reply: dict[str, Any]) -> Turn:
        output = reply.get("output") or []
        stop = wire.incomplete_reason(reply)
        if stop is None and self.settings.safety == "stop" and wire.safety_checks(output):
            stop = "safety_check"
        return Turn(text=wire.output_text(output), calls=wire.calls(output),
                    messages=wire.replayed(output),
                    usage=from_openai_responses(reply.get("usage")),
                    extra={"finish_reason": reply.get("status"), "model": reply.get("model")},
                    stop=stop)

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return wire.results(results)

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)
