"""A local Anthropic Messages API (``POST /v1/messages``) playing a script, in the API's
real wire format, for the real ``anthropic`` SDK (``base_url=server.base_url``).

It is strict: every request is checked against the documented contract
(:mod:`.anthropic_contract`: the SDK's own request types, the model's tool versions, beta
headers, tool_use/tool_result pairing) and a violation gets the API's 400 (404 for an
unknown model) with its error body; the script does not advance. It also plays Anthropic's
prompt cache (:class:`PromptCache`), so a reply whose script leaves ``usage`` out carries
the cache reads and writes the real API would report.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .anthropic_contract import refusal
from .provider import ProviderServer, Step, failure, serve

MODEL = "claude-sonnet-4-6"
_ids = itertools.count(1)


def tool_use(name: str, input: dict[str, Any], id: str | None = None,
             toolset: str | None = None) -> dict[str, Any]:
    """A ``tool_use`` block; ``toolset="computer"`` makes it a toolset member's (``name``
    is then the action: ``left_click``, ``screenshot``...)."""
    block = {"type": "tool_use", "id": id or f"toolu_{next(_ids)}", "name": name,
             "input": input, "caller": {"type": "direct"}}
    if toolset:
        block["toolset_name"] = toolset
    return block


def message(text: str | None = None, *calls: dict[str, Any],
            usage: tuple[int, int] | None = None, cache_read: int = 0,
            stop_reason: str | None = None) -> Step:
    """A ``message`` reply: optional text, then tool_use blocks. Without ``usage`` the fake
    counts the tokens itself (see :class:`PromptCache`)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.extend(calls)
    return Step(body={
        "id": f"msg_{next(_ids)}", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": stop_reason or ("tool_use" if calls else "end_turn"),
        "stop_sequence": None,
        "usage": None if usage is None else {
            "input_tokens": usage[0], "output_tokens": usage[1],
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read}})


def error_body(status: int, text: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": text}}


class PromptCache:
    """Anthropic's prompt cache, played: https://platform.claude.com/docs/en/build-with-claude/
    prompt-caching. The prompt is tools, then system, then messages, block by block; a
    ``cache_control`` breakpoint writes the prefix that ends at it, and a request reads the
    longest written prefix that ends at most 20 blocks before one of its breakpoints. A
    token is a fixed share of a block's JSON (an estimate, the same every time)."""

    LOOKBACK = 20

    def __init__(self) -> None:
        self.written: set[str] = set()
        self.log: list[dict[str, int]] = []

    def usage(self, body: dict[str, Any], output_tokens: int) -> dict[str, int]:
        blocks = _prompt_blocks(body)
        sizes = [max(len(canon) // 4, 1) for canon, _ in blocks]
        keys, running = [], hashlib.sha256()
        for canon, _ in blocks:
            running.update(canon.encode())
            keys.append(running.hexdigest())
        breakpoints = [i for i, (_, marked) in enumerate(blocks) if marked]
        hit = max((next((i for i in range(b, max(b - self.LOOKBACK, -1), -1)
                         if keys[i] in self.written), -1) for b in breakpoints), default=-1)
        last = max(breakpoints, default=-1)
        self.written.update(keys[b] for b in breakpoints)
        counts = {"read": sum(sizes[:hit + 1]), "write": sum(sizes[hit + 1:last + 1]),
                  "input": sum(sizes[max(hit, last) + 1:])}
        self.log.append(counts)
        return {"input_tokens": counts["input"], "output_tokens": output_tokens,
                "cache_creation_input_tokens": counts["write"],
                "cache_read_input_tokens": counts["read"]}

    def breaks(self) -> int:
        """Requests that did not read back all the previous one had cached."""
        return sum(now["read"] < before["read"] + before["write"]
                   for before, now in itertools.pairwise(self.log))


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """Each block of the prompt as canonical JSON (its breakpoint left out), and whether it
    carries a breakpoint."""
    items: list[Any] = [("tool", t) for t in body.get("tools") or []]
    items += [("system", b) for b in body.get("system") or []]
    for message in body.get("messages") or []:
        content = message["content"]
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        items += [(message["role"], b) for b in blocks]
    return [(json.dumps([role, {k: v for k, v in b.items() if k != "cache_control"}],
                        sort_keys=True), "cache_control" in b) for role, b in items]


class MessagesServer(ProviderServer):
    """The fake: :attr:`requests` as received, :attr:`refusals` (the 400s it answered) and
    :attr:`cache` (the prompt cache's log)."""

    def __init__(self, script: Sequence[Step] | Callable[[dict[str, Any]], Step]) -> None:
        super().__init__(script, _route, error_body)
        self.cache = PromptCache()
        self.refusals: list[str] = []

    def answer(self, method: str, path: str, headers: dict[str, str],
               body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if _route(method, path, body):
            refused = refusal(body, headers)
            if refused is not None:
                with self._lock:
                    self.requests.append({"method": method, "path": path, "headers": headers,
                                          "body": body})
                    self.refusals.append(refused[1])
                return refused[0], {}, error_body(*refused)
        status, out_headers, reply = super().answer(method, path, headers, body)
        if status == 200 and reply.get("type") == "message":
            reply = {**reply, "model": body["model"]}
            if reply.get("usage") is None:
                with self._lock:
                    reply["usage"] = self.cache.usage(body, _output_tokens(reply))
        return status, out_headers, reply


def _output_tokens(reply: dict[str, Any]) -> int:
    return max(len(json.dumps(reply["content"])) // 4, 1)


def _route(method: str, path: str, body: dict[str, Any]) -> bool:
    return method == "POST" and path.split("?")[0] == "/v1/messages"


@contextlib.contextmanager
def serve_messages(script: Sequence[Step] | Callable[[dict[str, Any]], Step]
                   ) -> Iterator[MessagesServer]:
    fake = MessagesServer(script)
    with serve(fake):
        yield fake


__all__ = ["MessagesServer", "PromptCache", "failure", "message", "serve_messages",
           "tool_use"]
