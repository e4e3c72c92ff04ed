"""The prompt as every provider adapter reads it: content blocks and conversation turns given
as the wire's Structs (:mod:`hud.protocol.messages`) or as plain dicts, read the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def fields(value: Any) -> dict[str, Any]:
    """A Struct's fields as a dict (a dict is returned as it is)."""
    if isinstance(value, dict):
        return value
    return {name: getattr(value, name) for name in value.__struct_fields__}


def block(value: Any) -> tuple[str, dict[str, Any]]:
    """A content block's type (``"text"``, ``"image"``) and its fields."""
    if isinstance(value, dict):
        return str(value.get("type")), value
    kind = type(value).__struct_config__.tag
    return str(kind), fields(value)


def opening_turns(prompt: Any, conversation: Sequence[Any] | None = None
                  ) -> list[dict[str, Any]]:
    """The turns a conversation opens with, as ``{"role", "content"}`` dicts: the template's
    conversation when it gave one, else the prompt as one user turn."""
    if conversation:
        return [fields(message) for message in conversation]
    return [{"role": "user", "content": prompt}]


def convert(value: Any, text: Callable[[str], T], image: Callable[[str, str], T]) -> list[T]:
    """Each block of prompt content (a string, or text and image blocks) in a provider's
    format: ``text(text)`` or ``image(base64 data, mime type)``; a string is one text block.
    Images are never dropped; a block of any other type is a ``ValueError``."""
    if isinstance(value, str):
        return [text(value)]
    out: list[T] = []
    for item in value:
        kind, data = block(item)
        if kind == "text":
            out.append(text(data["text"]))
        elif kind == "image":
            out.append(image(data["data"], data.get("mime_type", "image/png")))
        else:
            raise ValueError(f"unsupported prompt block type {kind!r}")
    return out
