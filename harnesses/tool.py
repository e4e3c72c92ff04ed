"""The neutral tool vocabulary every harness shares: what the model is told about a tool
(:class:`ToolSpec`), what a tool gives back (:class:`ToolOutput`), and a tool (its spec and the
async function that runs it).

A provider harness turns a :class:`ToolSpec` into its native format with a pure function in
its ``wire`` module; nothing here knows any provider. A tool reports a failure the model may
correct by raising :class:`hud.errors.ToolError`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
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


ToolFunction = Callable[[dict[str, Any]], Awaitable["ToolOutput | str"]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool: its spec, and the function that runs a call on the decoded arguments.

    ``read_only`` says the tool is independent by construction: it changes nothing another
    call could see (an MCP tool annotated ``readOnlyHint``). Only such calls may overlap
    (see :func:`~hud.harnesses.dialogue.run_tools`); leave it False when in doubt.
    """

    spec: ToolSpec
    function: ToolFunction
    read_only: bool = False


def sanitize_name(name: str, prefix: str | None = None) -> str:
    """A tool name providers accept (``[A-Za-z0-9_-]{1,64}``), qualified by ``prefix``
    (``prefix__name``) when given."""
    full = f"{prefix}__{name}" if prefix else name
    cleaned = _NAME_FORBIDDEN.sub("_", full)[:NAME_LIMIT]
    return cleaned or "tool"


def object_schema(spec: ToolSpec) -> dict[str, Any]:
    """The spec's parameters as an object schema, which providers require: an empty schema
    becomes ``{"type": "object", "properties": {}}`` and a missing ``type`` is ``object``.
    A copy: the spec is not changed."""
    schema = dict(spec.parameters) or {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    return schema
