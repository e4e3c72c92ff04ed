"""``hud eval`` of the coding, browser (Chromium) and desktop (VNC) examples with ``claude``,
end to end against the strict fake Messages API, for two Claude families each (Sonnet 5.5 on
the GA computer toolset, Haiku 4.5 on ``computer_20250124`` with its beta flag): a scripted
multi-step run of every task, each with one failed tool call that the run survives, and (for
the coding example) the usage and cost totals in the trace and ``hud jobs``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic import message, serve_messages, tool_use

from hud.eval.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
EDITOR = "str_replace_based_edit_tool"
MODELS = ["claude-sonnet-5-5", "claude-haiku-4-5"]


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


@pytest.mark.parametrize("model", MODELS)
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


# -- the browser and desktop examples: the computer tool on a real Chromium and VNC display ----

def act(model: str, action: str, **args: Any) -> dict[str, Any]:
    """A computer action as ``model`` calls it: a toolset member named by the action on the
    5.5 family, the ``computer`` tool with an ``action`` on older ones."""
    if model.startswith("claude-haiku-4-5"):
        return tool_use("computer", {"action": action, **args})
    return tool_use(action, args, toolset="computer")


# The sign-up form's fields in the viewport's pixels (#name, #email, #terms, #submit), and
# how many times ArrowDown picks each plan in the select (after "Choose a plan").
NAME, EMAIL, TERMS, SUBMIT = [208, 148], [208, 222], [50, 337], [82, 386]
PLANS = ["free", "pro", "team"]


def browser_plan(model: str, prompt: str) -> list[dict[str, Any]]:
    name, email, plan = re.search(r"Sign up as (.+) with the email (\S+) on the (\w+) plan",
                                  prompt).groups()
    return [act(model, "left_click", coordinate=NAME), act(model, "type", text=name),
            act(model, "left_click", coordinate=EMAIL), act(model, "type", text=email),
            act(model, "key", text="Tab"),
            act(model, "key", text="Down", repeat=PLANS.index(plan) + 1),
            act(model, "scroll", coordinate=NAME, scroll_direction="sideways"),  # fails
            act(model, "left_click", coordinate=TERMS), act(model, "left_click",
                                                            coordinate=SUBMIT)]


def desktop_plan(model: str, prompt: str) -> list[dict[str, Any]]:
    items = prompt.split("in this order: ")[1].split(". Answer")[0].split(", ")
    plan = [act(model, "left_click", coordinate=[200, 70]),  # the Item field
            act(model, "key")]  # fails: no key named
    for item in items:
        plan += [act(model, "type", text=item), act(model, "key", text="Return")]
    return plan


def screen_model(model: str, planner: Any) -> Any:
    def respond(body: dict[str, Any]) -> Any:
        prompt = body["messages"][0]["content"][0]["text"]
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        plan = planner(model, prompt)
        return message(None, plan[turn]) if turn < len(plan) else message("done")

    return respond


HAS_VNC = shutil.which("Xtigervnc") is not None or shutil.which("Xvfb") is not None
SCREENS = [
    pytest.param("browser", browser_plan, marks=pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Chromium is not installed")),
    pytest.param("desktop", desktop_plan, marks=pytest.mark.skipif(
        not HAS_VNC, reason="no virtual display server (apt-get install "
                            "tigervnc-standalone-server)")),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("example", "planner"), SCREENS)
def test_hud_eval_of_a_screen_example_with_claude(tmp_path: Path, model: str, example: str,
                                                  planner: Any) -> None:
    if example == "desktop":
        pytest.importorskip("asyncvnc")
        pytest.importorskip("tkinter")
    with serve_messages(screen_model(model, planner)) as fake:
        done = hud("eval", f"examples/{example}/tasks.py", "claude", "--model", model,
                   "--config", f"base_url={fake.base_url}", "--config", "api_key=test-key",
                   "--config", "retry_delay=0.001", "--json", trace_dir=tmp_path)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert fake.refusals == []
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and [r["reward"] for r in result["runs"]] == [1.0] * 2, [
        (r.get("subscores"), r.get("error")) for r in result["runs"]]
    computer = {tool["type"] for body in fake.bodies for tool in body["tools"]}
    assert computer == {"computer_toolset_20260801" if model == MODELS[0]
                        else "computer_20250124"}
    with TraceStore(tmp_path) as store:
        for run in result["runs"]:
            results = [s.data for s in store.trace(run["trace_id"]).steps
                       if s.kind == "tool_result"]
            failed = [i for i, r in enumerate(results) if r["is_error"]]
            assert len(failed) == 1 and failed[0] < len(results) - 1  # failed, and went on
