"""A local Gemini API (``POST /{version}/models/{model}:generateContent``) playing a
script, in the API's real (camelCase JSON) wire format, for the real ``google-genai`` SDK
(``http_options=HttpOptions(base_url=server.base_url)``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .provider import ProviderServer, Step, failure, serve

STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
          500: "INTERNAL", 503: "UNAVAILABLE"}


def call(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if id:
        part["functionCall"]["id"] = id
    return part


def reply(text: str | None = None, *calls: dict[str, Any],
          usage: tuple[int, int] = (10, 2)) -> Step:
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.extend(calls)
    return Step(body={
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1],
                          "totalTokenCount": sum(usage)},
        "modelVersion": "gemini-fake"})


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "status": STATUS.get(status, "UNKNOWN")}}


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0].endswith(":generateContent")


@contextlib.contextmanager
def serve_gemini(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                 ) -> Iterator[ProviderServer]:
    with serve(ProviderServer(script, _route, error_body)) as server:
        yield server


__all__ = ["call", "failure", "reply", "serve_gemini"]
