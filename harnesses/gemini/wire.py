"""Gemini ``generateContent`` mapping: pure functions from our types to request parts and
back, as the ``google-genai`` SDK's dict form (snake_case; the SDK sends it as the API's
camelCase JSON, which the tests check against golden files).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..content import convert, opening_turns
from ..dialogue import prunable
from ..tool import ToolOutput, ToolSpec

GRID = 1000  # computer-use coordinates are on a 0-999 grid over the screenshot
PRUNED = "[an older screenshot, removed to save context]"


def function_declarations(specs: list[ToolSpec]) -> dict[str, Any]:
    """One tool holding a function declaration per spec (full JSON Schema parameters)."""
    return {"function_declarations": [
        {"name": s.name, "description": s.description,
         "parameters_json_schema": dict(s.parameters) or {"type": "object", "properties": {}}}
        for s in specs]}


def computer_use(environment: str, excluded: list[str] | None = None) -> dict[str, Any]:
    tool: dict[str, Any] = {"environment": environment}
    if excluded:
        tool["excluded_predefined_functions"] = list(excluded)
    return {"computer_use": tool}


def to_pixels(value: float, extent: int) -> float:
    """A 0-999 grid coordinate as a pixel of a screenshot ``extent`` pixels long."""
    return min(max(float(value), 0.0), GRID - 1) * extent / GRID


def parts(value: Any) -> list[dict[str, Any]]:
    """Our prompt content as Gemini parts; images as inline data, never dropped."""
    return convert(value, text=lambda text: {"text": text}, image=inline)


def inline(data: str, mime_type: str) -> dict[str, Any]:
    return {"inline_data": {"mime_type": mime_type, "data": base64.b64decode(data)}}


def prompt_contents(prompt: Any, conversation: list[Any] | None = None
                    ) -> tuple[str | None, list[dict[str, Any]]]:
    """The system instruction (system turns joined) and the opening contents."""
    turns = opening_turns(prompt, conversation)
    system = [p["text"] for t in turns if t["role"] == "system" for p in parts(t["content"])
              if "text" in p]
    contents = [{"role": "model" if t["role"] == "assistant" else "user",
                 "parts": parts(t["content"])} for t in turns if t["role"] != "system"]
    return ("\n".join(system) or None), contents


def calls(content: dict[str, Any], first: int = 1) -> list[dict[str, Any]]:
    """The function calls of a model turn as ``{"id", "name", "arguments", "wire_id"}``
    (Gemini may leave ids out: ours are numbered from ``first``)."""
    found: list[dict[str, Any]] = []
    for part in content.get("parts") or []:
        call = part.get("function_call")
        if call:
            found.append({"id": call.get("id") or f"call_{first + len(found)}",
                          "name": call["name"], "arguments": dict(call.get("args") or {}),
                          "wire_id": call.get("id")})
    return found


def text(content: dict[str, Any]) -> str | None:
    texts = [p["text"] for p in content.get("parts") or [] if p.get("text")
             and not p.get("thought")]
    return "".join(texts) if texts else None


def function_responses(results: list[tuple[dict[str, Any], ToolOutput]],
                       structured: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One user turn answering every call of a model turn, in order (the API refuses a turn
    that leaves a call unanswered); images (screenshots) as inline parts of their function
    response. Tools named in ``structured`` (the computer-use functions) return their
    response object as JSON text, failed or not; any other failure is ``{"error": ...}``."""
    out = []
    for call, output in results:
        body: dict[str, Any] = {"name": call["name"],
                                "response": _response(call["name"], output, structured)}
        if call.get("wire_id"):
            body["id"] = call["wire_id"]
        if output.images:
            body["parts"] = [inline(i.data, i.mime_type) for i in output.images]
        out.append({"function_response": body})
    return {"role": "user", "parts": out}


def _response(name: str, output: ToolOutput, structured: frozenset[str]) -> dict[str, Any]:
    if name in structured:
        try:
            value = json.loads(output.text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"error": output.text} if output.is_error else {"output": output.text}


def prune_images(contents: list[Any], keep: int) -> None:
    """Drop the screenshots of old function responses (in place), in chunks of ``keep``
    (:func:`~hud.harnesses.dialogue.prunable`), so that the contents' prefix, which implicit
    caching matches, changes at most once per ``keep`` screenshots; the prompt's images stay."""
    carrying = [p["function_response"] for c in contents if isinstance(c, dict)
                for p in c.get("parts") or [] if "function_response" in p
                and p["function_response"].get("parts")]
    for response in carrying[:prunable(len(carrying), keep)]:
        del response["parts"]
        response["response"] = {**response["response"], "note": PRUNED}
