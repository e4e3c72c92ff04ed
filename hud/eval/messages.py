"""Training rows rebuilt from a stored trace: chat messages, tools, reward, sampled tokens.

Every row and every message has the same keys with the same types, whatever the run did, so
a JSONL file of rows loads into one Arrow table (Hugging Face ``datasets``, pyarrow, polars)
with no schema to declare. Where a value varies in shape from run to run (a task's args, a
tool's JSON Schema, a harness's settings) the row carries it as JSON text.

The step kinds and ``data`` keys read (harnesses record their work this way; other kinds are
kept in the trace but left out of the messages):

``prompt``       ``{"prompt": str | [block], "messages"?: [{"role", "content"}]}`` — the task's
                 prompt as a user message, or the template's whole conversation when
                 ``messages`` is present. Blocks are ``{"type": "text", "text"}`` and
                 ``{"type": "image", "data": <base64>, "mime_type"}``.
``message``      ``{"role": "system" | "user" | "assistant", "content"}`` — any other turn (a
                 harness's system prompt, a user follow-up); system turns go first.
``model``        ``{"content": str | None, "tool_calls"?: [{"id", "name", "arguments"}],
                 "token_ids"?, "tokens"?, "token_logprobs"?}`` — one model turn;
                 ``arguments`` is a dict or its JSON text; the token lists are the sampled
                 completion, where the server returned them.
``tool_result``  ``{"tool_call_id", "content": str | [block], "name"?}`` — the result of one
                 tool call, as the model saw it (tool errors included).

Images must be inline (base64) here: the store inlines its image files before calling
:func:`trace_messages`; they are exported as data URLs.
"""

from __future__ import annotations

from typing import Any

import msgspec

_NO_TOKENS: dict[str, Any] = {"token_ids": None, "tokens": None, "logprobs": None}
_MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def training_row(trace: dict[str, Any], run: dict[str, Any], advantage: float,
                 ) -> dict[str, Any]:
    """One export row for a completed run: ``trace`` is its stored document (images inline),
    ``run`` its index row (``trace_id``, ``job_id``, ``env``, ``slug``, ``template``, ``args``
    as JSON text, ``group_id``, ``agent``, ``model``, ``reward``).

    Keys: ``trace_id``, ``job_id``, ``group_id``, ``task`` (``env``, ``slug``, ``id``,
    ``args`` as JSON text), ``agent``, ``model``, ``sampling`` (``temperature``, ``top_p``,
    ``max_tokens``, ``seed``; null where not set), ``settings`` (every agent setting, JSON
    text), ``tools`` (OpenAI function tools, ``parameters`` as JSON text), ``messages``
    (:func:`trace_messages`), ``reward``, ``subscores`` (``name``, ``score``, ``weight``)
    and ``advantage``."""
    agent = trace.get("agent") or {}
    settings = agent.get("settings") or {}
    return {
        "trace_id": run["trace_id"], "job_id": run["job_id"], "group_id": run["group_id"],
        "task": {"env": run["env"], "slug": run["slug"], "id": run["template"],
                 "args": run["args"]},
        "agent": run["agent"], "model": run["model"] or agent.get("model"),
        "sampling": _sampling(settings), "settings": _dumps(settings),
        "tools": [_tool(tool) for tool in trace.get("tools", [])],
        "messages": trace_messages(trace),
        "reward": float(run["reward"]), "subscores": _subscores(trace.get("subscores", [])),
        "advantage": float(advantage),
    }


def trace_messages(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat messages rebuilt from a stored trace's steps (kinds: module docstring).

    Each message has ``role``; ``content``, a list of parts, each ``{"type": "text" |
    "image", "text", "image"}`` (the other field null; an image is a data URL);
    ``tool_calls`` (OpenAI's, ``arguments`` as JSON text; empty but on assistant turns);
    ``tool_call_id`` and ``name`` (tool results; else null); and ``token_ids``, ``tokens``
    and ``logprobs``: the sampled completion of an assistant turn, null where unknown."""
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
            return [_message(turn.get("role", "user"), turn.get("content")) for turn in turns]
        return [_message("user", data.get("prompt"))]
    if kind == "message":
        return [_message(data.get("role", "user"), data.get("content"))]
    if kind == "model":
        return [_assistant(data)]
    if kind == "tool_result":
        return [_message("tool", data.get("content"), tool_call_id=data.get("tool_call_id"),
                         name=data.get("name"))]
    return []


def _message(role: str, content: Any, **fields: Any) -> dict[str, Any]:
    return {"role": role, "content": _parts(content), "tool_calls": [],
            "tool_call_id": fields.get("tool_call_id"), "name": fields.get("name"),
            **_NO_TOKENS}


def _assistant(data: dict[str, Any]) -> dict[str, Any]:
    message = _message("assistant", data.get("content"))
    message["tool_calls"] = [{
        "id": call.get("id"), "type": "function",
        "function": {"name": call.get("name"), "arguments": _arguments(call.get("arguments"))},
    } for call in data.get("tool_calls") or []]
    if data.get("token_logprobs") is not None or data.get("token_ids") is not None:
        message.update(token_ids=data.get("token_ids"), tokens=data.get("tokens"),
                       logprobs=data.get("token_logprobs"))
    return message


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return _dumps({} if arguments is None else arguments)


def _parts(content: Any) -> list[dict[str, Any]]:
    """Content as a list of typed parts: none for no content, one text part for a string."""
    if content is None or content == "":
        return []
    if isinstance(content, list):
        return [_part(block) for block in content]
    return [_text(content if isinstance(content, str) else str(content))]


def _part(block: Any) -> dict[str, Any]:
    if isinstance(block, dict) and block.get("type") == "image":
        url = f"data:{block.get('mime_type', 'image/png')};base64,{block.get('data', '')}"
        return {"type": "image", "text": None, "image": url}
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return _text(block["text"])
    # A block of another kind (a resource, a file): its JSON, so nothing is dropped silently.
    return _text(block if isinstance(block, str) else _dumps(block))


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "image": None}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": str(tool.get("name", "")), "description": str(tool.get("description") or ""),
        "parameters": _dumps(tool.get("parameters") or {"type": "object", "properties": {}}),
    }}


def _sampling(settings: dict[str, Any]) -> dict[str, Any]:
    """The sampling settings every trainer reads, typed the same in every row."""
    max_tokens = next((settings[k] for k in _MAX_TOKENS_KEYS if settings.get(k) is not None),
                      None)
    return {"temperature": _float(settings.get("temperature")),
            "top_p": _float(settings.get("top_p")),
            "max_tokens": _int(max_tokens), "seed": _int(settings.get("seed"))}


def _subscores(subscores: list[Any]) -> list[dict[str, Any]]:
    return [{"name": str(s.get("name", "")), "score": float(s.get("score", 0.0)),
             "weight": float(s.get("weight", 1.0))}
            for s in subscores if isinstance(s, dict)]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
