"""``gemini``: Google's Gemini API (``google-genai``) with Gemini's native tools.

Tools, by capability: ``cdp`` and ``rfb`` get native computer use (the predefined
functions; 0-999 grid coordinates converted to pixels; environment ``ENVIRONMENT_BROWSER``
for a browser, ``ENVIRONMENT_DESKTOP`` for a desktop; a ``switch_screen`` function with
several screens); ``ssh`` shells and ``mcp`` tools are function declarations (``bash``,
``read_file``, ``write_file``, ``edit_file``; qualified by capability with several shells).

Settings (``--config key=value``): ``api_key`` (else ``$GEMINI_API_KEY``, else
``$GOOGLE_API_KEY``), ``base_url`` (else ``$GOOGLE_GEMINI_BASE_URL``), ``model``
(``gemini-2.5-computer-use-preview-10-2025``), ``max_steps``, ``system_prompt``,
``tool_timeout`` (120 s), ``agent_timeout``, ``keep_screenshots`` (3),
``display_width``/``display_height`` (1440 x 900, Google's recommendation),
``excluded_functions`` (predefined functions to leave out), ``extra`` (generation config
fields), and the retry policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ..computer import switch_screen
from ..dialogue import Turn
from ..provider import ProviderAgent, ProviderSettings
from ..retry import send_with_retries
from ..shell_tools import shell_tools
from ..tool import ToolOutput
from ..toolbox import ToolBox
from ..usage import from_gemini
from ..workbench import Workbench
from . import wire
from .actions import FUNCTIONS, computer_tools

if TYPE_CHECKING:
    from hud.eval.run import Run

DEFAULT_MODEL = "gemini-2.5-computer-use-preview-10-2025"


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    display_width: int = 1440
    display_height: int = 900
    excluded_functions: list[str] | None = None


class GeminiAgent(ProviderAgent):
    """Gemini on its native tools; see the module doc."""

    name: ClassVar[str] = "gemini"
    settings_type = Settings
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    base_env = ("GOOGLE_GEMINI_BASE_URL",)
    settings: Settings

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        from google import genai
        from google.genai import types

        base_url = self.settings.base_url
        client = genai.Client(api_key=self.settings.api_key, http_options=types.HttpOptions(
            base_url=base_url) if base_url else None)
        stack.push_async_callback(client.aio.aclose)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[GeminiDialect, ToolBox, list[Any]]:
        settings = self.settings
        toolbox, tools = gemini_tools(bench, settings.excluded_functions)
        system, contents = wire.prompt_contents(run.prompt, run.messages)
        system = "\n\n".join(s for s in (settings.system_prompt, system) if s) or None
        return GeminiDialect(client, settings, tools, system), toolbox, contents


def gemini_tools(bench: Workbench, excluded: list[str] | None = None
                 ) -> tuple[ToolBox, list[dict[str, Any]]]:
    """The tools for ``bench``: a box that runs them, and the request's ``tools``."""
    toolbox, tools, declared = ToolBox(), [], []
    for name, shell in bench.shells:
        for tool in shell_tools(shell, prefix=name if len(bench.shells) > 1 else None):
            declared.append(toolbox.add(tool).spec)
    if bench.screens:
        current = {"screen": bench.screens[0][1]}
        for tool in computer_tools(current):
            if tool.spec.name not in (excluded or []):
                toolbox.add(tool)
        environment = ("ENVIRONMENT_BROWSER" if current["screen"].display.kind == "browser"
                       else "ENVIRONMENT_DESKTOP")
        tools.append(wire.computer_use(environment, excluded))
        if len(bench.screens) > 1:
            declared.append(toolbox.add(switch_screen(current, dict(bench.screens))).spec)
    for tool in bench.functions:
        declared.append(toolbox.add(tool).spec)
    if declared:
        tools.append(wire.function_declarations(declared))
    return toolbox, tools


class GeminiDialect:
    """``generate_content`` requests and replies; model turns are kept as the SDK's
    ``Content`` (thought signatures included), our turns as dicts."""

    def __init__(self, client: Any, settings: Settings, tools: list[dict[str, Any]],
                 system: str | None) -> None:
        self.client = client
        self.settings = settings
        self.tools = tools
        self.system = system
        self.calls = 0

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
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
                                       lambda e: f"{e.code}: {e.message}")

    def read(self, reply: Any) -> Turn:
        candidates = reply.candidates or []
        content = candidates[0].content if candidates and candidates[0].content else None
        data = content.model_dump(exclude_none=True) if content else {"parts": []}
        calls = wire.calls(data, self.calls + 1)
        self.calls += len(calls)
        usage = reply.usage_metadata.model_dump(exclude_none=True) if (
            reply.usage_metadata) else {}
        return Turn(text=wire.text(data), calls=[{k: v for k, v in c.items()} for c in calls],
                    messages=[content] if content else [],
                    usage=from_gemini(usage),
                    extra={"finish_reason": str(candidates[0].finish_reason)
                           if candidates else None, "model": reply.model_version})

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return [wire.function_responses(results, frozenset(FUNCTIONS))]

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)
