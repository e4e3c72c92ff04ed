"""``hud eval examples/coding/tasks.py openai`` end to end against the strict Responses
stand-in, for two model families: one on the native ``shell`` and ``apply_patch`` tools, one
(without them) on function tools. Each fix fails once (a patch or an edit that does not
apply) and the run survives it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.provider import Step
from fakes.responses import apply_patch_call, function_call, response, serve_responses, shell_call

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
