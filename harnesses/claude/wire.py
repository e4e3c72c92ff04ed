"""Anthropic Messages wire format: pure functions from our types to request dicts and back.

No I/O and no SDK types: tested with golden dicts in Anthropic's own format
(https://docs.anthropic.com/en/api/messages, and the tool pages for ``bash``,
``text_editor`` and ``computer``).
"""

from __future__ import annotations

from typing import Any

from ..content import convert, opening_turns
from ..dialogue import prunable
from ..tool import ToolOutput, ToolSpec, object_schema
from .models import ModelTools

EDITOR_NAME = "str_replace_based_edit_tool"
COMPUTER_NAME = "computer"
TOOLSET = "computer_toolset_20260801"
EPHEMERAL = {"type": "ephemeral"}
PRUNED = "[an older screenshot, removed to save context]"


def bash_tool(tools: ModelTools) -> dict[str, Any]:
    return {"type": tools.bash, "name": tools.name("bash")}


def editor_tool(tools: ModelTools) -> dict[str, Any]:
    """The text editor tool of the model's table row."""
    return {"type": tools.editor, "name": tools.name("editor")}


def computer_tool(tools: ModelTools, width: int, height: int
                  ) -> tuple[dict[str, Any], str | None]:
    """The computer tool of the model's table row, for a ``width`` x ``height`` screenshot,
    and the beta flag it needs. The toolset (GA) takes no name and no display size: the
    model's coordinates are in the screenshots' pixels, which is what we send."""
    if tools.computer == TOOLSET:
        return {"type": TOOLSET}, None
    tool = {"type": tools.computer, "name": COMPUTER_NAME, "display_width_px": width,
            "display_height_px": height}
    if tools.computer == "computer_20251124":
        tool["enable_zoom"] = True
    return tool, tools.beta("computer")


def function_tool(spec: ToolSpec) -> dict[str, Any]:
    """A client tool with a JSON Schema (``input_schema`` must be an object schema)."""
    return {"name": spec.name, "description": spec.description,
            "input_schema": object_schema(spec)}


def content(value: Any) -> list[dict[str, Any]]:
    """Our prompt content (a string, or text and image blocks) as Anthropic content blocks;
    images become base64 image blocks, never dropped."""
    return convert(value, text=lambda text: {"type": "text", "text": text}, image=image_block)


def image_block(data: str, mime_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": mime_type, "data": data}}


def prompt_messages(prompt: Any, conversation: list[Any] | None = None,
                    system_prompt: str | None = None) -> tuple[list[dict[str, Any]],
                                                               list[dict[str, Any]]]:
    """The system blocks and opening messages: the template's conversation when it gave
    one (its system turns joined into the system blocks), else the prompt as a user turn."""
    system: list[dict[str, Any]] = [{"type": "text", "text": system_prompt}] if (
        system_prompt) else []
    messages: list[dict[str, Any]] = []
    for turn in opening_turns(prompt, conversation):
        blocks = content(turn["content"])
        if turn["role"] == "system":
            system.extend(b for b in blocks if b["type"] == "text")
            continue
        if messages and messages[-1]["role"] == turn["role"]:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn["role"], "content": blocks})
    return system, messages


def request(model: str, max_tokens: int, system: list[dict[str, Any]],
            tools: list[dict[str, Any]], messages: list[dict[str, Any]],
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Messages request with prompt caching on the stable prefix: a breakpoint on the
    last tool (tools, then system, are cached together) and on the last block of the last
    message (the conversation so far, reused by the next turn). The messages themselves are
    not changed."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, **(extra or {})}
    if system:
        body["system"] = [*system[:-1], {**system[-1], "cache_control": EPHEMERAL}]
    if tools:
        body["tools"] = [*tools[:-1], {**tools[-1], "cache_control": EPHEMERAL}]
    body["messages"] = [*messages[:-1], _cached(messages[-1])] if messages else []
    return body


def _cached(message: dict[str, Any]) -> dict[str, Any]:
    blocks = list(message["content"])
    blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
    return {**message, "content": blocks}


def tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_use`` blocks of a reply as ``{"id", "name", "arguments"}``. A member of the
    computer toolset (``name`` the action, ``toolset_name`` "computer") becomes a call of
    the computer tool with that ``action``."""
    calls = []
    for block in message.get("content") or []:
        if block.get("type") != "tool_use":
            continue
        args = dict(block.get("input") or {})
        name = block["name"]
        if block.get("toolset_name") == COMPUTER_NAME:
            name, args = COMPUTER_NAME, {**args, "action": block["name"]}
        calls.append({"id": block["id"], "name": name, "arguments": args})
    return calls


def truncated(message: dict[str, Any]) -> bool:
    """Whether the reply was cut off inside a ``tool_use`` block (its input is partial)."""
    content = message.get("content") or []
    return message.get("stop_reason") in ("max_tokens", "model_context_window_exceeded") and \
        bool(content) and content[-1].get("type") == "tool_use"


def reply_text(message: dict[str, Any]) -> str | None:
    texts = [b["text"] for b in message.get("content") or [] if b.get("type") == "text"]
    return "\n".join(texts) if texts else None


def assistant_message(message: dict[str, Any]) -> dict[str, Any]:
    """The reply as the next request's assistant turn (thinking blocks kept, as the API
    requires with tool use)."""
    keep = ("text", "tool_use", "thinking", "redacted_thinking")
    blocks = [{k: v for k, v in b.items() if v is not None and k != "citations"}
              for b in message.get("content") or [] if b.get("type") in keep]
    return {"role": "assistant", "content": blocks}


def tool_results(results: list[tuple[dict[str, Any], ToolOutput]]) -> dict[str, Any]:
    """One user turn with a ``tool_result`` block per call, in call order; images inside."""
    blocks = []
    for call, output in results:
        inner: list[dict[str, Any]] = [{"type": "text", "text": output.text}] if (
            output.text) else []
        inner.extend(image_block(i.data, i.mime_type) for i in output.images)
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call["id"],
                                 "content": inner or [{"type": "text", "text": "(no output)"}]}
        if output.is_error:
            block["is_error"] = True
        blocks.append(block)
    return {"role": "user", "content": blocks}


def prune_images(messages: list[dict[str, Any]], keep: int) -> None:
    """Replace the images of old tool results with a short note (in place), in chunks of
    ``keep`` (:func:`~hud.harnesses.dialogue.prunable`) so that the prompt cache breaks at
    most once per ``keep`` screenshots. Prompt images are never touched."""
    results = [b for m in messages if m["role"] == "user" for b in m["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    with_images = [b for b in results if any(i.get("type") == "image" for i in b["content"])]
    for block in with_images[:prunable(len(with_images), keep)]:
        block["content"] = [i if i.get("type") != "image" else {"type": "text", "text": PRUNED}
                            for i in block["content"]]
