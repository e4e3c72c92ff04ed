"""Real jobs for the interchange tests (ATIF files, OpenTelemetry traces): ``hud eval`` in a
subprocess, writing a real trace store.

* :func:`tool_job`: ``examples/coding``'s ``count_with_tools`` tasks with the
  ``openai_compatible`` harness against the fake Chat Completions API
  (:mod:`fakes.chat_completions`): each run is a model turn calling ``count_letter`` (the
  environment's real MCP tool), its result, and a model turn answering with it.
* :func:`oracle_job`: ``examples/letter_count`` with the oracle (no model calls).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakes.chat_completions import call, reply, serve_chat_completions

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fake-model"


def hud(*args: str, traces: Path, env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HUD_TRACE_DIR": str(traces), **(env or {})}
    for name in ("OPENAI_BASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if name not in (env or {}):
            environ.pop(name, None)
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True,
                          text=True, timeout=180, env=environ, cwd=cwd, check=False)


def count_with_the_tool(body: dict[str, Any]) -> Any:
    """Call ``count_letter`` on the prompt's word, then answer with what it returned."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return reply(str(last["content"]).strip(), usage=(40, 3))
    letter, word = re.findall(r"'([^']*)'", last["content"])[:2]
    return reply("Counting.", tool_calls=[call("count_letter", {"text": word, "letter": letter},
                                               id="call_count")], usage=(30, 7))


def tool_job(traces: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``--json`` summary of the ``count_with_tools`` job (two runs)."""
    with serve_chat_completions(count_with_the_tool) as server:
        done = hud("eval", "examples/coding/tasks.py", "openai_compatible", "--model", MODEL,
                   "--config", f"base_url={server.base_url}", "--config", "temperature=0.2",
                   "--task-ids", "count_with_tools", "--runtime", "inprocess", "--json",
                   *extra, traces=traces, env=env)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    assert [run["reward"] for run in summary["runs"]] == [1.0, 1.0], summary
    return summary


def oracle_job(traces: Path, *extra: str, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    done = hud("eval", "examples/letter_count/tasks.py", "oracle", "--runtime", "inprocess",
               "--json", *extra, traces=traces, env=env)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary
