"""Complete traces: what a real ``hud eval`` run leaves in the store, as ``hud trace --json``
prints it (task, agent and settings, tools offered, every model call, tool results in full,
images as content-addressed files, grade, phase timings, errors with their phase), and a
store written by the v1 schema opened by this code."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hud.harnesses.tool import ToolSpec
from traced_jobs import browser_job, failing_job, hud

from hud.eval.job import Job
from hud.eval.run import redacted
from hud.eval.store import SCHEMA_VERSION, TraceStore
from hud.eval.trace import Trace
from hud.view import transcript


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("traces") / "store"
    return root, {"browser": browser_job(root), "failing": failing_job(root)}


def shown(root: Path, trace_id: str) -> dict[str, Any]:
    done = hud("trace", trace_id, "--json", traces=root)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def steps(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [step for step in document["steps"] if step["kind"] == kind]


def test_hud_trace_json_prints_the_whole_run(traces: tuple[Path, dict[str, Any]]) -> None:
    root, jobs = traces
    run = jobs["browser"]["runs"][0]
    doc = shown(root, run["trace_id"])
    assert doc["version"] == 2 and doc["job_id"] == jobs["browser"]["job"]
    assert doc["group_id"] == run["group_id"]
    assert doc["task"] == {"env": "browser-form", "env_version": "1.0.0", "slug": run["slug"],
                           "template": "sign-up", "args": run["args"]}
    agent = doc["agent"]
    assert (agent["name"], agent["model"]) == ("claude", "claude-sonnet-4-6")
    assert agent["settings"]["max_tokens"] == 1024 and agent["settings"]["display_width"] == 640
    assert agent["settings"]["api_key"] == "<redacted>"
    assert [tool["name"] for tool in doc["tools"]] == ["computer"]
    assert {"description", "parameters"} <= set(doc["tools"][0])
    assert [p["phase"] for p in doc["phases"]] == ["environment", "setup", "agent", "grade"]
    for earlier, later in zip(doc["phases"], doc["phases"][1:], strict=False):
        assert earlier["started_at"] <= earlier["ended_at"] == later["started_at"]
    calls = steps(doc, "model")
    assert len(calls) == 4
    for call in calls:
        usage = call["data"]["usage"]  # the stand-in counts tokens and simulates the cache
        assert call["duration"] > 0 and usage["input_tokens"] > usage["output_tokens"] > 0
        assert call["data"]["response"]["type"] == "message"
        assert call["data"]["request"]["messages"] >= 1
    assert [c["data"]["stop_reason"] for c in calls] == ["tool_use"] * 3 + ["end_turn"]
    totals = {key: sum(c["data"]["usage"].get(key, 0) for c in calls)
              for key in calls[0]["data"]["usage"]}
    assert {key: doc["usage"][key] for key in totals} == totals
    assert doc["usage"]["cost_usd"] == pytest.approx(sum(c["data"]["cost_usd"] for c in calls))
    assert [s["name"] for s in doc["subscores"]] == ["submitted", "name", "email", "plan",
                                                     "terms"]
    assert steps(doc, "grade")[0]["data"]["info"] == doc["info"] == {"thanks": ""}
    assert doc["stored_at"]["root"] == str(root)
    table = hud("trace", run["trace_id"], traces=root).stdout
    assert re.search(r"phases +environment [\d.]+s · setup [\d.]+s · agent", table)
    assert re.search(r"tools +computer", table)


def test_screenshots_are_files_named_by_their_hash(
        traces: tuple[Path, dict[str, Any]]) -> None:
    root, jobs = traces
    run = jobs["browser"]["runs"][0]
    text = (root / "runs" / run["trace_id"] / "trace.json").read_text()
    assert "iVBORw0KGgo" not in text  # no base64 PNG inside the JSON
    doc = shown(root, run["trace_id"])
    images = [block for step in steps(doc, "tool_result") for block in step["data"]["content"]
              if block["type"] == "image"]
    assert len(images) == 3
    for block in images:
        assert "data" not in block and block["mime_type"] == "image/png"
        payload = (root / block["file"]).read_bytes()
        assert payload.startswith(b"\x89PNG")
        assert Path(block["file"]).stem == hashlib.sha256(payload).hexdigest()
    # Loading the trace back puts each image inline again, as the harness recorded it.
    with TraceStore(root) as store:
        loaded = store.trace(run["trace_id"])
        exported = next(row for row in store.export(jobs["browser"]["job"])
                        if row["trace_id"] == run["trace_id"])
    # The training export carries the images inline too (data URLs), read from the files.
    urls = [part["image"] for message in exported["messages"] if message["role"] == "tool"
            for part in message["content"] if part["type"] == "image"]
    assert len(urls) == 3 and base64.b64decode(urls[0].split(",", 1)[1]).startswith(b"\x89PNG")
    result = next(s for s in loaded.steps if s.kind == "tool_result")
    image = result.data["content"][1]
    assert base64.b64decode(image["data"]) == (root / images[0]["file"]).read_bytes()


def test_an_error_keeps_its_phase_and_the_work_before_it(
        traces: tuple[Path, dict[str, Any]]) -> None:
    root, jobs = traces
    refused = [r for r in jobs["failing"]["runs"] if r["status"] == "error"]
    assert len(refused) == 2
    doc = shown(root, refused[0]["trace_id"])
    assert doc["error"]["phase"] == "agent" and doc["error"]["type"] == "ModelAPIError"
    assert "prompt is too long" in doc["error"]["message"]
    assert steps(doc, "error")[0]["data"]["phase"] == "agent"
    assert [p["phase"] for p in doc["phases"]] == ["environment", "setup", "agent"]
    assert doc["phases"][-1]["ended_at"] is not None and "reward" not in doc


def test_tool_results_are_stored_in_full(tmp_path: Path) -> None:
    from test_store import count

    from hud.eval.run import Run

    run = Run(count())
    long = "x" * 300_000
    run.record("tool_result", tool_call_id="c", name="bash", content=long)
    run.trace.ended_at = run.trace.started_at
    with TraceStore(tmp_path) as store:
        store.save_run(run)
        assert store.trace(run.trace_id).steps[0].data["content"] == long
    # Views cut it (and say by how much); the store never does.
    (entry,) = transcript.entries(msgspec.to_builtins(run.trace), run.trace_id)
    assert entry["parts"][0]["cut"] == 300_000 - transcript.TEXT_LIMIT


def test_model_calls_usage_tools_and_settings_are_recorded_as_given() -> None:
    trace = Trace()
    trace.record_model_call(latency=0.5, content="hi", stop_reason="end_turn",
                            usage={"input_tokens": 100, "cached_input_tokens": 80,
                                   "output_tokens": 5, "cost_usd": 0.00125},
                            request={"model": "m", "temperature": 0.2, "messages": 3})
    trace.record_model_call(latency=0.25, usage={"input_tokens": 10, "cost_usd": 0.0005})
    assert trace.usage == {"input_tokens": 110, "cached_input_tokens": 80, "output_tokens": 5,
                           "cost_usd": pytest.approx(0.00175)}
    assert isinstance(trace.usage["input_tokens"], int)
    first = trace.steps[0]
    assert (first.kind, first.duration, first.data["stop_reason"]) == ("model", 0.5, "end_turn")
    trace.set_tools([ToolSpec("bash", "Run a command.", {"type": "object"}),
                     {"name": "add", "description": "", "parameters": {}}])
    assert trace.tools[0] == {"name": "bash", "description": "Run a command.",
                              "parameters": {"type": "object"}}
    assert redacted({"api_key": "k", "auth_token": "t", "max_tokens": 5, "temperature": 0.1}
                    ) == {"api_key": "<redacted>", "auth_token": "<redacted>", "max_tokens": 5,
                          "temperature": 0.1}


# -- a store written by the v1 code --------------------------------------------------------

# The schema as the v1 code created it (hud/eval/store.py before schema v2), verbatim.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, agent TEXT, model TEXT,
    group_size INTEGER NOT NULL DEFAULT 1, started_at REAL NOT NULL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS runs (
    trace_id TEXT PRIMARY KEY, job_id TEXT,
    env TEXT NOT NULL, slug TEXT NOT NULL, template TEXT NOT NULL, args TEXT NOT NULL,
    group_id TEXT NOT NULL, status TEXT NOT NULL,
    reward REAL,  -- NULL unless status = 'completed'
    error_phase TEXT, error_type TEXT, error_message TEXT, agent TEXT, model TEXT,
    started_at REAL NOT NULL, ended_at REAL, steps INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    usage TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, group_id);
CREATE INDEX IF NOT EXISTS jobs_by_start ON jobs (started_at);
"""
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
         "TkSuQmCC")


