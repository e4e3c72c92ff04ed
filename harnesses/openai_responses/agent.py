"""``openai``: OpenAI's Responses API with its native tools.

Tools, by capability: the first ``ssh`` shell gets the native ``shell`` and ``apply_patch``
tools (V4A diffs applied here; further shells get function tools ``<capability>__bash``...);
``rfb`` and ``cdp`` get the native ``computer`` tool (screenshots fitted to
``display_width`` x ``display_height``, coordinates scaled back; scroll distances are pixels;
a ``switch_screen`` function with several screens); ``mcp`` tools are function tools.

Settings (``--config key=value``): ``api_key`` (else ``$OPENAI_API_KEY``), ``base_url`` (else
``$OPENAI_BASE_URL``), ``model`` (``gpt-5.1``), ``max_output_tokens``, ``max_steps``,
``system_prompt`` (sent as ``instructions``), ``tool_timeout`` (120 s), ``agent_timeout``,
``keep_screenshots`` (3), ``display_width``/``display_height`` (1280 x 800), ``extra``
(request fields: ``reasoning``, ``temperature``...), and the retry policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import shlex
from typing import TYPE_CHECKING, Any, ClassVar

from hud.errors import ToolError

from ..computer import SETTLE, switch_screen
from ..dialogue import Turn
from ..editing import apply_diff, new_file
from ..provider import ProviderAgent, ProviderSettings, describe_error
from ..retry import send_with_retries
from ..shell_tools import read_text, shell_tools
from ..tool import Image, Tool, ToolOutput, ToolSpec
from ..toolbox import ToolBox
from ..workbench import Workbench
from . import wire

if TYPE_CHECKING:
    from hud.eval.run import Run

DEFAULT_MODEL = "gpt-5.1"
MAX_OUTPUT = 30_000
KEY_NAMES = {"arrowleft": "left", "arrowright": "right", "arrowup": "up", "arrowdown": "down",
             "cmd": "super", "option": "alt", "ctl": "ctrl"}


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    max_output_tokens: int | None = None


class OpenAIAgent(ProviderAgent):
    """GPT models on their native tools, through the Responses API; see the module doc."""

    name: ClassVar[str] = "openai"
    settings_type = Settings
    key_env = ("OPENAI_API_KEY",)
    base_env = ("OPENAI_BASE_URL",)
    settings: Settings

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        import openai

        client = openai.AsyncOpenAI(api_key=self.settings.api_key,
                                    base_url=self.settings.base_url, max_retries=0)
        stack.push_async_callback(client.close)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[ResponsesDialect, ToolBox, list[Any]]:
        toolbox, tools = responses_tools(bench)
        return (ResponsesDialect(client, self.settings, tools), toolbox,
                wire.prompt_items(run.prompt, run.messages))


def responses_tools(bench: Workbench) -> tuple[ToolBox, list[dict[str, Any]]]:
    """The tools for ``bench``: a box that runs them, and their native specs."""
    toolbox, tools = ToolBox(), list[dict[str, Any]]()
    for index, (name, shell) in enumerate(bench.shells):
        if index == 0:
            toolbox.add(Tool(ToolSpec("shell", "", {}), shell_function(shell)))
            toolbox.add(Tool(ToolSpec("apply_patch", "", {}), patch_function(shell)))
            tools += [dict(wire.SHELL), dict(wire.APPLY_PATCH)]
            continue
        for tool in shell_tools(shell, prefix=name):
            tools.append(wire.function_tool(toolbox.add(tool).spec))
    if bench.screens:
        current = {"screen": bench.screens[0][1]}
        toolbox.add(Tool(ToolSpec("computer", "", {}), computer_function(current)))
        tools.append(dict(wire.COMPUTER))
        if len(bench.screens) > 1:
            tools.append(wire.function_tool(toolbox.add(
                switch_screen(current, dict(bench.screens))).spec))
    for tool in bench.functions:
        tools.append(wire.function_tool(toolbox.add(tool).spec))
    return toolbox, tools


def shell_function(shell: Any) -> Any:
    """The native shell tool: each command of the action in turn, with its ``timeout_ms``;
    the result is the JSON list of ``{"stdout", "stderr", "outcome"}`` the API expects."""

    async def run_commands(action: dict[str, Any]) -> ToolOutput:
        commands = action.get("commands")
        if not isinstance(commands, list) or not commands:
            raise ToolError("the shell action has no commands")
        timeout = (action.get("timeout_ms") or 120_000) / 1000
        limit = int(action.get("max_output_length") or MAX_OUTPUT)
        results = []
        for command in commands:
            done = await shell.run(str(command), timeout=timeout)
            outcome = {"type": "timeout"} if getattr(done, "timed_out", False) else {
                "type": "exit", "exit_code": done.exit_status}
            results.append({"stdout": _tail(done.stdout, limit),
                            "stderr": _tail(done.stderr, limit), "outcome": outcome})
        return ToolOutput(json.dumps(results))

    return run_commands


def patch_function(shell: Any) -> Any:
    """The native apply_patch tool: one V4A file operation."""

    async def apply(operation: dict[str, Any]) -> ToolOutput:
        kind, path = operation.get("type"), operation.get("path")
        if not isinstance(path, str) or not path:
            raise ToolError("the operation has no path")
        if kind == "delete_file":
            done = await shell.run(f"rm -- {shlex.quote(path)}", timeout=30)
            if done.exit_status:
                raise ToolError(f"cannot delete {path}: {done.stderr.strip()}")
            return ToolOutput(f"Deleted {path}")
        diff = str(operation.get("diff") or "")
        if kind == "create_file":
            parent = posixpath.dirname(path)
            if parent not in ("", ".", "/"):
                await shell.run(f"mkdir -p -- {shlex.quote(parent)}", timeout=30)
            await shell.write_file(path, new_file(diff))
            return ToolOutput(f"Created {path}")
        if kind == "update_file":
            text = await read_text(shell, path)
            await shell.write_file(path, apply_diff(text, diff, path))
            return ToolOutput(f"Updated {path}")
        raise ToolError(f"unknown operation {kind!r}")

    return apply


def computer_function(current: dict[str, Any]) -> Any:
    """The native computer tool: a batch of actions, then a screenshot."""

    async def act(args: dict[str, Any]) -> ToolOutput:
        screen = current["screen"]
        for action in args.get("actions") or []:
            await perform(screen, action)
        if any(a.get("type") != "screenshot" for a in args.get("actions") or []):
            await screen.wait(SETTLE)
        return ToolOutput("", images=[Image(await screen.screenshot())])

    return act


async def perform(screen: Any, action: dict[str, Any]) -> None:
    """One action of the computer tool on a :class:`~hud.harnesses.computer.Computer`."""
    kind = action.get("type")
    keys = [_key(k) for k in action.get("keys") or []]
    x, y = action.get("x"), action.get("y")
    if kind in ("click", "double_click"):
        button = {"wheel": "middle"}.get(action.get("button", "left"),
                                         action.get("button", "left"))
        await screen.click(x, y, button=button, count=2 if kind == "double_click" else 1,
                           modifiers=keys)
    elif kind == "move":
        await screen.move(x, y)
    elif kind == "drag":
        await screen.drag([(p["x"], p["y"]) for p in action.get("path") or []])
    elif kind == "scroll":  # pixels, never wheel clicks
        await screen.scroll(x, y, dx=action.get("scroll_x") or 0,
                            dy=action.get("scroll_y") or 0, unit="pixels")
    elif kind == "type":
        await screen.type(str(action.get("text") or ""))
    elif kind == "keypress":
        await screen.press("+".join(keys))
    elif kind == "wait":
        await screen.wait(float(action.get("ms") or 1000) / 1000)
    elif kind != "screenshot":
        raise ToolError(f"unknown computer action {kind!r}")


def _key(name: str) -> str:
    return KEY_NAMES.get(name.lower(), name if len(name) == 1 else name.lower())


def _tail(data: Any, limit: int) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
    return text if len(text) <= limit else text[-limit:]


class ResponsesDialect:
    """Responses requests (stateless: the whole input each turn) and replies."""

    def __init__(self, client: Any, settings: Settings, tools: list[dict[str, Any]]) -> None:
        self.client = client
        self.settings = settings
        self.tools = tools

    async def send(self, run: Run, messages: list[Any]) -> tuple[Any, float]:
        import openai

        body: dict[str, Any] = {"model": self.settings.model, "input": messages,
                                **(self.settings.extra or {})}
        if self.tools:
            body["tools"] = self.tools
            body["parallel_tool_calls"] = True
        if self.settings.system_prompt:
            body["instructions"] = self.settings.system_prompt
        if self.settings.max_output_tokens:
            body["max_output_tokens"] = self.settings.max_output_tokens

        async def attempt(timeout: float) -> dict[str, Any]:
            reply = await self.client.responses.create(**body, timeout=timeout)
            return dict(reply.to_dict())

        return await send_with_retries(run, self.settings.policy, attempt, openai.APIError,
                                       describe_error)

    def read(self, reply: dict[str, Any]) -> Turn:
        output = reply.get("output") or []
        return Turn(text=wire.output_text(output), calls=wire.calls(output),
                    messages=wire.replayed(output), usage=wire.usage_tokens(reply.get("usage")),
                    extra={"finish_reason": reply.get("status"), "model": reply.get("model")})

    def results(self, results: list[tuple[dict[str, Any], ToolOutput]]) -> list[Any]:
        return [wire.result_item(call, output) for call, output in results]

    def prune(self, messages: list[Any], keep: int) -> None:
        wire.prune_images(messages, keep)
