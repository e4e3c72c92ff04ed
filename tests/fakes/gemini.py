"""A local Gemini API (``POST /{version}/models/{model}:generateContent``) playing a
script, in the API's real (camelCase JSON) wire format, for the real ``google-genai`` SDK
(``http_options=HttpOptions(base_url=server.base_url)``).

It is strict: a request that breaks the API's documented contract is answered as the API
answers it, HTTP 400 with Google's error body (``{"error": {"code": 400, "message": ...,
"status": "INVALID_ARGUMENT"}}``), and is kept in :attr:`GeminiServer.violations`. Every
request's parts are also parsed with the installed SDK's own types
(``google.genai.types``, unknown fields forbidden). The rules, each beside its source, are in
:func:`violation`. A :class:`Fault` step drops the connection or answers late.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .provider import Fault, ProviderServer, Step, failure, serve

STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED",
          409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
API = "https://ai.google.dev/api/generate-content"
COMPUTER_USE = "https://ai.google.dev/gemini-api/docs/computer-use"
FUNCTION_CALLING = "https://ai.google.dev/gemini-api/docs/function-calling"
# The request body's fields (API, "Request body"), and the SDK type each is parsed with.
FIELDS = {"contents": "Content", "tools": "Tool", "toolConfig": "ToolConfig",
          "safetySettings": "SafetySetting", "systemInstruction": "Content",
          "generationConfig": "GenerationConfig", "cachedContent": None}
BROWSER, DESKTOP = "ENVIRONMENT_BROWSER", "ENVIRONMENT_DESKTOP"
# Which models take the computer_use tool, in which environments, and which need it on
# every request (COMPUTER_USE, "Supported models"; the API's own table, kept apart from the
# harness's so that each checks the other). A model not listed is taken as the newest.
MODELS: dict[str, tuple[tuple[str, ...], bool]] = {
    "gemini-2.5-computer-use-preview": ((BROWSER,), True),
    "gemini-3-flash": ((BROWSER,), False), "gemini-3-pro": ((BROWSER,), False),
    "gemini-3.1-pro": ((BROWSER,), False), "gemini-3.5-flash": ((BROWSER, DESKTOP), False),
    "gemini-2.5-pro": ((), False), "gemini-2.5-flash": ((), False),
    "gemini-2.0-flash": ((), False),
}
NEWEST = "gemini-3.5-flash"


def call(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if id:
        part["functionCall"]["id"] = id
    return part


def reply(text: str | None = None, *calls: dict[str, Any], usage: tuple[int, int] = (10, 2),
          finish: str = "STOP") -> Step:
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.extend(calls)
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if parts:
        candidate["content"] = {"role": "model", "parts": parts}
    return Step(body={
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1],
                          "totalTokenCount": sum(usage)},
        "modelVersion": "gemini-fake"})


def blocked(reason: str = "SAFETY") -> Step:
    """A prompt the API refuses to answer: no candidate, a ``promptFeedback``."""
    return Step(body={"promptFeedback": {"blockReason": reason},
                      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}})


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "status": STATUS.get(status, "UNKNOWN")}}


def model_of(path: str) -> str:
    return path.split("?")[0].rsplit("/", 1)[-1].removesuffix(":generateContent")


def violation(model: str, body: dict[str, Any]) -> str | None:
    """Why the API would refuse ``body`` for ``model`` (a 400's message), or None."""
    for check in (_sdk_types, _roles, _answers, _computer_use, _acknowledged):
        found = check(model, body)
        if found:
            return found
    return None


def _sdk_types(model: str, body: dict[str, Any]) -> str | None:
    # API, "Request body": an unknown field is refused; each field parses as its SDK type
    from google.genai import types
    from pydantic import ValidationError

    for name, value in body.items():
        if name not in FIELDS:
            return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
        kind = FIELDS[name]
        for item in (value if isinstance(value, list) else [value]) if kind else []:
            try:
                getattr(types, kind).model_validate_json(json.dumps(item))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                return (f'Invalid JSON payload received. {name}.{where}: {first["msg"]}')
    if not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified"
    return None


def _roles(model: str, body: dict[str, Any]) -> str | None:
    # API, Content.role: "Must be either 'user' or 'model'"
    for content in body["contents"]:
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model (got {content.get('role')!r})."
    return None


def _answers(model: str, body: dict[str, Any]) -> str | None:
    # FUNCTION_CALLING: each functionCall turn is followed by a user turn holding one
    # functionResponse per call, in order, with the same name (and id, where one was given)
    contents = body["contents"]
    for index, content in enumerate(contents):
        calls = [p["functionCall"] for p in content.get("parts", []) if "functionCall" in p]
        if not calls or content.get("role") != "model" or index + 1 == len(contents):
            continue
        answer = contents[index + 1]
        responses = [p["functionResponse"] for p in answer.get("parts", [])
                     if "functionResponse" in p]
        if len(responses) != len(calls) or answer.get("role") != "user":
            return ("Please ensure that the number of function response parts is equal to "
                    "the number of function call parts of the function call turn.")
        for asked, given in zip(calls, responses, strict=True):
            if asked["name"] != given.get("name") or asked.get("id", given.get("id")) != \
                    given.get("id", asked.get("id")):
                return (f"Function response {given.get('name')!r} does not match the "
                        f"function call {asked['name']!r} of the function call turn.")
    return None


def _computer_use(model: str, body: dict[str, Any]) -> str | None:
    # COMPUTER_USE, "Supported models" and the environment of the computer_use tool
    family = max((m for m in MODELS if model.startswith(m)), key=len, default=NEWEST)
    environments, required = MODELS[family]
    tools = [t["computerUse"] for t in body.get("tools", []) if "computerUse" in t]
    if required and not tools:
        return "This model requires the use of the Computer Use tool."
    for tool in tools:
        if not environments:
            return f"Computer Use is not supported for model models/{model}."
        if tool.get("environment") not in environments:
            return (f"Environment {tool.get('environment')} is not supported for model "
                    f"models/{model}; supported: {', '.join(environments)}.")
    return None


def _acknowledged(model: str, body: dict[str, Any]) -> str | None:
    # COMPUTER_USE, "Safety decision": a call that required confirmation and ran is answered
    # with safety_acknowledgement "true" in its function response
    contents = body["contents"]
    for index, content in enumerate(contents[:-1]):
        calls = [p["functionCall"] for p in content.get("parts", []) if "functionCall" in p]
        responses = [p["functionResponse"] for p in contents[index + 1].get("parts", [])
                     if "functionResponse" in p]
        for asked, given in zip(calls, responses, strict=False):
            decision = (asked.get("args") or {}).get("safety_decision") or {}
            if decision.get("decision") == "require_confirmation" and \
                    (given.get("response") or {}).get("safety_acknowledgement") != "true":
                return (f"Function call {asked['name']!r} required confirmation: its "
                        "response must carry safety_acknowledgement \"true\".")
    return None


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0].endswith(":generateContent")


class GeminiServer(ProviderServer):
    """The strict stand-in: :attr:`violations` holds ``(model, message)`` for each request
    it refused."""

    def __init__(self, script: Sequence[Step] | Callable[[dict[str, Any]], Step]) -> None:
        super().__init__(script, _route, error_body)
        self.violations: list[tuple[str, str]] = []

    def answer(self, method: str, path: str, headers: dict[str, str],
               body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        found = violation(model_of(path), body) if _route(method, path, body) else None
        if found is None:
            return super().answer(method, path, headers, body)
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers,
                                  "body": body})
            self.violations.append((model_of(path), found))
        return 400, {}, error_body(400, found)


@contextlib.contextmanager
def serve_gemini(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                 ) -> Iterator[GeminiServer]:
    with serve(GeminiServer(script)) as server:
        yield server


__all__ = ["Fault", "blocked", "call", "failure", "reply", "serve_gemini", "violation"]
