"""OpenAI chat messages rebuilt from a stored trace's steps, for training exports.

The step kinds and ``data`` keys read (harnesses record their work this way; other kinds are
kept in the trace but left out of the messages):

``prompt``       ``{"prompt": str | [block], "messages"?: [{"role", "content"}]}`` — the task's
                 prompt as a user message, or the template's whole conversation when
                 ``messages`` is present. Blocks are ``{"type": "text", "text"}`` and
                 ``{"type": "image", "data": <base64>, "mime_type"}``.
``message``      ``{"role": "system" | "user" | "assistant", "content"}`` — any other turn (a
                 harness's system prompt, a user follow-up); system turns go first.
``model``        ``{"content": str | None, "tool_calls"?: [{"id", "name", "arguments"}]}`` —
                 one model turn; ``arguments`` is a dict or its JSON text.
``tool_result``  ``{"tool_call_id", "content": str | [block], "name"?}`` — the result of one
                 tool call, as the model saw it (tool errors included).

Images must be inline (base64) here: the store inlines its image files before calling
:func:`trace_messages`.
"""

from __future__ import annotations

from typing import Any

import msgspec


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def trace_messages(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages rebuilt from a stored trace's steps (kinds: module docstring)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for step in trace.get("steps", []):
        for message in _step_messages(step.get("kind"), step.get("data", {})):
            (system if message["role"] == "system" else messages).append(message)
    return system + messages


def _step_messages(kind: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "prompt":
        turns = data.get("messages")
        if isinstance(turns, list) and turns:
            return [_chat(turn.get("role", "user"), turn.get("content")) for turn in turns]
        return [_chat("user", data.get("prompt"))]
    if kind == "message":
        return [_chat(data.get("role", "user"), data.get("content"))]
    if kind == "model":
        return [_assistant(data)]
    if kind == "tool_result":
        message = {"role": "tool", "tool_call_id": data.get("tool_call_id"),
                   "content": _content(data.get("content"))}
        if data.get("name"):
            message["name"] = data["name"]
        return [message]
    return []


def _chat(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": _content(content)}


def _assistant(data: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": _content(data.get("content"))}
    calls = data.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [{
            "id": call.get("id"), "type": "function",
            "function": {"name": call.get("name"), "arguments": _arguments(call.get("arguments"))},
        } for call in calls]
    return message


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return _dumps({} if arguments is None else arguments)


def _content(content: Any) -> Any:
    """Text stays text; content blocks become OpenAI content parts (images as data URLs)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return [_part(block) for block in content]
    return str(content)


def _part(block: Any) -> Any:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if isinstance(block, dict) and block.get("type") == "image":
        url = f"data:{block.get('mime_type', 'image/png')};base64,{block.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    return block