def v1_store(root: Path) -> None:
    """A store as the v1 code wrote it: one job, one run whose trace.json has no version, an
    inline base64 screenshot and a step file in the run's directory."""
    (root / "runs" / "t1").mkdir(parents=True)
    db = sqlite3.connect(root / "index.db")
    db.executescript(V1_SCHEMA + "PRAGMA user_version=1;")
    db.execute("INSERT INTO jobs VALUES ('job1', 'letters', 'scripted', 'tiny-1', 2, 100.0, "
               "110.0)")
    db.execute("INSERT INTO runs VALUES ('t1', 'job1', 'letters', 'count-1', 'count', "
               "'{\"word\": \"kiwi\"}', 'g1', 'completed', 1.0, NULL, NULL, NULL, 'scripted', "
               "'tiny-1', 100.0, 101.5, 4, 120, 30, '{\"input_tokens\": 120, \"cost_usd\": 0.5}')")
    db.commit()
    db.close()
    steps = [
        {"index": 0, "kind": "prompt", "time": 100.1, "data": {"prompt": "Count i in kiwi"}},
        {"index": 1, "kind": "model", "time": 100.5, "duration": 0.3,
         "data": {"content": "Let me look.", "tool_calls": [
             {"id": "c1", "name": "screen", "arguments": {}}]}},
        {"index": 2, "kind": "tool_result", "time": 100.6, "duration": 0.1,
         "data": {"tool_call_id": "c1", "content": [
             {"type": "image", "data": PIXEL, "mime_type": "image/png"}]},
         "files": {"screen.png": "2-screen.png"}},
        {"index": 3, "kind": "model", "time": 101.0, "data": {"content": "2"}},
    ]
    (root / "runs" / "t1" / "2-screen.png").write_bytes(base64.b64decode(PIXEL))
    document = {"id": "t1", "status": "completed", "steps": steps, "prompt": "Count i in kiwi",
                "answer": "2", "reward": 1.0, "subscores": [{"name": "exact", "score": 1.0}],
                "usage": {"input_tokens": 120}, "started_at": 100.0, "ended_at": 101.5}
    (root / "runs" / "t1" / "trace.json").write_text(json.dumps(document))


