"""A Chat Completions server on 127.0.0.1 that answers the way vLLM does, with a real model:
SmolLM2 (or any GGUF) run by llama-cpp-python's ``Llama``, one token at a time, so each
sampled token's id and log-probability are the model's own.

It exists because no server we can run here returns token ids: llama-cpp-python's returns
token text only. vLLM's response shape, as documented for its OpenAI-compatible server
(https://docs.vllm.ai/en/stable/serving/openai_compatible_server/, "Extra Parameters" of the
Chat API; the fields are in vllm/entrypoints/openai/protocol.py):

- ``return_token_ids``: the sampled ids go on the choice, ``choices[i].token_ids``, and the
  prompt's ids on the response, ``prompt_token_ids``.
- ``return_tokens_as_token_ids`` with ``logprobs``: each ``logprobs.content[j].token`` (and
  each ``top_logprobs`` entry's) is the string ``"token_id:{id}"`` instead of its text.
- The end-of-sequence token that stops a completion is part of ``token_ids`` and has a
  logprobs entry; the message content skips special tokens, so its text is empty there.
- Logprobs are of the raw model distribution, before temperature (vLLM's default
  ``logprobs_mode``, ``raw_logprobs``).

>>> with serve_vllm_llama(gguf_path, "smollm2") as base_url:
...     ...  # POST f"{base_url}/chat/completions"

Not served: streaming, ``n`` > 1, tools (vLLM needs a tool parser for those), stop strings.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np


@dataclass
class Sampled:
    """A completion as the model sampled it: ids, each one's logprob, the ``top`` most likely
    alternatives at each step, and whether it ended at end-of-sequence."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    stopped: bool = False


class VllmLlama:
    """One model behind a lock (a ``Llama`` context serves one sequence at a time)."""

    def __init__(self, gguf: Path, alias: str, n_ctx: int = 2048) -> None:
        self.alias = alias
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=2,
                                   verbose=False)
        self.template = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.piece(self.llm.token_eos()).decode(),
            bos_token=self.piece(self.llm.token_bos()).decode())
        self._lock = threading.Lock()

    def piece(self, token: int) -> bytes:
        return self.llm.detokenize([token], special=True)

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The response body for a ``/v1/chat/completions`` request; ``ValueError`` names
        what this server does not serve."""
        _refuse_unserved(request)
        prompt = self.template(messages=[_text_message(m) for m in request["messages"]]).prompt
        prompt_ids = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        room = self.llm.n_ctx() - len(prompt_ids)
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or room
        if limit > room:
            raise ValueError(f"This model's maximum context length is {self.llm.n_ctx()} "
                             f"tokens; the prompt has {len(prompt_ids)} and {limit} were asked")
        with self._lock:
            sampled = self.sample(prompt_ids, limit, float(request.get("temperature", 1.0)),
                                  request.get("seed"), int(request.get("top_logprobs") or 0))
        return self.response(request, prompt_ids, sampled)

    def sample(self, prompt_ids: list[int], limit: int, temperature: float,
               seed: int | None, top: int) -> Sampled:
        """Up to ``limit`` tokens after the prompt: greedy at temperature 0, else drawn from
        the tempered distribution with a generator seeded by ``seed``."""
        rng, out = np.random.default_rng(seed), Sampled()
        self.llm.reset()
        self.llm.eval(prompt_ids)
        while len(out.ids) < limit and not out.stopped:
            logprobs = self.next_logprobs()
            token = _pick(logprobs, temperature, rng)
            best = np.argsort(logprobs)[::-1][:top]
            out.ids.append(token)
            out.logprobs.append(float(logprobs[token]))
            out.top.append([(int(i), float(logprobs[i])) for i in best])
            out.stopped = token == self.llm.token_eos()
            if not out.stopped:
                self.llm.eval([token])
        return out

    def next_logprobs(self) -> np.ndarray:
        """Log-softmax of the logits after the last evaluated token."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1),
                                       shape=(self.llm.n_vocab(),)).astype(np.float64)
        shifted = logits - logits.max()
        return shifted - np.log(np.exp(shifted).sum())

    def response(self, request: dict[str, Any], prompt_ids: list[int],
                 sampled: Sampled) -> dict[str, Any]:
        with_ids = bool(request.get("return_token_ids"))
        choice = {"index": 0, "finish_reason": "stop" if sampled.stopped else "length",
                  "stop_reason": None, "token_ids": sampled.ids if with_ids else None,
                  "message": {"role": "assistant", "tool_calls": [],
                              "content": self.llm.detokenize(sampled.ids).decode(
                                  "utf-8", errors="replace")},
                  "logprobs": self.logprobs(request, sampled) if request.get("logprobs")
                  else None}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": self.alias, "choices": [choice],
                "usage": {"prompt_tokens": len(prompt_ids),
                          "completion_tokens": len(sampled.ids),
                          "total_tokens": len(prompt_ids) + len(sampled.ids)},
                "prompt_token_ids": prompt_ids if with_ids else None}

    def logprobs(self, request: dict[str, Any], sampled: Sampled) -> dict[str, Any]:
        as_ids = bool(request.get("return_tokens_as_token_ids"))

        def entry(token: int, logprob: float) -> dict[str, Any]:
            piece = self.piece(token)
            text = f"token_id:{token}" if as_ids else piece.decode("utf-8", errors="replace")
            return {"token": text, "logprob": logprob, "bytes": list(piece)}

        return {"content": [{**entry(token, logprob), "top_logprobs": [entry(*t) for t in top]}
                            for token, logprob, top in zip(sampled.ids, sampled.logprobs,
                                                           sampled.top, strict=True)]}


def _pick(logprobs: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0.0:
        return int(logprobs.argmax())
    tempered = np.exp((logprobs - logprobs.max()) / temperature)
    return int(rng.choice(len(logprobs), p=tempered / tempered.sum()))


def _refuse_unserved(request: dict[str, Any]) -> None:
    if request.get("stream"):
        raise ValueError("this test server does not stream")
    if (request.get("n") or 1) != 1:
        raise ValueError("this test server returns one choice (n=1)")
    if request.get("tools"):
        raise ValueError("this test server does not parse tool calls")


def _text_message(message: dict[str, Any]) -> dict[str, str]:
    """The template wants text content; a list of parts is joined (only text is served)."""
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = "\n".join(part["text"] for part in content if part.get("type") == "text")
    return {"role": message["role"], "content": content}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.reply(404, {"error": {"message": f"no route {self.path}", "code": 404}})
        self.reply(200, {"object": "list", "data": [
            {"id": self.server.model.alias, "object": "model", "owned_by": "vllm"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.reply(404, {"error": {"message": f"no route {self.path}", "code": 404}})
        try:
            self.reply(200, self.server.model.complete(body))
        except ValueError as exc:
            self.reply(400, {"error": {"message": str(exc), "type": "BadRequestError",
                                       "code": 400}})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's own output is what matters."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    model: VllmLlama


@contextlib.contextmanager
def serve_vllm_llama(gguf: Path, alias: str) -> Iterator[str]:
    """Serve ``gguf`` as model ``alias`` on 127.0.0.1, port 0; yields the API root
    (``http://127.0.0.1:PORT/v1``) and stops the server on exit."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.model = VllmLlama(gguf, alias)
    thread = threading.Thread(target=server.serve_forever, name="vllm-llama", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
