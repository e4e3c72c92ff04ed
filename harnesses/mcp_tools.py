"""One tool per tool of an ``mcp`` capability.

The tools drive an *MCP handle*: anything with ``list_tools()`` and ``call_tool(name,
arguments)`` shaped like the official SDK's ``mcp.Client`` (the mcp capability's client
handle is one). Listings and results are read by field name, as SDK objects or as the
protocol's JSON (camelCase), so the adapter works with either.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .tool import Image, Tool, ToolFunction, ToolOutput, ToolSpec, sanitize_name


class McpHandle(Protocol):
    """What the tools need from an MCP handle (``list``/``call`` are accepted as well)."""

    async def list_tools(self) -> Any: ...

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any: ...


async def mcp_tools(handle: McpHandle, prefix: str | None = None) -> list[Tool]:
    """A tool per MCP tool the handle lists; names sanitised and, with ``prefix``, qualified
    (``prefix__name``). The MCP name is kept for the call."""
    lister = getattr(handle, "list_tools", None) or handle.list  # type: ignore[attr-defined]
    listing = await lister()
    tools = []
    for entry in _field(listing, "tools", default=listing):
        name = str(_field(entry, "name"))
        schema = _field(entry, "input_schema", "inputSchema", default=None) or {}
        spec = ToolSpec(name=sanitize_name(name, prefix),
                        description=str(_field(entry, "description", default="") or ""),
                        parameters=dict(schema))
        tools.append(Tool(spec=spec, function=_caller(handle, name),
                          read_only=_read_only(entry)))
    return tools


def _read_only(entry: Any) -> bool:
    """Whether the server annotates the tool ``readOnlyHint: true`` (it changes nothing in
    its environment, so it may run alongside other read-only calls)."""
    notes = _field(entry, "annotations", default=None)
    return _field(notes, "read_only_hint", "readOnlyHint", default=False) is True \
        if notes is not None else False


def _caller(handle: McpHandle, name: str) -> ToolFunction:
    caller = getattr(handle, "call_tool", None) or handle.call  # type: ignore[attr-defined]

    async def call(args: dict[str, Any]) -> ToolOutput:
        return call_result(await caller(name, args))

    return call


def call_result(result: Any) -> ToolOutput:
    """An MCP ``CallToolResult`` as a tool output: text blocks joined, images kept, other
    blocks (resources, audio) described as JSON; structured content when there is no other."""
    texts: list[str] = []
    images: list[Image] = []
    for block in _field(result, "content", default=[]) or []:
        kind = _field(block, "type", default=None)
        if kind == "text":
            texts.append(str(_field(block, "text")))
        elif kind == "image":
            images.append(Image(data=str(_field(block, "data")),
                                mime_type=str(_field(block, "mime_type", "mimeType"))))
        else:
            texts.append(json.dumps(_plain(block), default=str))
    structured = _field(result, "structured_content", "structuredContent", default=None)
    if not texts and structured is not None:
        texts.append(json.dumps(structured, default=str))
    is_error = bool(_field(result, "is_error", "isError", default=False))
    return ToolOutput("\n".join(texts), images=images, is_error=is_error)


_MISSING = object()


def _field(value: Any, *names: str, default: Any = _MISSING) -> Any:
    for name in names:
        if isinstance(value, dict) and name in value:
            return value[name]
        if not isinstance(value, dict) and hasattr(value, name):
            return getattr(value, name)
    if default is _MISSING:
        raise KeyError(f"MCP reply has no field {names[0]!r}: {value!r}"[:300])
    return default


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump else value
