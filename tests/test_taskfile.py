"""MCP task files (the original SDK's v5 rows) run against a real stdio MCP server that each
task starts from its ``mcp_config``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hud.eval.taskset import Taskset

pytestmark = pytest.mark.anyio

SERVER = textwrap.dedent('''
    from mcp.server.mcpserver import MCPServer

    mcp = MCPServer("counter")
    state = {"n": 0}

    @mcp.tool()
    def setup(start: int = 0) -> str:
        state["n"] = start
        return f"the counter starts at {start}"

    @mcp.tool()
    def act() -> int:
        """Add one to the counter."""
        state["n"] += 1
        return state["n"]

    @mcp.tool()
    def peek() -> int:
        """The counter."""
        return state["n"]

    @mcp.tool()
    def evaluate(target: int) -> dict:
        return {"reward": 1.0 if state["n"] >= target else 0.0, "info": {"n": state["n"]}}

    @mcp.tool()
    def evaluate_text(target: int) -> str:
        return "0.25"

    mcp.run()
''')


def row(slug: str, start: int, **extra: Any) -> dict[str, Any]:
    return {"id": slug, "prompt": "Add one to the counter until it reaches 3.",
            "mcp_config": {"counter": {"command": "${V5_PYTHON}", "args": ["server.py"]}},
            "setup_tool": {"name": "setup", "arguments": {"start": start}},
            "evaluate_tool": {"name": "evaluate", "arguments": {"target": 3}},
            "metadata": {"difficulty": "easy"}, **extra}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "server.py").write_text(SERVER)
    monkeypatch.setenv("V5_PYTHON", sys.executable)
    return tmp_path


def hud(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], cwd=folder, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "V5_PYTHON": sys.executable})


def test_hud_eval_runs_a_jsonl_task_file_setup_then_evaluate(folder: Path) -> None:
    rows = [row("ready", 3), row("unready", 0),
            row("text", 0, evaluate_tool={"name": "evaluate_text", "arguments": {"target": 1}})]
    (folder / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = hud(folder, "eval", "tasks.jsonl", "nop", "--json", "--trace-dir", "traces")
    assert done.returncode == 0, done.stderr
    runs = {r["slug"]: r for r in json.loads(done.stdout)["runs"]}
    # setup ran in the same server the evaluate tool read: start=3 is already the target
    assert runs["ready"]["reward"] == 1.0 and runs["ready"]["info"] == {"n": 3}
    assert runs["unready"]["reward"] == 0.0
    assert runs["text"]["reward"] == 0.25  # a bare number as text
    assert runs["ready"]["args"]["row"]["metadata"] == {"difficulty": "easy"}
    # the row keeps ${V5_PYTHON}: the value is substituted where the server starts
    assert runs["ready"]["args"]["row"]["mcp_config"]["counter"]["command"] == "${V5_PYTHON}"


async def test_the_agent_sees_the_server_without_setup_and_evaluate(folder: Path) -> None:
    path = folder / "tasks.json"
    path.write_text(json.dumps([
        row("solve", 0, agent_config={"disallowed_tools": ["peek"]}),
        row("broken", 0, evaluate_tool={"name": "no_such_tool", "arguments": {}}),
    ]))
    seen: dict[str, Any] = {}

    async def agent(run: Any) -> None:
        tools = await run.client.open("mcp")
        if run.task.slug == "broken":
            return
        seen["tools"] = sorted(t.name for t in await tools.list_tools())
        seen["evaluate"] = await tools.call_tool("evaluate", {"target": 0})
        for _ in range(3):
            await tools.call_tool("act", {})
        run.answer = "done"

    job = await Taskset.from_file(path).run(agent, runtime="inprocess", max_concurrent=1)
    solved, broken = job.runs
    assert seen["tools"] == ["act", "evaluate_text"]
    assert seen["evaluate"].is_error
    assert "no tool named 'evaluate'" in seen["evaluate"].content[0].text
    assert solved.reward == 1.0 and solved.trace.info == {"n": 3}
    # an evaluate tool that fails is a grading error, never a reward
    assert broken.status == "error" and broken.reward is None
    assert broken.error.phase == "grade"
    assert "evaluate_tool 'no_such_tool' failed" in broken.error.message


async def test_an_unset_variable_fails_setup_naming_it(folder: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "tasks.json"
    path.write_text(json.dumps(row("solve", 0)))
    monkeypatch.delenv("V5_PYTHON")

    async def agent(run: Any) -> None:
        run.answer = ""

    job = await Taskset.from_file(path).run(agent, runtime="inprocess")
    (run,) = job.runs
    assert run.status == "error" and run.error.phase == "setup"
    assert "mcp_config.counter: ${V5_PYTHON} is used in mcp_config but not set" \
        in run.error.message


@pytest.mark.parametrize(("bad", "message"), [
    ({"evaluate_tool": None}, "tasks.json: row 2: evaluate_tool: must be a JSON object, not null"),
    ({"mcp_config": {"counter": {"command": "x", "url": "http://h/mcp"}}},
     "tasks.json: row 2: mcp_config.counter: needs exactly one of command or url"),
    ({"mcp_config": {"counter": {"command": "x", "args": "server.py"}}},
     "tasks.json: row 2: mcp_config.counter.args: must be a list of strings, not a string"),
    ({"agent_config": {"temperature": 0}},
     "tasks.json: row 2: agent_config.temperature is not supported (supported: allowed_tools, "
     "disallowed_tools, system_prompt, append_setup_output)"),
    ({"prompt": ""}, "tasks.json: row 2: prompt must be a non-empty string, not an empty string"),
])
def test_a_bad_row_is_named_with_its_field(folder: Path, bad: dict[str, Any],
                                           message: str) -> None:
    (folder / "tasks.json").write_text(json.dumps([row("fine", 0), row("bad", 0) | bad]))
    done = hud(folder, "eval", "tasks.json", "nop")
    assert (done.returncode, done.stderr, done.stdout) == (6, f"error: {message}\n", "")


async def test_a_url_server_gets_its_headers_with_variables_substituted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hud.capabilities.mcp import Tool
    from hud.capabilities.mcp.server import HttpService, ToolServer

    def evaluate() -> float:
        return 1.0

    tools = ToolServer("remote")
    tools.add(Tool(evaluate))
    app = tools.mcp.streamable_http_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"authorization", b"Bearer s3cret") not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    http = HttpService(guarded)
    await http.start()
    monkeypatch.setenv("V5_TOKEN", "s3cret")
    url = f"http://127.0.0.1:{http.port}/mcp"
    rows = [{"id": token, "prompt": "Nothing to do.", "evaluate_tool": {"name": "evaluate"},
             "mcp_config": {"remote": {"url": url, "headers": {"Authorization": token}}}}
            for token in ("Bearer ${V5_TOKEN}", "Bearer wrong")]
    (tmp_path / "tasks.json").write_text(json.dumps(rows))

    async def agent(run: Any) -> None:
        run.answer = ""

    try:
        job = await Taskset.from_file(tmp_path / "tasks.json").run(agent, runtime="inprocess")
    finally:
        await http.aclose()
    right, wrong = job.runs
    assert right.reward == 1.0
    assert wrong.status == "error" and wrong.error.phase == "setup"
    assert f"could not start an MCP session with {url}" in wrong.error.message
