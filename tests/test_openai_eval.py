"""``hud eval`` of the coding, browser (Chromium) and desktop (VNC) examples with ``openai``,
end to end against the strict Responses stand-in, for two model families each: gpt-5.4 (the
native ``shell`` and ``apply_patch`` tools, the GA ``computer`` tool) and gpt-5-mini
(function tools, ``computer_use_preview`` with ``truncation: "auto"``). Every run fails one
call (a patch or an edit that does not apply, a computer action that cannot run) and
survives it."""

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
from fakes.provider import Step
from fakes.responses import (
    apply_patch_call,
    computer_call,
    function_call,
    response,
    serve_responses,
    shell_call,
)

from hud.eval.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
BROKEN = 'return len(text.split(" "))'
FIXED = "return len(text.split())"


def prompt(body: dict[str, Any]) -> str:
    first = body["input"][0]["content"]
    return first if isinstance(first, str) else first[0]["text"]


def outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body["input"] if str(i.get("type", "")).endswith("_output")]


def fix_turn(turn: int, native: bool) -> Step:
    """The fix, a step at a time: run the tests, a change that does not apply, the change."""
    if native:
        calls = [shell_call("python3 -m unittest -q"),
                 apply_patch_call("update_file", "wordstats.py", "-    return nothing\n+x\n"),
                 apply_patch_call("update_file", "wordstats.py",
                                  f"@@ def word_count(text: str) -> int:\n-    {BROKEN}\n"
                                  f"+    {FIXED}\n")]
    else:
        calls = [function_call("bash", {"command": "python3 -m unittest -q"}),
                 function_call("edit_file", {"path": "wordstats.py", "old_string": "nothing",
                                             "new_string": "x"}),
                 function_call("edit_file", {"path": "wordstats.py", "old_string": BROKEN,
                                             "new_string": FIXED})]
    return response(None, calls[turn]) if turn < len(calls) else response("Fixed.")


def count_turn(body: dict[str, Any], done: list[dict[str, Any]]) -> Step:
    if not done:
        word, letter = prompt(body).split("'")[3], prompt(body).split("'")[1]
        return response(None, function_call("count_letter", {"text": word, "letter": letter}))
    return response(done[-1]["output"] if isinstance(done[-1]["output"], str)
                    else done[-1]["output"][0]["text"])


