"""``claude``: Anthropic's Messages API with Claude's native tools.

Tools, by capability: the first ``ssh`` shell gets the native ``bash`` and text editor
tools (further shells get function tools named ``<capability>__bash``...); ``rfb`` and
``cdp`` get the native ``computer`` tool (screenshots scaled to fit ``display_width`` x
``display_height``, coordinates scaled back; with several screens a ``switch_screen`` tool
picks the one it drives); ``mcp`` tools are client tools.

Settings (``--config key=value``): ``api_key`` (else ``$ANTHROPIC_API_KEY``), ``base_url``
(else ``$ANTHROPIC_BASE_URL``), ``model``, ``max_tokens`` (8192), ``max_steps`` (else the
run's, else 50), ``system_prompt``, ``tool_timeout`` (120 s), ``agent_timeout``,
``keep_screenshots`` (3), ``display_width``/``display_height`` (1280 x 800), ``extra``
(request fields, a JSON object: ``thinking``, ``temperature``...), and the retry policy
(``max_retries``, ``retry_delay``, ``max_retry_delay``, ``request_timeout``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ..computer import switch_screen
from ..dialogue import Turn
from ..editing import TextEditor
from ..provider import ProviderAgent, ProviderSettings, describe_error
from ..retry import send_with_retries
from ..shell_tools import command_report, shell_tools
from ..tool import Tool, ToolOutput, ToolSpec
from ..toolbox import ToolBox
from ..workbench import Workbench
from . import wire
from .actions import computer_function

if TYPE_CHECKING:
    from hud.eval.run import Run

DEFAULT_MODEL = "claude-sonnet-4-6"


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    max_tokens: int = 8192


class ClaudeAgent(ProviderAgent):
    """Claude on its native tools; see the module doc."""

    name: ClassVar[str] = "claude"
    settings_type = Settings
    key_env = ("ANTHROPIC_API_KEY",)
    base_env = ("ANTHROPIC_BASE_URL",)
    settings: Settings

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        import anthropic

        client = anthropic.AsyncAnthropic(api_key=self.settings.api_key,
                                          base_url=self.settings.base_url, max_retries=0)
        stack.push_async_callback(client.close)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[ClaudeDialect, ToolBox, list[Any]]:
        settings = self.settings
        toolbox, tools, betas = claude_tools(settings.model, bench, settings.tool_timeout)
        system, messages = wire.prompt_messages(run.prompt, run.messages, settings.system_prompt)
        return ClaudeDialect(client, settings, system, tools, betas), toolbox, messages


def claude_tools(model: str, bench: Workbench, timeout: float | None = None
                 ) -> tuple[ToolBox, list[dict[str, Any]], list[str]]:
    """The tools for ``bench``: a box that runs them, their native specs, the beta flags."""
    toolbox, tools, betas = ToolBox(), [], []
    for index, (name, shell) in enumerate(bench.shells):
        if index == 0:
            editor = wire.editor_tool(model)
            toolbox.add(Tool(ToolSpec("bash", "", {}), bash_function(shell, timeout)))
            toolbox.add(Tool(ToolSpec(editor["name"], "", {}), TextEditor(shell)))
            tools += [dict(wire.BASH), editor]
            continue
        for tool in shell_tools(shell, prefix=name):
            tools.append(wire.function_tool(toolbox.add(tool).spec))
    if bench.screens:
        current = {"screen": bench.screens[0][1]}
        width, height = current["screen"].size
        computer, beta = wire.computer_tool(model, width, height)
        toolbox.add(Tool(ToolSpec(wire.COMPUTER_NAME, "", {}), computer_function(current)))
        tools.append(computer)
        betas.append(beta)
        if len(bench.screens) > 1:
            tool = toolbox.add(switch_screen(current, dict(bench.screens)))
            tools.append(wire.function_tool(tool.spec))
    for tool in bench.functions:
        tools.append(wire.function_tool(toolbox.add(tool).spec))
    return toolbox, tools, betas


def bash_function(shell: Any, timeout: float | None = None) -> Any:
    """The native bash tool: ``command`` runs in a fresh ``bash -c`` in the workspace and is
    killed after ``timeout`` seconds; ``restart`` has nothing to restart."""

    async def bash(args: dict[str, Any]) -> ToolOutput:
        if args.get("restart"):
            return ToolOutput("tool has been restarted.")
        command = args.get("command")
        if not isinstance(command, str):
            return ToolOutput("error: missing string argument 'command'", is_error=True)
        result = await shell.run(command, timeout=timeout)
        return ToolOutput(command_report(result, timeout),
                          is_error=bool(getattr(result, "timed_out", False)))

    return bash


class ClaudeDialect:
    """Messages requests and replies for :func:`~hud.harnesses.dialogue.converse`."""

    def __init__(self, client: Any, settings: Settings, system: list[dict[str, Any]],
                 tools: list[dict[str, Any]], betas: list[str]) -> None:
        self.client = client
        self.settings = settings
        self.system = system
        self.tools = tools
        self.betas = betas

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        import anthropic

        body = wire.request(self.settings.model, self.settings.max_tokens, self.system,
                            self.tools, messages, self.settings.extra)

        async def attempt(timeout: float) -> dict[str, Any]:
            if self.betas:
                reply = await self.client.beta.messages.create(**body, betas=self.betas,
                                                               timeout=timeout)
            else:
                reply = await self.client.messages.create(**body, timeout=timeout)
            return dict(reply.to_dict())

        return await send_with_retries(run, self.settings.policy, attempt, anthropic.APIError,
                                       describe_error)

    def read(self, reply: dict[str, Any]) -> Turn:
        return Turn(text=wire.reply_text(reply), calls=wire.tool_calls(reply),
                    messages=[wire.assistant_message(reply)],
                    usage=wire.usage_tokens(reply.get("usage")),
                    extra={"finish_reason": reply.get("stop_reason"),
                           "model": reply.get("model")})

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return [wire.tool_results(results)]

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)
