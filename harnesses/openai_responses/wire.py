"""OpenAI Responses wire format: pure functions from our types to request items and back.

No I/O and no SDK types: tested with golden dicts in the API's own format
(https://platform.openai.com/docs/api-reference/responses, and the guides of the ``shell``,
``apply_patch`` and ``computer`` tools).
"""

from __future__ import annotations

import json
from typing import Any

from ..content import convert, opening_turns
from ..dialogue import prunable
from ..tool import ToolOutput, ToolSpec, object_schema

SHELL = {"type": "shell", "environment": {"type": "local"}}
APPLY_PATCH = {"type": "apply_patch"}
COMPUTER = {"type": "computer"}
PRUNED = "[an older screenshot, removed to save context]"
# Native call item types, and the tool that runs each.
NATIVE_CALLS = {"shell_call": "shell", "apply_patch_call": "apply_patch",
                "computer_call": "computer"}


def function_tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "name": spec.name, "description": spec.description,
            "parameters": object_schema(spec), "strict": False}


def content(value: Any, role: str = "user") -> list[dict[str, Any]]:
    """Our prompt content as Responses content parts (images as data URLs, never
    dropped); an assistant turn's text is ``output_text``."""
    kind = "output_text" if role == "assistant" else "input_text"
    return convert(value, text=lambda text: {"type": kind, "text": text}, image=input_image)


def input_image(data: str, mime_type: str = "image/png") -> dict[str, Any]:
    return {"type": "input_image", "image_url": f"data:{mime_type};base64,{data}",
            "detail": "auto"}


def prompt_items(prompt: Any, conversation: list[Any] | None = None) -> list[dict[str, Any]]:
    """The opening input: the template's conversation, else the prompt as a user message.
    Images in an assistant turn go to a user message after it."""
    items: list[dict[str, Any]] = []
    for turn in opening_turns(prompt, conversation):
        role = turn["role"] if turn["role"] != "system" else "developer"
        parts = content(turn["content"], role)
        if role == "assistant" and any(p["type"] == "input_image" for p in parts):
            items.append({"type": "message", "role": role,
                          "content": [p for p in parts if p["type"] != "input_image"]})
            items.append({"type": "message", "role": "user",
                          "content": [p for p in parts if p["type"] == "input_image"]})
            continue
        items.append({"type": "message", "role": role, "content": parts})
    return items


def calls(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls of a response's output as ``{"id", "name", "arguments", "type"}``:
    function calls by name (arguments decoded when valid JSON); native calls by their tool
    (``shell``: the action; ``apply_patch``: the operation; ``computer``: the actions and
    pending safety checks)."""
    found = []
    for item in output:
        kind = item.get("type")
        if kind == "function_call":
            try:
                arguments: Any = json.loads(item.get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = item.get("arguments")
            found.append({"id": item["call_id"], "name": item["name"], "arguments": arguments,
                          "type": kind})
        elif kind == "shell_call":
            found.append({"id": item["call_id"], "name": "shell", "type": kind,
                          "arguments": dict(item.get("action") or {})})
        elif kind == "apply_patch_call":
            found.append({"id": item["call_id"], "name": "apply_patch", "type": kind,
                          "arguments": dict(item.get("operation") or {})})
        elif kind == "computer_call":
            actions = item.get("actions") or ([item["action"]] if item.get("action") else [])
            found.append({"id": item["call_id"], "name": "computer", "type": kind,
                          "arguments": {"actions": actions, "pending_safety_checks":
                                        item.get("pending_safety_checks") or []}})
    return found


def output_text(output: list[dict[str, Any]]) -> str | None:
    texts = [part["text"] for item in output if item.get("type") == "message"
             for part in item.get("content") or [] if part.get("type") == "output_text"]
    return "\n".join(texts) if texts else None


# The fields each output item may carry back as input (the input item schemas of
# https://platform.openai.com/docs/api-reference/responses/create): the API answers 400
# "Unknown parameter" to an output-only field such as ``created_by``, as OpenAI's SDKs know.
INPUT_FIELDS = {
    "message": {"type", "id", "role", "content", "status", "phase"},
    "reasoning": {"type", "id", "summary", "content", "encrypted_content", "status"},
    "function_call": {"type", "id", "call_id", "name", "namespace", "arguments", "status"},
    "computer_call": {"type", "id", "call_id", "action", "actions", "pending_safety_checks",
                      "status"},
    "shell_call": {"type", "id", "call_id", "action", "environment", "status"},
    "apply_patch_call": {"type", "id", "call_id", "operation", "status"},
}
CONTENT_FIELDS = {"output_text": {"type", "text", "annotations", "logprobs"},
                  "refusal": {"type", "refusal"}}
SHELL_ACTION_FIELDS = {"commands", "timeout_ms", "max_output_length"}


def replayed(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The response's output items as the next request's input: nulls and output-only
    fields (``created_by``...) dropped; an item of a type we do not know loses nulls and
    ``created_by`` only."""
    return [_input_item(item) for item in output]


def _input_item(item: dict[str, Any]) -> dict[str, Any]:
    allowed = INPUT_FIELDS.get(item.get("type", ""))
    kept = {k: v for k, v in item.items() if v is not None and k != "created_by"
            and (allowed is None or k in allowed)}
    if kept.get("type") == "message" and isinstance(kept.get("content"), list):
        kept["content"] = [_only(part, CONTENT_FIELDS.get(part.get("type", "")))
                           for part in kept["content"]]
    if kept.get("type") == "shell_call" and isinstance(kept.get("action"), dict):
        kept["action"] = _only(kept["action"], SHELL_ACTION_FIELDS)
    return kept


def _only(value: dict[str, Any], fields: set[str] | None) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None and (fields is None or k in fields)}