def model_turn(body: dict[str, Any]) -> Step:
    """The scripted model: which task (by its prompt) and which step (by the outputs)."""
    native = any(tool["type"] == "shell" for tool in body.get("tools") or [])
    if "repository" in prompt(body):
        return fix_turn(len(outputs(body)), native)
    return count_turn(body, outputs(body))


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5-mini"])
def test_hud_eval_of_the_coding_example_on_the_strict_stand_in(tmp_path: Path,
                                                               model: str) -> None:
    with serve_responses(model_turn) as fake:
        environ = {**os.environ, "HUD_TRACE_DIR": str(tmp_path), "OPENAI_API_KEY": "k"}
        done = subprocess.run(
            [sys.executable, "-m", "hud", "eval", "examples/coding/tasks.py", "openai",
             "--model", model, "--config", f"base_url={fake.base_url}/v1", "--config",
             "retry_delay=0.01", "--json"], capture_output=True, text=True, env=environ,
            cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    assert fake.refused == []
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and [r["reward"] for r in result["runs"]] == [1.0] * 3, \
        result["runs"]
    native = model == "gpt-5.4"
    fixes = [b for b in fake.bodies if "repository" in prompt(b)]
    assert len(fixes) == 4 and {b["model"] for b in fake.bodies} == {model}
    failed = outputs(fixes[2])[-1]
    if native:
        assert (failed["type"], failed["status"]) == ("apply_patch_call_output", "failed")
    else:
        assert failed["type"] == "function_call_output" and "error" in failed["output"]


# -- the browser and desktop examples: the computer tool on a real Chromium and VNC display ----

# The sign-up form's fields in the viewport's pixels (#name, #email, #terms, #submit), and
# how many times ArrowDown picks each plan in the select (after "Choose a plan").
NAME, EMAIL, TERMS, SUBMIT = (208, 148), (208, 222), (50, 337), (82, 386)
PLANS = ["free", "pro", "team"]
FAILING = {"type": "drag", "path": []}  # a drag needs a path of two points at least


def click(x: int, y: int) -> dict[str, Any]:
    return {"type": "click", "button": "left", "x": x, "y": y}


def key(*keys: str) -> dict[str, Any]:
    return {"type": "keypress", "keys": list(keys)}


def browser_plan(text: str) -> list[dict[str, Any]]:
    name, email, plan = re.search(r"Sign up as (.+) with the email (\S+) on the (\w+) plan",
                                  text).groups()
    return [click(*NAME), {"type": "type", "text": name}, click(*EMAIL),
            {"type": "type", "text": email}, key("TAB"),
            *[key("DOWN")] * (PLANS.index(plan) + 1), FAILING, click(*TERMS), click(*SUBMIT)]


def desktop_plan(text: str) -> list[dict[str, Any]]:
    items = text.split("in this order: ")[1].split(". Answer")[0].split(", ")
    plan = [click(200, 70), FAILING]  # the Item field
    for item in items:
        plan += [{"type": "type", "text": item}, key("ENTER")]
    return plan


def screen_model(planner: Any) -> Any:
    """One computer action a turn, by how many calls the input has answered."""

    def respond(body: dict[str, Any]) -> Step:
        plan, turn = planner(prompt(body)), len(outputs(body))
        return response(None, computer_call(plan[turn])) if turn < len(plan) else \
            response("done")

    return respond


HAS_VNC = shutil.which("Xtigervnc") is not None or shutil.which("Xvfb") is not None
SCREENS = [
    pytest.param("browser", browser_plan, marks=pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Chromium is not installed")),
    pytest.param("desktop", desktop_plan, marks=pytest.mark.skipif(
        not HAS_VNC, reason="no virtual display server (apt-get install "
                            "tigervnc-standalone-server)")),
]


@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5-mini"])
@pytest.mark.parametrize(("example", "planner"), SCREENS)
def test_hud_eval_of_a_screen_example_on_the_strict_stand_in(tmp_path: Path, model: str,
                                                             example: str,
                                                             planner: Any) -> None:
    if example == "desktop":
        pytest.importorskip("asyncvnc")
        pytest.importorskip("tkinter")
    with serve_responses(screen_model(planner)) as fake:
        environ = {**os.environ, "HUD_TRACE_DIR": str(tmp_path), "OPENAI_API_KEY": "k"}
        done = subprocess.run(
            [sys.executable, "-m", "hud", "eval", f"examples/{example}/tasks.py", "openai",
             "--model", model, "--config", f"base_url={fake.base_url}/v1", "--config",
             "retry_delay=0.01", "--json"], capture_output=True, text=True, env=environ,
            cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert fake.refused == []
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and [r["reward"] for r in result["runs"]] == [1.0] * 2, [
        (r.get("subscores"), r.get("error")) for r in result["runs"]]
    tools = {tool["type"] for body in fake.bodies for tool in body["tools"]}
    assert tools == {"computer" if model == "gpt-5.4" else "computer_use_preview"}
    if model != "gpt-5.4":
        environment = "browser" if example == "browser" else "linux"
        assert {b["tools"][0]["environment"] for b in fake.bodies} == {environment}
        assert {b["truncation"] for b in fake.bodies} == {"auto"}
    # every computer call, the failed one too, answered by a computer_call_output
    answers = [i for b in fake.bodies for i in outputs(b)]
    assert {i["type"] for i in answers} == {"computer_call_output"}
    with TraceStore(tmp_path) as store:
        for run in result["runs"]:
            results = [s.data for s in store.trace(run["trace_id"]).steps
                       if s.kind == "tool_result"]
            failed = [i for i, r in enumerate(results) if r["is_error"]]
            assert len(failed) == 1 and failed[0] < len(results) - 1  # failed, and went on
