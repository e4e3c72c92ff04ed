"""A local Anthropic Messages API (``POST /v1/messages``) playing a script, in the API's
real wire format, for the real ``anthropic`` SDK (``base_url=server.base_url``)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .provider import ProviderServer, Step, failure, serve

MODEL = "claude-sonnet-4-6"
_ids = itertools.count(1)


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or f"toolu_{next(_ids)}", "name": name, "input": input}


def message(text: str | None = None, *calls: dict[str, Any], usage: tuple[int, int] = (10, 2),
            cache_read: int = 0) -> Step:
    """A ``message`` reply: optional text, then tool_use blocks."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.extend(calls)
    return Step(body={
        "id": f"msg_{next(_ids)}", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": "tool_use" if calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read}})


def error_body(status: int, text: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": text}}


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0] == "/v1/messages"


@contextlib.contextmanager
def serve_messages(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                   ) -> Iterator[ProviderServer]:
    with serve(ProviderServer(script, _route, error_body)) as server:
        yield server


__all__ = ["failure", "message", "serve_messages", "tool_use"]
