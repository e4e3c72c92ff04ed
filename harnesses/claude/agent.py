"""``claude``: Anthropic's Messages API with Claude's native tools.

Tools, by capability: the first ``ssh`` shell gets the native ``bash`` (a persistent
session, :mod:`.bash`) and text editor tools (further shells get function tools named
``<capability>__bash``...); ``rfb`` and ``cdp`` get the native computer tool (screenshots
scaled to fit ``display_width`` x ``display_height``, coordinates scaled back; with several
screens a ``switch_screen`` tool picks the one it drives); ``mcp`` tools are client tools.
Which version of each native tool, and which beta flags, come from the model table
(:mod:`.models`); ``tool_version`` overrides it.

Stop reasons (https://platform.claude.com/docs/en/build-with-claude/handling-stop-reasons):
``pause_turn`` continues (the paused turn is sent back as it is); ``max_tokens`` inside a
``tool_use`` is retried once with twice the ``max_tokens`` (the partial call is never run),
and otherwise ends the run, as ``refusal`` and ``model_context_window_exceeded`` do, with
that reason. The model step records the stop reason and its outcome.

Settings (``--config key=value``): ``api_key`` (else ``$ANTHROPIC_API_KEY``), ``base_url``
(else ``$ANTHROPIC_BASE_URL``), ``model``, ``max_tokens`` (8192), ``max_steps`` (else the
run's, else 50), ``system_prompt``, ``tool_timeout`` (120 s), ``agent_timeout``,
``keep_screenshots`` (3), ``display_width``/``display_height`` (1280 x 800), ``extra``
(request fields, a JSON object: ``thinking``, ``output_config``...; a field the Messages
request does not take, and ``temperature``, ``top_p`` or ``top_k``, which the API refuses,
are an error before the run starts), ``tool_version``,
``output_limit`` (characters of a bash command's output, 30000), ``prices`` (see
:mod:`~hud.harnesses.usage`), and the retry policy (``max_retries``, ``retry_delay``,
``max_retry_delay``, ``request_timeout``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from ..computer import switch_screen
from ..dialogue import Turn
from ..editing import TextEditor
from ..provider import ProviderAgent, ProviderSettings, describe_error
from ..retry import send_with_retries
from ..shell_tools import MAX_OUTPUT_CHARS, shell_tools
from ..tool import Tool, ToolOutput, ToolSpec
from ..toolbox import ToolBox
from ..usage import from_anthropic
from ..workbench import Workbench
from . import wire
from .actions import computer_function
from .bash import BashSession
from .models import ModelTools, model_tools

if TYPE_CHECKING:
    from hud.eval.run import Run

log = logging.getLogger(__name__)
DEFAULT_MODEL = "claude-sonnet-4-6"
# Sampling parameters, gone from the Messages API since anthropic-version 2026-10-21 (and
# refused by Claude Opus 4.7 and later before that): a request with any of them is a 400.
SAMPLING = ("temperature", "top_p", "top_k")


def request_fields(beta: bool) -> frozenset[str]:
    """The fields of a Messages request (a beta one's, with ``beta``) that ``extra`` may
    set: the installed SDK's request type, less those the harness writes."""
    from anthropic.types import message_create_params as plain
    from anthropic.types.beta import message_create_params as beta_params

    module = beta_params if beta else plain
    return frozenset(set(module.MessageCreateParamsBase.__annotations__)
                     - {"model", "max_tokens", "messages", "system", "tools", "betas",
                        "stream"})


def api_version() -> str:
    """The ``anthropic-version`` the installed SDK sends."""
    from anthropic._constants import ANTHROPIC_API_VERSION

    return str(ANTHROPIC_API_VERSION)


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    max_tokens: int = 8192
    tool_version: str | None = None
    output_limit: int = MAX_OUTPUT_CHARS


class ClaudeAgent(ProviderAgent):
    """Claude on its native tools; see the module doc."""

    name: ClassVar[str] = "claude"
    settings_type = Settings
    key_env = ("ANTHROPIC_API_KEY",)
    base_env = ("ANTHROPIC_BASE_URL",)
    settings: Settings

    def check(self) -> None:
        sampling = sorted(set(self.settings.extra or {}) & set(SAMPLING))
        if sampling:
            raise ValueError(f"claude: --config extra sets {', '.join(sampling)}, which the "
                             f"Messages API refuses (the installed anthropic SDK speaks "
                             f"anthropic-version {api_version()}, where any sampling parameter "
                             f"is a 400); leave it out (output_config's effort sets how hard "
                             f"the model thinks)")
        super().check()
        model_tools(self.settings.model, self.settings.tool_version)  # a bad tool_version

    def request_fields(self) -> frozenset[str]:
        return request_fields(beta=True)

    def request_settings(self) -> dict[str, Any]:
        return {"max_tokens": self.settings.max_tokens, **super().request_settings()}

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        import anthropic

        client = anthropic.AsyncAnthropic(api_key=self.settings.api_key,
                                          base_url=self.settings.base_url, max_retries=0)
        stack.push_async_callback(client.close)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[ClaudeDialect, ToolBox, list[Any]]:
        settings = self.settings
        toolbox, tools, betas = claude_tools(
            model_tools(settings.model, settings.tool_version), bench, settings.tool_timeout,
            settings.output_limit)
        system, messages = wire.prompt_messages(run.prompt, run.messages, settings.system_prompt)
        return ClaudeDialect(client, settings, system, tools, betas), toolbox, messages


def claude_tools(model: ModelTools, bench: Workbench, timeout: float | None = None,
                 output_limit: int = MAX_OUTPUT_CHARS
                 ) -> tuple[ToolBox, list[dict[str, Any]], list[str]]:
    """The tools for ``bench``: a box that runs them, their native specs, the beta flags."""
    toolbox, tools, betas = ToolBox(), [], []
    for index, (name, shell) in enumerate(bench.shells):
        if index == 0:
            bash, editor = wire.bash_tool(model), wire.editor_tool(model)
            toolbox.add(Tool(ToolSpec(bash["name"], "", {}),
                             BashSession(shell, timeout, output_limit)))
            toolbox.add(Tool(ToolSpec(editor["name"], "", {}), TextEditor(shell)))
            tools += [bash, editor]
            continue
        for tool in shell_tools(shell, prefix=name):
            tools.append(wire.function_tool(toolbox.add(tool).spec))
    screens = usable_screens(model, bench.screens)
    if screens:
        current = {"screen": screens[0][1]}
        width, height = current["screen"].size
        computer, beta = wire.computer_tool(model, width, height)
        toolbox.add(Tool(ToolSpec(wire.COMPUTER_NAME, "", {}), computer_function(current)))
        tools.append(computer)
        betas += [beta] if beta else []
        if len(screens) > 1:
            tool = toolbox.add(switch_screen(current, dict(screens)))
            tools.append(wire.function_tool(tool.spec))
    for tool in bench.functions:
        tools.append(wire.function_tool(toolbox.add(tool).spec))
    return toolbox, tools, betas


def usable_screens(model: ModelTools, screens: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The screens whose kind (``browser``, ``desktop``) the model's table row drives; the
    others are left out, with a warning."""
    usable = []
    for name, screen in screens:
        kind = getattr(screen.display, "kind", "desktop")
        if kind in model.environments:
            usable.append((name, screen))
        else:
            log.warning("claude: screen %r is a %s, which the model's row of the model table "
                        "does not drive (only %s); it is not offered", name, kind,
                        ", ".join(model.environments))
    return usable


class ClaudeDialect:
    """Messages requests and replies for :func:`~hud.harnesses.dialogue.converse`."""

    def __init__(self, client: Any, settings: Settings, system: list[dict[str, Any]],
                 tools: list[dict[str, Any]], betas: list[str]) -> None:
        self.client = client
        self.settings = settings
        self.system = system
        self.tools = tools
        self.betas = betas
        self.max_tokens = settings.max_tokens  # doubled once for a tool call cut off
        # a field only the beta endpoint takes sends every request there
        self.beta = bool(betas) or bool(set(settings.extra or {}) - request_fields(beta=False))

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        import anthropic

        body = wire.request(self.settings.model, self.max_tokens, self.system,
                            self.tools, messages, self.settings.extra)

        async def attempt(timeout: float) -> dict[str, Any]:
            if self.beta:
                reply = await self.client.beta.messages.create(**body, betas=self.betas,
                                                               timeout=timeout)
            else:
                reply = await self.client.messages.create(**body, timeout=timeout)
            return dict(reply.to_dict())

        return await send_with_retries(run, self.settings.policy, attempt, anthropic.APIError,
                                       describe_error)

    def read(self, reply: dict[str, Any]) -> Turn:
        """The reply as a turn, its stop reason's outcome decided (see the module doc)."""
        reason = reply.get("stop_reason")
        turn = Turn(text=wire.reply_text(reply), calls=wire.tool_calls(reply),
                    messages=[wire.assistant_message(reply)],
                    usage=from_anthropic(reply.get("usage")),
                    extra={"finish_reason": reason, "model": reply.get("model")})
        outcome = "tools" if turn.calls else "done"
        if wire.truncated(reply):
            turn.calls, turn.messages = [], []  # a partial tool_use is never run or replayed
            if reason == "max_tokens" and self.max_tokens == self.settings.max_tokens:
                self.max_tokens *= 2
                turn.resume, outcome = True, "retry"
            else:
                turn.stop, outcome = str(reason), "end"
        elif reason == "pause_turn":
            turn.resume, outcome = True, "continue"
        elif reason in ("refusal", "max_tokens", "model_context_window_exceeded"):
            turn.calls, turn.stop, outcome = [], str(reason), "end"
        turn.extra["outcome"] = outcome
        return turn

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return [wire.tool_results(results)]

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)
