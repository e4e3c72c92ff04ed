"""A local OpenAI Responses API (``POST /v1/responses``) playing a script, in the API's real
wire format, for the real ``openai`` SDK (``base_url=server.base_url + "/v1"``).

It is strict: before the script answers, each request is checked against the documented
contract (:func:`contract_violation`) and a violation is answered as the real API answers
it, HTTP 400 with OpenAI's error body (``{"error": {"message", "type", "param", "code"}}``);
the refusals are kept in ``server.refused``. Replies are shaped for the request: the model
echoes the request's, and a computer call carries ``action`` (one) for the preview tool and
``actions`` for the GA one.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

from .provider import Fault, ProviderServer, Step, failure, serve
from .sdk_types import violation

MODEL = "gpt-5.1"
_ids = itertools.count(1)
Problem = tuple[str, str | None, str | None]  # message, param, code

# https://developers.openai.com/api/docs/guides/tools-computer-use: the GA ``computer`` tool is for
# gpt-5.4 and gpt-5.5; every other model takes ``computer_use_preview``, with truncation auto.
GA_COMPUTER_MODELS = ("gpt-5.4", "gpt-5.5")
# https://developers.openai.com/api/docs/guides/tools-shell and .../tools-apply-patch: GPT-5.1 on.
NATIVE_SHELL_MODELS = ("gpt-5.1", "gpt-5.2", "gpt-5.3", "gpt-5.4", "gpt-5.5")
# https://developers.openai.com/api/docs/guides/function-calling and the guides of each tool: every
# call is answered by an output item of its own type, with its call_id.
CALL_OUTPUTS = {"function_call": "function_call_output",
                "computer_call": "computer_call_output", "shell_call": "shell_call_output",
                "apply_patch_call": "apply_patch_call_output",
                "custom_tool_call": "custom_tool_call_output"}


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


def function_call(name: str, arguments: dict[str, Any], call_id: str | None = None
                  ) -> dict[str, Any]:
    return {"type": "function_call", "id": _id("fc"), "call_id": call_id or _id("call"),
            "name": name, "arguments": json.dumps(arguments), "status": "completed"}


def shell_call(*commands: str, call_id: str | None = None, timeout_ms: int | None = None,
               max_output_length: int | None = None) -> dict[str, Any]:
    """A shell call as the API sends it: with ``created_by``, which is output-only."""
    return {"type": "shell_call", "id": _id("sh"), "call_id": call_id or _id("call"),
            "action": {"commands": list(commands), "timeout_ms": timeout_ms,
                       "max_output_length": max_output_length}, "status": "completed",
            "environment": None, "created_by": _id("resp")}


def apply_patch_call(kind: str, path: str, diff: str | None = None,
                     call_id: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"type": kind, "path": path}
    if diff is not None:
        operation["diff"] = diff
    return {"type": "apply_patch_call", "id": _id("apc"), "call_id": call_id or _id("call"),
            "operation": operation, "status": "completed", "created_by": _id("resp")}


def computer_call(*actions: dict[str, Any], call_id: str | None = None,
                  checks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "computer_call", "id": _id("cu"), "call_id": call_id or _id("call"),
            "actions": list(actions), "pending_safety_checks": list(checks),
            "status": "completed"}


def response(text: str | None = None, *items: dict[str, Any],
             usage: tuple[int, int] = (10, 2), cached: int = 0,
             incomplete: str | None = None) -> Step:
    """A response; with ``incomplete`` (``max_output_tokens``...) its status is
    ``incomplete`` and so is its last item's, cut short."""
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append({"type": "message", "id": _id("msg"), "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    output.extend(copy.deepcopy(list(items)))
    if incomplete and output:
        output[-1]["status"] = "incomplete"
    return Step(body={
        "id": _id("resp"), "object": "response", "created_at": int(time.time()),
        "model": MODEL, "status": "incomplete" if incomplete else "completed",
        "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "error": None, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                  "total_tokens": sum(usage), "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens_details": {"reasoning_tokens": 0}}})


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body (https://developers.openai.com/api/docs/guides/error-codes)."""
    kind = {400: "invalid_request_error", 401: "invalid_request_error",
            404: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# -- the contract --------------------------------------------------------------------------


def contract_violation(body: dict[str, Any]) -> Problem | None:
    """The first rule of the documented contract that ``body`` breaks, or None."""
    for rule in (_sdk_types, _tools_for_model, _calls_answered, _outputs_answer_calls,
                 _screenshots, _safety_acknowledged, _output_length_echoed):
        problem = rule(body)
        if problem:
            return problem
    return None


def _sdk_types(body: dict[str, Any]) -> Problem | None:
    # https://platform.openai.com/docs/api-reference/responses/create (the SDK's types are
    # generated from it): unknown and output-only fields are refused, required ones enforced
    found = violation(body, ResponseCreateParamsNonStreaming)
    return (found[2], found[1], found[0]) if found else None


def _tools_for_model(body: dict[str, Any]) -> Problem | None:
    # https://developers.openai.com/api/docs/guides/tools-computer-use, .../tools-shell,
    # .../tools-apply-patch: which model takes which tool
    model = str(body.get("model", ""))
    for index, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type")
        if kind == "computer" and not model.startswith(GA_COMPUTER_MODELS):
            return (f"Tool 'computer' is not supported with model '{model}'. Use "
                    "'computer_use_preview'.", f"tools[{index}].type", "unsupported_value")
        if kind == "computer_use_preview" and body.get("truncation") != "auto":
            return ("The 'computer_use_preview' tool requires 'truncation' to be 'auto'.",
                    "truncation", "invalid_value")
        if kind in ("shell", "apply_patch") and not model.startswith(NATIVE_SHELL_MODELS):
            return (f"Tool '{kind}' is not supported with model '{model}'.",
                    f"tools[{index}].type", "unsupported_value")
    return None


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _calls_answered(body: dict[str, Any]) -> Problem | None:
    answered = {(i.get("type"), i.get("call_id")) for i in _items(body)}
    for item in _items(body):
        wanted = CALL_OUTPUTS.get(item.get("type", ""))
        if wanted and (wanted, item.get("call_id")) not in answered:
            words = item["type"].removesuffix("_call").replace("_", " ")
            return (f"No tool output found for {words} call {item.get('call_id')}.", "input",
                    None)
    return None


def _outputs_answer_calls(body: dict[str, Any]) -> Problem | None:
    calls = {(CALL_OUTPUTS.get(i.get("type", "")), i.get("call_id")) for i in _items(body)}
    for item in _items(body):
        if item.get("type") in CALL_OUTPUTS.values() and \
                (item["type"], item.get("call_id")) not in calls:
            words = item["type"].replace("_", " ")
            return (f"No tool call found for {words} with call_id {item.get('call_id')}.",
                    "input", None)
    return None


def _screenshots(body: dict[str, Any]) -> Problem | None:
    # https://developers.openai.com/api/docs/guides/tools-computer-use: the output is a screenshot
    for index, item in enumerate(_items(body)):
        shot = item.get("output") if item.get("type") == "computer_call_output" else None
        if shot is not None and not (shot.get("image_url") or shot.get("file_id")):
            return ("A computer call output must carry a screenshot (image_url or file_id).",
                    f"input[{index}].output", "missing_required_parameter")
    return None


def _safety_acknowledged(body: dict[str, Any]) -> Problem | None:
    # https://developers.openai.com/api/docs/guides/tools-computer-use#acknowledge-safety-checks:
    # pending checks are passed back as acknowledged_safety_checks to proceed
    pending = {i["call_id"]: {c.get("id") for c in i.get("pending_safety_checks") or []}
               for i in _items(body) if i.get("type") == "computer_call"}
    for index, item in enumerate(_items(body)):
        if item.get("type") != "computer_call_output":
            continue
        given = {c.get("id") for c in item.get("acknowledged_safety_checks") or []}
        missing = pending.get(item.get("call_id"), set()) - given
        if missing:
            return (f"Safety checks {sorted(missing)} of computer call {item['call_id']} were "
                    "not acknowledged.", f"input[{index}].acknowledged_safety_checks", None)
    return None


def _output_length_echoed(body: dict[str, Any]) -> Problem | None:
    # https://developers.openai.com/api/docs/guides/tools-shell: the call's max_output_length is
    # passed back with its output
    limits = {i["call_id"]: (i.get("action") or {}).get("max_output_length")
              for i in _items(body) if i.get("type") == "shell_call"}
    for index, item in enumerate(_items(body)):
        limit = limits.get(item.get("call_id")) if item.get("type") == "shell_call_output" \
            else None
        if limit is not None and item.get("max_output_length") != limit:
            return (f"max_output_length must be passed back as {limit} with the output of "
                    f"shell call {item['call_id']}.", f"input[{index}].max_output_length",
                    None)
    return None


# -- the server ----------------------------------------------------------------------------


def _shaped(step: Step, body: dict[str, Any]) -> Step:
    """``step`` for this request: its model, and computer calls in the tool's own shape."""
    if step.status >= 400 or isinstance(step, Fault):  # errors and faults go as scripted
        return step
    reply = copy.deepcopy(step.body)
    reply["model"] = body.get("model", MODEL)
    preview = any(t.get("type") == "computer_use_preview" for t in body.get("tools") or [])
    for item in reply.get("output") or []:
        if preview and item.get("type") == "computer_call":
            actions = item.pop("actions")
            assert len(actions) == 1, "a computer_use_preview call has one action"
            item["action"] = actions[0]
    return Step(body=reply, status=step.status, headers=step.headers)


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0] == "/v1/responses"


@contextlib.contextmanager
def serve_responses(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                    ) -> Iterator[ProviderServer]:
    """Serve ``script`` behind the contract check until the block ends."""
    server = ProviderServer(script, _route, error_body)
    play = server._respond

    def strict(body: dict[str, Any]) -> Step:
        problem = contract_violation(body)
        if problem is None:
            return _shaped(play(body), body)
        refusal = error_body(400, *problem)
        server.refused.append(refusal)
        return Step(status=400, body=refusal)

    server._respond = strict
    with serve(server):
        yield server


__all__ = ["apply_patch_call", "computer_call", "contract_violation", "error_body", "failure",
           "function_call", "response", "serve_responses", "shell_call"]