def safety_checks(output: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each computer call's pending safety checks, as ``(call_id, check)``."""
    return [(item["call_id"], dict(check)) for item in output
            if item.get("type") == "computer_call"
            for check in item.get("pending_safety_checks") or []]


def incomplete_reason(reply: dict[str, Any]) -> str | None:
    """Why a response is ``incomplete`` (``max_output_tokens``, ``content_filter``), or
    None for any other status."""
    if reply.get("status") != "incomplete":
        return None
    return str((reply.get("incomplete_details") or {}).get("reason") or "incomplete")


def results(results: list[tuple[dict[str, Any], ToolOutput]]) -> list[dict[str, Any]]:
    """The items that answer one turn's calls, in call order. A computer call's output is
    only a screenshot, so a failed computer call's error follows all of them as a user
    message naming the call."""
    items = [result_item(call, output) for call, output in results]
    notes = [{"type": "input_text", "text": f"computer call {call['id']}: {output.text}"}
             for call, output in results
             if call.get("type") == "computer_call" and output.is_error]
    if notes:
        items.append({"type": "message", "role": "user", "content": notes})
    return items


def result_item(call: dict[str, Any], output: ToolOutput) -> dict[str, Any]:
    """The output item that answers ``call``, in its tool's format."""
    kind, call_id = call.get("type"), call["id"]
    item: dict[str, Any]
    if kind == "shell_call":
        item = {"type": "shell_call_output", "call_id": call_id, "output": shell_output(output)}
        limit = (call.get("arguments") or {}).get("max_output_length")
        if limit is not None:  # the tool's guide: pass the model's limit back with the output
            item["max_output_length"] = limit
        return item
    if kind == "apply_patch_call":
        return {"type": "apply_patch_call_output", "call_id": call_id,
                "status": "failed" if output.is_error else "completed", "output": output.text}
    if kind == "computer_call":
        # Every computer call is answered by a screenshot, even a failed one (the API
        # answers 400 otherwise); without one (the call timed out whole) a blank stands in.
        image_url = BLANK
        if output.images:
            image_url = f"data:{output.images[-1].mime_type};base64,{output.images[-1].data}"
        item = {"type": "computer_call_output", "call_id": call_id,
                "output": {"type": "computer_screenshot", "image_url": image_url}}
        checks = call["arguments"].get("pending_safety_checks")
        if checks:
            item["acknowledged_safety_checks"] = checks
        return item
    if output.images:
        parts: Any = [{"type": "input_text", "text": output.text}] if output.text else []
        parts.extend(input_image(i.data, i.mime_type) for i in output.images)
    else:
        parts = output.text
    return {"type": "function_call_output", "call_id": call_id, "output": parts}


def shell_output(output: ToolOutput) -> list[dict[str, Any]]:
    """The shell tool's JSON result, or the tool error as one failed command."""
    if not output.is_error:
        return list(json.loads(output.text))
    outcome = {"type": "timeout"} if "timed out" in output.text else {"type": "exit",
                                                                      "exit_code": 1}
    return [{"stdout": "", "stderr": output.text, "outcome": outcome}]


def prune_images(items: list[dict[str, Any]], keep: int) -> None:
    """Replace the screenshots of old results with a note (in place), in chunks of ``keep``
    (:func:`~hud.harnesses.dialogue.prunable`): the input's prefix changes at most once per
    ``keep`` screenshots, so the prompt cache (a prefix match) survives in between. Prompt
    images stay."""
    results = [i for i in items if i.get("type") in ("computer_call_output",
                                                     "function_call_output")
               and _has_image(i)]
    for item in results[:prunable(len(results), keep)]:
        if item["type"] == "computer_call_output":
            # a computer call must be answered by a screenshot: keep a 1x1 one
            item["output"] = {"type": "computer_screenshot", "image_url": BLANK}
        else:
            item["output"] = [p if p.get("type") != "input_image" else
                              {"type": "input_text", "text": PRUNED} for p in item["output"]]


BLANK = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
         "z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def _has_image(item: dict[str, Any]) -> bool:
    out = item.get("output")
    if item["type"] == "computer_call_output":
        return isinstance(out, dict) and out.get("image_url") != BLANK
    return isinstance(out, list) and any(p.get("type") == "input_image" for p in out)