def test_a_v1_store_is_migrated_and_its_traces_read(tmp_path: Path) -> None:
    root = tmp_path / "old"
    v1_store(root)
    with TraceStore(root, create=False) as store:
        assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 3
        (job,) = store.jobs()
        assert (job["id"], job["runs"], job["reward"], job["cost_usd"]) == ("job1", 1, 1.0, 0.5)
        record = store.run("t1")
        assert record["env_version"] is None and record["cost"] == 0.5
        loaded = store.trace("t1")
        assert loaded.steps[2].files == {"screen.png": base64.b64decode(PIXEL)}
        (row,) = store.export("job1")
        assert row["messages"][-1]["content"] == [{"type": "text", "text": "2", "image": None}]
        assert row["messages"][2]["content"][0]["image"].endswith(PIXEL)
        # New runs go in beside the old ones.
        from test_store import count as count_template
        from test_store import make_run

        job2 = Job("letters")
        store.save_run(make_run(job2, count_template(), "g2", reward=0.0))
        assert len(store.jobs()) == 2
    doc = shown(root, "t1")
    assert doc["version"] == 1 and doc["job_id"] == "job1" and doc["group_id"] == "g1"
    assert doc["task"] == {"env": "letters", "slug": "count-1", "template": "count",
                           "args": {"word": "kiwi"}}
    assert doc["agent"] == {"name": "scripted", "model": "tiny-1"}
    # The viewer shows the old inline screenshot as it is.
    entries = transcript.entries(doc, "t1")
    assert entries[2]["parts"][0]["src"] == f"data:image/png;base64,{PIXEL}"
    assert entries[2]["files"][0]["url"] == "/runs/t1/files/2-screen.png"
    # Opened twice (a second process, say): the migration does not run again.
    with TraceStore(root) as again:
        assert len(again.jobs()) == 2


def test_workspace_edits_read_as_diffs() -> None:
    document = {"steps": [{"kind": "model", "data": {"tool_calls": [
        {"id": "a", "name": "str_replace_based_edit_tool", "arguments": {
            "command": "str_replace", "path": "app.py", "old_str": "print('hi')",
            "new_str": "print('bye')"}},
        {"id": "b", "name": "apply_patch", "arguments": json.dumps({
            "path": "new.py", "diff": "@@\n-old line\n+new line\n"})},
        {"id": "c", "name": "bash", "arguments": {"command": "ls"}},
    ]}}]}
    first, second = transcript.edits(document)
    assert first == {"path": "app.py", "lines": [("@", "@@ -1 +1 @@"), ("-", "-print('hi')"),
                                                 ("+", "+print('bye')")]}
    assert second["path"] == "new.py" and ("+", "+new line") in second["lines"]
