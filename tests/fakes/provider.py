"""A local HTTP server that plays a scripted conversation for a model provider's SDK.

Each provider's fake (``anthropic.py``, ``responses.py``, ``gemini.py``) says how a scripted
:class:`Step` looks on its wire; this module serves it: it records every request
(``{"method", "path", "headers", "body"}``) and answers the next step of the script, or a
500 saying the script has run out; a :class:`Fault` step drops the connection or answers
late. It runs on its own thread (``Connection: close``).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from .chat_completions import _handler


@dataclass
class Step:
    """One scripted answer: a reply ``body`` (provider format), or an error ``status``."""

    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault(Step):
    """A step that misbehaves: ``drop`` closes the connection without an answer; ``delay``
    seconds pass before the answer (past the client's timeout, it never arrives)."""

    drop: bool = False
    delay: float = 0.0


class Dropped(Exception):
    """Raised in the handler thread: the server closes the connection unanswered."""


Route = Callable[[str, str, dict[str, Any]], bool]
ErrorBody = Callable[[int, str], dict[str, Any]]


class ProviderServer:
    def __init__(self, script: Sequence[Step] | Callable[[dict[str, Any]], Step],
                 route: Route, error_body: ErrorBody) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []  # error bodies of requests a strict fake refused
        self.route = route
        self.error_body = error_body
        self._lock = threading.Lock()
        if callable(script):
            self._respond = script
        else:
            steps = iter(list(script))
            self._respond = lambda body: next(
                steps, Step(status=500, body={"message": "the fake's script has no more replies"}))
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))  # type: ignore[arg-type]
        self._http.daemon_threads = True
        report = self._http.handle_error
        # a Dropped answer is the point, not an error worth a traceback
        self._http.handle_error = lambda request, address: (  # type: ignore[method-assign]
            None if isinstance(sys.exc_info()[1], Dropped) else report(request, address))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if self.route(r["method"], r["path"], r["body"])]

    def answer(self, method: str, path: str, headers: dict[str, str],
               body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers,
                                  "body": body})
            if not self.route(method, path, body):
                return 404, {}, self.error_body(404, f"no route {method} {path}")
            step = self._respond(body)
        if isinstance(step, Fault):
            time.sleep(step.delay)
            if step.drop:
                raise Dropped()
        if step.status >= 400 and "error" in step.body:  # a full error body, as the API's
            return step.status, step.headers, step.body
        if step.status >= 400:
            return step.status, step.headers, self.error_body(
                step.status, step.body.get("message", f"fake error {step.status}"))
        return 200, step.headers, step.body


@contextlib.contextmanager
def serve(server: ProviderServer) -> Iterator[ProviderServer]:
    server._thread.start()
    try:
        yield server
    finally:
        server._http.shutdown()
        server._http.server_close()
        server._thread.join()


def failure(status: int, message: str = "", headers: dict[str, str] | None = None) -> Step:
    return Step(status=status, headers=dict(headers or {}),
                body={"message": message or f"fake error {status}"})


def prefix_breaks(bodies: Sequence[dict[str, Any]], key: str) -> int:
    """Requests whose ``key`` list (``input`` for Responses, ``contents`` for Gemini) does not
    start with the whole previous request's: each breaks an automatic prefix cache, which
    reuses only an identical leading part of the prompt
    (https://developers.openai.com/api/docs/guides/prompt-caching, "exact prefix matches";
    https://ai.google.dev/gemini-api/docs/caching, implicit caching of a common prefix)."""
    return sum(now[key][:len(before[key])] != before[key]
               for before, now in itertools.pairwise(bodies))
