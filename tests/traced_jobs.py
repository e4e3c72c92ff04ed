"""Real jobs in a real trace store, made by ``hud eval`` in a subprocess with the ``claude``
harness against the fake Messages API (:mod:`fakes.anthropic`), for the trace and viewer
tests.

* :func:`browser_job`: ``examples/browser`` (a real Chromium): the model takes a screenshot,
  clicks, types and answers; its runs hold text, tool calls and screenshots, and a graded
  reward with subscores.
* :func:`failing_job`: ``examples/letter_count``: the API refuses two of the five prompts (a
  400: the agent phase fails), the others are answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakes.anthropic import failure, message, serve_messages, tool_use

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REFUSED = ("strawberry", "banana")


def hud(*args: str, traces: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          env={**os.environ, "HUD_TRACE_DIR": str(traces)}, timeout=240,
                          check=False)


def _browser_turn(body: dict[str, Any]) -> Any:
    """The reply to the conversation so far: one scripted action per turn, then an answer."""
    turn = len(body["messages"]) // 2
    actions = [{"action": "screenshot"},
               {"action": "left_click", "coordinate": [120, 40]},
               {"action": "type", "text": "Ada Lovelace"}]
    if turn < len(actions):
        return message(f"Step {turn + 1}: I will {actions[turn]['action']}.",
                       tool_use("computer", actions[turn], id=f"toolu_{turn}"))
    return message("done")


def _letters_turn(body: dict[str, Any]) -> Any:
    prompt = json.dumps(body["messages"][0])
    if any(word in prompt for word in REFUSED):
        return failure(400, "prompt is too long: 1000000 tokens > 200000 maximum")
    return message("3")


def eval_job(source: Path, reply: Any, traces: Path, *extra: str) -> dict[str, Any]:
    """``hud eval SOURCE claude`` against the fake API answering with ``reply``; the summary
    that ``--json`` printed."""
    with serve_messages(reply) as fake:
        done = hud("eval", str(source), "claude-sonnet-4-6", "--json",
                   "--config", f"base_url={fake.base_url}", "--config", "api_key=test-key",
                   "--config", "retry_delay=0.001", "--config", "max_retries=0", *extra,
                   traces=traces)
    assert done.returncode in (0, 7), done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def browser_job(traces: Path) -> dict[str, Any]:
    return eval_job(EXAMPLES / "browser" / "tasks.py", _browser_turn, traces,
                    "--config", "display_width=640", "--config", "display_height=400",
                    "--config", "max_tokens=1024")


def failing_job(traces: Path) -> dict[str, Any]:
    return eval_job(EXAMPLES / "letter_count" / "tasks.py", _letters_turn, traces)
