"""Tools as a harness sees them: a neutral spec, and a box that runs tools by name.

A :class:`ToolSpec` is what the model is told (a name, a description, a JSON Schema of the
arguments); provider adapters turn it into their native format. A :class:`ToolBox` maps names
to async functions and runs calls so that the loop never has to handle a tool's failure: bad
arguments, an unknown name, a timeout or an exception come back as a :class:`ToolOutput` with
``is_error`` set, for the model to read. Only a lost connection to the environment
(:class:`ConnectionError`) and cancellation propagate: no tool can work after those.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

NAME_LIMIT = 64
_NAME_FORBIDDEN = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is told about it: ``parameters`` is the JSON Schema of the
    arguments object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Image:
    """An image a tool returned: base64 ``data`` and its media type."""

    data: str
    mime_type: str = "image/png"


@dataclass(slots=True)
class ToolOutput:
    """What a tool call gave back to the model: text, any images, and whether it failed."""

    text: str
    images: list[Image] = field(default_factory=list)
    is_error: bool = False


class ToolError(Exception):
    """A failure the model should read and may correct (a missing file, an ambiguous edit).
    Raise it from a tool function; its message becomes the tool's result."""


ToolFunction = Callable[[dict[str, Any]], Awaitable["ToolOutput | str"]]


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    function: ToolFunction


def sanitize_name(name: str, prefix: str | None = None) -> str:
    """A tool name providers accept (``[A-Za-z0-9_-]{1,64}``), qualified by ``prefix``
    (``prefix__name``) when given."""
    full = f"{prefix}__{name}" if prefix else name
    cleaned = _NAME_FORBIDDEN.sub("_", full)[:NAME_LIMIT]
    return cleaned or "tool"


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

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._tools.values()]

    def add(self, tool: Tool) -> Tool:
        """Add ``tool``; a name already taken gets a numeric suffix (``name_2``)."""
        name, n = tool.spec.name, 2
        while name in self._tools:
            suffix = f"_{n}"
            name, n = tool.spec.name[: NAME_LIMIT - len(suffix)] + suffix, n + 1
        if name != tool.spec.name:
            spec = ToolSpec(name=name, description=tool.spec.description,
                            parameters=tool.spec.parameters)
            tool = Tool(spec=spec, function=tool.function)
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
    """A call's arguments as a dict: providers send JSON text, which may be empty or broken."""
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
