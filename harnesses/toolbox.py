"""A box of tools that runs calls by name, so that a loop never handles a tool's failure.

Bad arguments, an unknown name, a timeout, a :class:`~hud.errors.ToolError` or any other
exception come back as a :class:`~.tool.ToolOutput` with ``is_error`` set, for the model to
read. Only a lost connection to the environment (:class:`ConnectionError`) and cancellation
propagate: no tool can work after those.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from typing import Any

from hud.errors import ToolError

from .tool import NAME_LIMIT, Tool, ToolOutput, ToolSpec


class ToolBox:
    """Tools by name. Names must be unique; :meth:`add` makes a taken name unique."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        """The tools, in the order they were added (under the names they were given)."""
        return iter(self._tools.values())

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._tools.values()]

    def read_only(self, name: str) -> bool:
        """Whether the tool ``name`` is marked read-only (an unknown name is not)."""
        tool = self._tools.get(name)
        return tool is not None and tool.read_only

    def add(self, tool: Tool) -> Tool:
        """Add ``tool``; a name already taken gets a numeric suffix (``name_2``)."""
        name, n = tool.spec.name, 2
        while name in self._tools:
            suffix = f"_{n}"
            name, n = tool.spec.name[: NAME_LIMIT - len(suffix)] + suffix, n + 1
        if name != tool.spec.name:
            spec = ToolSpec(name=name, description=tool.spec.description,
                            parameters=tool.spec.parameters)
            tool = Tool(spec=spec, function=tool.function, read_only=tool.read_only)
        self._tools[name] = tool
        return tool

    async def call(self, name: str, arguments: str | dict[str, Any] | None,
                   timeout: float | None = None) -> ToolOutput:
        """Run one call. Never raises for the tool's own failures (see the module doc)."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return ToolOutput(f"error: unknown tool {name!r}; available tools: {known}",
                              is_error=True)
        try:
            args = parse_arguments(arguments)
        except ToolError as exc:
            return ToolOutput(f"error: {exc}", is_error=True)
        try:
            async with asyncio.timeout(timeout):
                result = await tool.function(args)
        except ToolError as exc:
            return ToolOutput(f"error: {exc}", is_error=True)
        except TimeoutError:
            return ToolOutput(f"error: tool {name!r} timed out after {timeout:g} s",
                              is_error=True)
        except ConnectionError:
            raise
        except Exception as exc:
            return ToolOutput(f"error: {type(exc).__name__}: {exc}", is_error=True)
        return result if isinstance(result, ToolOutput) else ToolOutput(str(result))


def parse_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    """A call's arguments as a dict: providers send JSON text, which may be empty or broken;
    a :class:`~hud.errors.ToolError` says what is wrong with it."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ToolError(f"the arguments are not valid JSON ({exc}); "
                            "send one JSON object") from None
    if not isinstance(arguments, dict):
        raise ToolError(f"the arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments
