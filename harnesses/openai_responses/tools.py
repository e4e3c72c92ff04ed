"""The ``openai`` harness's tools: the native ``shell``, ``apply_patch`` and computer tools
over the opened capabilities, and function tools for the rest.

Every failure reaches the model as the result type of its call: a shell error as a failed
command in ``shell_call_output``, a patch error as ``apply_patch_call_output`` with status
``failed``, a computer error as ``computer_call_output`` with a screenshot taken after the
failure (the error text follows it, see :func:`.wire.results`), a function error as
``function_call_output``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import shlex
from typing import Any

from hud.errors import ToolError

from ..computer import SETTLE, switch_screen
from ..editing import apply_diff, new_file
from ..shell_tools import read_text, shell_tools
from ..tool import Image, Tool, ToolOutput, ToolSpec
from ..toolbox import ToolBox
from ..workbench import Workbench
from . import wire
from .models import ModelTools, computer_tool

log = logging.getLogger(__name__)
MAX_OUTPUT = 30_000
SCREENSHOT_TIME = 10.0  # seconds of a computer call kept for the screenshot after a failure
KEY_NAMES = {"arrowleft": "left", "arrowright": "right", "arrowup": "up", "arrowdown": "down",
             "cmd": "super", "option": "alt", "ctl": "ctrl"}


def responses_tools(bench: Workbench, spec: ModelTools, tool_timeout: float | None = None
                    ) -> tuple[ToolBox, list[dict[str, Any]]]:
    """The tools for ``bench`` on a model of ``spec``: a box that runs them, and their
    native specs. The first shell gets the native tools where the model has them."""
    toolbox, tools = ToolBox(), list[dict[str, Any]]()
    for index, (name, shell) in enumerate(bench.shells):
        if index == 0 and spec.shell:
            toolbox.add(Tool(ToolSpec("shell", "", {}), shell_function(shell)))
            tools.append(dict(wire.SHELL))
            if spec.apply_patch:
                toolbox.add(Tool(ToolSpec("apply_patch", "", {}), patch_function(shell)))
                tools.append(dict(wire.APPLY_PATCH))
            continue
        for tool in shell_tools(shell, prefix=name if index else None):
            tools.append(wire.function_tool(toolbox.add(tool).spec))
    if bench.screens:
        tools += _computer_tools(bench, spec, toolbox, tool_timeout)
    for tool in bench.functions:
        tools.append(wire.function_tool(toolbox.add(tool).spec))
    return toolbox, tools


def _computer_tools(bench: Workbench, spec: ModelTools, toolbox: ToolBox,
                    tool_timeout: float | None) -> list[dict[str, Any]]:
    first = bench.screens[0][1]
    native = computer_tool(spec, first.display.kind, first.size)
    if native is None:
        log.warning("openai: %s models drive no %s screen; %s is left out", spec.family,
                    first.display.kind, bench.screens[0][0])
        return []
    current = {"screen": first}
    toolbox.add(Tool(ToolSpec("computer", "", {}), computer_function(current, tool_timeout)))
    if len(bench.screens) == 1:
        return [native]
    switch = toolbox.add(switch_screen(current, dict(bench.screens)))
    return [native, wire.function_tool(switch.spec)]


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


def computer_function(current: dict[str, Any], tool_timeout: float | None = None) -> Any:
    """The native computer tool: a batch of actions, then a screenshot. A failed or
    timed-out action still ends in a screenshot (the API wants one for every computer
    call), returned with the error: the actions get ``tool_timeout`` less the time kept for
    that screenshot."""
    budget = None if tool_timeout is None else tool_timeout - min(SCREENSHOT_TIME,
                                                                  tool_timeout / 2)

    async def act(args: dict[str, Any]) -> ToolOutput:
        screen = current["screen"]
        actions = args.get("actions") or []
        error = None
        try:
            async with asyncio.timeout(budget):
                for action in actions:
                    await perform(screen, action)
                if any(a.get("type") != "screenshot" for a in actions):
                    await screen.wait(SETTLE)
        except TimeoutError:
            error = f"error: the computer actions timed out after {budget:g} s"
        except ToolError as exc:
            error = f"error: {exc}"
        except ConnectionError:
            raise  # the screen is gone: no screenshot can follow
        except Exception as exc:  # a bad action (a drag without a path...): the model's to fix
            error = f"error: {type(exc).__name__}: {exc}"
        image = Image(await screen.screenshot())
        return ToolOutput(error or "", images=[image], is_error=error is not None)

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
        path = [(p["x"], p["y"]) for p in action.get("path") or []]
        if len(path) < 2:
            raise ToolError("a drag needs a path of at least two points")
        await screen.drag(path)
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
