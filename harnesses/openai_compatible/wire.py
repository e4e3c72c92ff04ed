"""Chat Completions wire format: pure functions from our types to request dicts and back.

No I/O and no SDK types here: every function takes and returns plain JSON-shaped data, so
the mapping is tested with golden dicts in the provider's own format
(https://platform.openai.com/docs/api-reference/chat/create).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from hud.errors import ToolError

from ..content import convert, opening_turns
from ..tool import ToolOutput, ToolSpec, object_schema
from ..toolbox import parse_arguments


def tool_param(spec: ToolSpec) -> dict[str, Any]:
    """A function tool. Chat Completions wants an object schema, so an empty one becomes
    ``{"type": "object", "properties": {}}``."""
    parameters = object_schema(spec)
    if parameters["type"] == "object":
        parameters.setdefault("properties", {})
    return {"type": "function",
            "function": {"name": spec.name, "description": spec.description,
                         "parameters": parameters}}


def image_part(data: str, mime_type: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:{mime_type};base64,{data}"}}


def content(value: Any) -> str | list[dict[str, Any]]:
    """Our prompt content (a string, or text and image blocks, as Structs or dicts) as
    Chat Completions content: text and ``image_url`` parts (data URLs), or a string when
    there is only text (text-only servers often accept nothing else)."""
    if isinstance(value, str):
        return value
    parts = convert(value, text=lambda text: {"type": "text", "text": text}, image=image_part)
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def prompt_messages(prompt: Any, conversation: Sequence[Any] | None = None,
                    system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The opening messages: the harness's system prompt, then the template's conversation
    when it gave one, else the prompt as one user message.

    Only user turns may carry images in Chat Completions; an image in a system or assistant
    turn is moved into a user message right after it, never dropped.
    """
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for turn in opening_turns(prompt, conversation):
        body = content(turn["content"])
        if turn["role"] == "user" or isinstance(body, str):
            messages.append({"role": turn["role"], "content": body})
            continue
        text = "\n".join(p["text"] for p in body if p["type"] == "text")
        messages.append({"role": turn["role"], "content": text})
        messages.append({"role": "user", "content": [p for p in body if p["type"] != "text"]})
    return messages


def assistant_message(message: dict[str, Any]) -> dict[str, Any]:
    """The model's reply as the next request's assistant message, without extras. A null
    content becomes ``""``: the API takes either, and some servers (llama.cpp) only a string."""
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    calls = tool_calls(message)
    if calls:
        out["tool_calls"] = [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] or "{}"}}
            for c in calls
        ]
    return out


def tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The function calls in a reply, as ``{"id", "name", "arguments"}`` (JSON text)."""
    return [{"id": c["id"], "name": c["function"]["name"],
             "arguments": c["function"].get("arguments") or ""}
            for c in message.get("tool_calls") or [] if c.get("type", "function") == "function"]


def tool_result_messages(results: Iterable[tuple[str, ToolOutput]]) -> list[dict[str, Any]]:
    """One ``tool`` message per call, in order. Tool messages carry text only, so images
    go in one user message after them, each introduced by the call it came from."""
    messages: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for call_id, output in results:
        messages.append({"role": "tool", "tool_call_id": call_id, "content": output.text})
        if output.images:
            images.append({"type": "text", "text": f"Images returned by tool call {call_id}:"})
            images.extend(image_part(i.data, i.mime_type) for i in output.images)
    if images:
        messages.append({"role": "user", "content": images})
    return messages


def model_step(message: dict[str, Any]) -> dict[str, Any]:
    """A reply as a trace ``model`` step: content, and tool calls with their arguments
    decoded where they are valid JSON (kept as text where not)."""
    calls = []
    for call in tool_calls(message):
        try:
            arguments: Any = parse_arguments(call["arguments"])
        except ToolError:
            arguments = call["arguments"]
        calls.append({**call, "arguments": arguments})
    step: dict[str, Any] = {"content": message.get("content"), "tool_calls": calls}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        step["reasoning"] = reasoning
    if message.get("refusal"):
        step["refusal"] = message["refusal"]
    return step


_VLLM_TOKEN_ID = re.compile(r"token_id:(\d+)")


def sampled_tokens(choice: dict[str, Any]) -> dict[str, Any]:
    """The sampled completion of a choice, where the server returned it, as trace ``model``
    step fields: ``token_ids`` (null when the server gave none), ``tokens`` (their text, null
    when the server gave ids only) and ``token_logprobs``; ``{}`` when it returned neither.

    Ids come from vLLM's ``choice.token_ids`` (``return_token_ids``), else from llama.cpp's
    ``id`` on each logprobs entry, else from vLLM's ``"token_id:N"`` token strings
    (``return_tokens_as_token_ids``). llama-cpp-python returns token text only."""
    entries = (choice.get("logprobs") or {}).get("content") or []
    ids = choice.get("token_ids")
    if not entries and ids is None:
        return {}
    tokens: list[str] | None = [str(entry.get("token", "")) for entry in entries] or None
    matches = [_VLLM_TOKEN_ID.fullmatch(token) for token in tokens or []]
    if tokens and all(matches):
        ids = ids if ids is not None else [int(m.group(1)) for m in matches if m]
        tokens = None
    elif ids is None and entries and all(isinstance(e.get("id"), int) for e in entries):
        ids = [entry["id"] for entry in entries]
    logprobs = [entry.get("logprob") for entry in entries] or None
    return {"token_ids": ids, "tokens": tokens, "token_logprobs": logprobs}


def error_text(body: Any) -> str:
    """The message of an error body (``{"error": {"message": ...}}``), else the body."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return body if isinstance(body, str) else json.dumps(body)
