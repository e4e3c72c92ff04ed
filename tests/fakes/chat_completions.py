"""A local Chat Completions server (``/v1/chat/completions``, ``/v1/models``) that plays a
script, in the API's real wire format, for the real ``openai`` SDK to talk to.

>>> with serve_chat_completions([reply(tool_calls=[call("bash", {"command": "ls"})]),
...                              reply("done")]) as server:
...     client = openai.OpenAI(base_url=server.base_url, api_key="test")
...     ...
...     server.requests[0]["body"]["messages"]

A script is a list of :class:`Reply` played in order (a request past its end gets a 500
whose message says so), or a function from the request body to a :class:`Reply`.

It is strict: a request that breaks the documented contract (:func:`contract_violation`) is
answered as the real API answers it, HTTP 400 with OpenAI's error body, and kept in
``server.refused``; the script is not consulted. The server
runs on its own thread, so sync and async clients, and other processes, can all use it; it
answers each request on a fresh connection (``Connection: close``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

from .sdk_types import violation

MODEL = "fake-model"


@dataclass
class Reply:
    """One answer: a completion (``message``) or, with ``status`` >= 400, an error."""

    message: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"
    usage: tuple[int, int] = (10, 2)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)
    """More fields of the choice: ``logprobs``, a server's extensions (vLLM's ``token_ids``)."""


Responder = Callable[[dict[str, Any]], Reply]


def call(name: str, arguments: dict[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """A tool call as the API sends it (``arguments`` is JSON text on the wire)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id or f"call_{name}", "type": "function",
            "function": {"name": name, "arguments": text}}


def reply(content: str | None = None, *, tool_calls: Sequence[dict[str, Any]] = (),
          usage: tuple[int, int] = (10, 2), finish_reason: str | None = None,
          choice: dict[str, Any] | None = None) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return Reply(message=message, finish_reason=reason, usage=usage, choice=dict(choice or {}))


def failure(status: int, message: str = "", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, headers=dict(headers or {}),
                 message={"message": message or f"fake error {status}"})


def completion(body: dict[str, Any], answer: Reply, number: int) -> dict[str, Any]:
    """The ``chat.completion`` object for ``answer``."""
    prompt_tokens, completion_tokens = answer.usage
    return {
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model") or MODEL, "system_fingerprint": None,
        "choices": [{"index": 0, "message": answer.message,
                     "finish_reason": answer.finish_reason, "logprobs": None,
                     **answer.choice}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body (https://developers.openai.com/api/docs/guides/error-codes)."""
    kind = {400: "invalid_request_error", 401: "authentication_error",
            429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": code if status == 400 else kind}}


def contract_violation(body: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """The first documented rule ``body`` breaks, as ``(message, param, code)``, or None."""
    # https://platform.openai.com/docs/api-reference/chat/create (the SDK's types are
    # generated from it): unknown fields refused, required ones enforced
    found = violation(body, CompletionCreateParamsNonStreaming)
    if found:
        return found[2], found[1], found[0]
    return _tool_messages_answer_calls(body.get("messages") or [])


def _tool_messages_answer_calls(messages: list[Any]) -> tuple[str, str, None] | None:
    # https://developers.openai.com/api/docs/guides/function-calling: every tool call of an
    # assistant message is answered by a tool message right after it, and only those
    waiting: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in waiting:
                return ("Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.", f"messages.[{index}].role",
                        None)
            waiting.remove(message["tool_call_id"])
            continue
        if waiting:
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(waiting)}", f"messages.[{index}].role",
                    None)
        waiting = [call["id"] for call in message.get("tool_calls") or []]
    return None


class ChatCompletionsServer:
    """The running fake: :attr:`base_url` for the SDK, :attr:`requests` as received
    (``{"method", "path", "headers", "body"}``)."""

    def __init__(self, script: Sequence[Reply] | Responder, model: str = MODEL,
                 extensions: Sequence[str] = ()) -> None:
        self.model = model
        self.extensions = set(extensions)  # request fields accepted beyond OpenAI's (vLLM's)
        self.requests: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        if callable(script):
            self._respond: Responder = script
        else:
            replies = iter(list(script))
            self._respond = lambda body: next(
                replies, failure(500, "the fake's script has no more replies"))
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="fake-chat",
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests, in order."""
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    def answer(self, method: str, path: str, headers: dict[str, str],
               body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers,
                                  "body": body})
            number = next(self._numbers)
            if method == "GET" and path == "/v1/models":
                return 200, {}, {"object": "list", "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}
            if method != "POST" or path != "/v1/chat/completions":
                return 404, {}, error_body(404, f"no route {method} {path}")
            if body.get("stream"):
                return 400, {}, error_body(400, "the fake does not stream")
            problem = contract_violation(
                {k: v for k, v in body.items() if k not in self.extensions})
            if problem:
                self.refused.append(error_body(400, *problem))
                return 400, {}, self.refused[-1]
            answer = self._respond(body)
        if answer.status >= 400:
            return answer.status, answer.headers, error_body(answer.status,
                                                             answer.message["message"])
        return 200, answer.headers, completion(body, answer, number)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


@contextlib.contextmanager
def serve_chat_completions(script: Sequence[Reply] | Responder, model: str = MODEL,
                           extensions: Sequence[str] = ()) -> Iterator[ChatCompletionsServer]:
    """Serve ``script`` on 127.0.0.1 (a free port) until the block ends; ``extensions``
    are request fields it accepts beyond OpenAI's (as vLLM does)."""
    server = ChatCompletionsServer(script, model, extensions)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _handler(fake: ChatCompletionsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve({})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, {}, error_body(400, "the body is not JSON"))
                return
            self._serve(body)

        def _serve(self, body: dict[str, Any]) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(*fake.answer(self.command, self.path, headers, body))

        def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
