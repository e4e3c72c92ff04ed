"""``hud eval examples/coding/tasks.py claude`` end to end, against the strict fake Messages
API, for two Claude families: a scripted multi-step run of every task, each with one failed
tool call that the run survives, and the usage and cost totals in the trace and ``hud jobs``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic import message, serve_messages, tool_use

from hud.eval.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
EDITOR = "str_replace_based_edit_tool"


def coding_model(body: dict[str, Any]) -> Any:
    """Plays a model on the coding tasks, from the conversation so far."""
    prompt = body["messages"][0]["content"][0]["text"]
    turn = sum(m["role"] == "assistant" for m in body["messages"])
    if "occur in" in prompt:
        letter, word = re.findall(r"'([^']*)'", prompt)[:2]
        plan = [message(None, tool_use("count_letter", {"text": word, "letter": letter * 2})),
                message(None, tool_use("count_letter", {"text": word, "letter": letter}))]
        if turn == len(plan):
            return message(body["messages"][-1]["content"][0]["content"][0]["text"])
        return plan[turn]
    plan = [
        message("Running the tests.", tool_use("bash", {"command": "python3 -m unittest -q"})),
        message(None, tool_use(EDITOR, {"command": "str_replace", "path": "wordstats.py",
                                        "old_str": "split(' ')", "new_str": "split()"})),
        message(None, tool_use(EDITOR, {"command": "str_replace", "path": "wordstats.py",
                                        "old_str": 'text.split(" ")', "new_str": "text.split()"})),
        message(None, tool_use("bash", {"command": "python3 -m unittest -q 2>&1 | tail -1"})),
        message("Fixed word_count."),
    ]
    return plan[turn]


def hud(*args: str, trace_dir: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HUD_TRACE_DIR": str(trace_dir)}
    environ.pop("ANTHROPIC_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True,
                          text=True, timeout=300, env=environ, cwd=ROOT)


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-haiku-4-5"])
def test_hud_eval_coding_with_claude(tmp_path: Path, model: str) -> None:
    with serve_messages(coding_model) as fake:
        done = hud("eval", "examples/coding/tasks.py", "claude", "--model", model,
                   "--config", f"base_url={fake.base_url}", "--config", "api_key=test-key",
                   "--runtime", "inprocess", "--json", trace_dir=tmp_path)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert fake.refusals == []
    assert {b["model"] for b in fake.bodies} == {model}
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and [r["reward"] for r in result["runs"]] == [1.0] * 3
    with TraceStore(tmp_path) as store:
        traces = [store.trace(r["trace_id"]) for r in result["runs"]]
        (job,) = store.jobs()
    for trace in traces:
        results = [s.data for s in trace.steps if s.kind == "tool_result"]
        failed = [i for i, r in enumerate(results) if r["is_error"]]
        assert len(failed) == 1 and failed[0] < len(results) - 1  # it failed, the run went on
        models = [s.data for s in trace.steps if s.kind == "model"]
        assert trace.usage["input_tokens"] == sum(m["usage"]["input_tokens"] for m in models)
        assert trace.usage["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in models))
    assert job["input_tokens"] == sum(t.usage["input_tokens"] for t in traces)
    assert job["output_tokens"] == sum(t.usage["output_tokens"] for t in traces)
    assert job["cost_usd"] == pytest.approx(sum(t.usage["cost_usd"] for t in traces))
    listed = hud("jobs", trace_dir=tmp_path)
    assert f"${job['cost_usd']:.4f}" in listed.stdout
