"""A local OpenAI Responses API (``POST /v1/responses``) playing a script, in the API's real
wire format, for the real ``openai`` SDK (``base_url=server.base_url + "/v1"``)."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .chat_completions import error_body
from .provider import ProviderServer, Step, failure, serve

MODEL = "gpt-5.1"
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


def function_call(name: str, arguments: dict[str, Any], call_id: str | None = None
                  ) -> dict[str, Any]:
    return {"type": "function_call", "id": _id("fc"), "call_id": call_id or _id("call"),
            "name": name, "arguments": json.dumps(arguments), "status": "completed"}


def shell_call(*commands: str, call_id: str | None = None, timeout_ms: int | None = None
               ) -> dict[str, Any]:
    return {"type": "shell_call", "id": _id("sh"), "call_id": call_id or _id("call"),
            "action": {"commands": list(commands), "timeout_ms": timeout_ms,
                       "max_output_length": None}, "status": "completed"}


def apply_patch_call(kind: str, path: str, diff: str | None = None,
                     call_id: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"type": kind, "path": path}
    if diff is not None:
        operation["diff"] = diff
    return {"type": "apply_patch_call", "id": _id("apc"), "call_id": call_id or _id("call"),
            "operation": operation, "status": "completed"}


def computer_call(*actions: dict[str, Any], call_id: str | None = None,
                  checks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "computer_call", "id": _id("cu"), "call_id": call_id or _id("call"),
            "actions": list(actions), "pending_safety_checks": list(checks),
            "status": "completed"}


def response(text: str | None = None, *items: dict[str, Any],
             usage: tuple[int, int] = (10, 2), cached: int = 0) -> Step:
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append({"type": "message", "id": _id("msg"), "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    output.extend(items)
    return Step(body={
        "id": _id("resp"), "object": "response", "created_at": int(time.time()),
        "model": MODEL, "status": "completed", "output": output, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                  "total_tokens": sum(usage), "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens_details": {"reasoning_tokens": 0}}})


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0] == "/v1/responses"


@contextlib.contextmanager
def serve_responses(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                    ) -> Iterator[ProviderServer]:
    with serve(ProviderServer(script, _route, error_body)) as server:
        yield server


__all__ = ["apply_patch_call", "computer_call", "failure", "function_call", "response",
           "serve_responses", "shell_call"]
