"""The trace store: SQLite index + trace files, prefix lookup, training export, the CLI."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hud import Environment
from hud.cli.traces import register
from hud.errors import StoreError, UnknownId
from hud.eval.job import Job, group_relative
from hud.eval.run import Run
from hud.eval.store import SCHEMA_VERSION, TraceStore, trace_messages
from hud.protocol.messages import GradeResult, StartResult, Subscore, TaskRef, TextBlock

env = Environment("letters", version="1.0.0")


@env.template()
async def count(word: str = "strawberry", letter: str = "r"):
    """Count how often a letter occurs in a word."""
    answer = yield f"How many {letter!r} in {word!r}?"
    yield 1.0 if str(word.count(letter)) == answer else 0.0


def png(width: int = 2, height: int = 1) -> bytes:
    """A real (tiny, grey) PNG image."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


SCREEN = png()


def make_run(job: Job, task: Any, group_id: str, *, reward: float | None,
             prompt: Any = None, trace_id: str | None = None) -> Run:
    """A run that went through the engine's real transitions: started, agent steps, graded
    (or failed in the agent phase when ``reward`` is None)."""
    run = Run(task, group_id=group_id)
    if trace_id:
        run.trace.id = trace_id
    run.job_id, run.agent_name, run.model = job.id, "scripted", "tiny-1"
    ref = TaskRef(template=task.id, args=task.args)
    run.started(StartResult(session_id="s1", task=ref, prompt=prompt or f"Count in {task.slug}"))
    run.record("model", duration=0.25, content="Let me look.",
               tool_calls=[{"id": "call_1", "name": "bash", "arguments": {"cmd": "echo 3"}}])
    run.record("tool_result", duration=0.01, tool_call_id="call_1", name="bash", content="3",
               files={"screen.png": SCREEN})
    run.trace.add_usage(input_tokens=120, output_tokens=30)
    if reward is None:
        run.failed("error", "agent", ConnectionError("model server unreachable"))
    else:
        run.record("model", duration=0.1, content="3")
        run.answer = "3"
        run.graded(GradeResult(session_id="s1", task=ref, reward=reward,
                               subscores=[Subscore(name="exact", score=reward)]))
    job.runs.append(run)
    return run


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with TraceStore(tmp_path / "traces") as opened:
        yield opened


def saved_job(store: TraceStore) -> Job:
    """Two tasks: a group of three completed + one errored, and a group of two."""
    job = Job("letters", group=4, agent="scripted", model="tiny-1")
    store.begin_job(job)
    first, second = count(word="banana", letter="a"), count()
    for reward in (1.0, 0.0, 0.5, None):
        store.save_run(make_run(job, first, "group-a", reward=reward))
    for reward in (1.0, 1.0):
        store.save_run(make_run(job, second, "group-b", reward=reward))
    store.end_job(job)
    return job


def test_trace_round_trip_with_files(store: TraceStore) -> None:
    job = saved_job(store)
    run = job.runs[0]
    record = store.run(run.trace_id)
    assert record["slug"] == run.task.slug and record["template"] == "count"
    assert record["args"] == {"word": "banana", "letter": "a"}
    assert (record["status"], record["reward"], record["steps"]) == ("completed", 1.0, 5)
    assert (record["agent"], record["model"], record["job_id"]) == ("scripted", "tiny-1", job.id)
    assert (record["input_tokens"], record["output_tokens"]) == (120, 30)
    directory = store.root / "runs" / run.trace_id
    assert record["dir"] == str(directory)
    tool_step = record["trace"]["steps"][2]
    assert tool_step["files"] == {"screen.png": "2-screen.png"}
    assert (directory / "2-screen.png").read_bytes() == SCREEN
    assert json.loads((directory / "trace.json").read_text())["steps"][2]["files"] == {
        "screen.png": "2-screen.png"}
    assert store.trace(run.trace_id) == run.trace  # bytes back in place, every field equal


def test_errored_run_has_null_reward_and_its_phase(store: TraceStore) -> None:
    job = saved_job(store)
    errored, mean = job.runs[3], job.reward
    errored.trace.reward = 0.0  # even if something set one: an infrastructure failure is no 0
    store.save_run(errored)
    record = store.run(errored.trace_id)
    assert record["status"] == "error" and record["reward"] is None
    assert (record["error_phase"], record["error_type"]) == ("agent", "ConnectionError")
    assert record["error_message"] == "model server unreachable"
    summary = store.jobs()[0]
    assert (summary["runs"], summary["completed"], summary["errors"]) == (6, 5, 1)
    assert summary["reward"] == pytest.approx(mean) == pytest.approx(3.5 / 5)
    assert summary["ended_at"] is not None and summary["group"] == 4


def test_save_run_is_idempotent_per_trace_id(store: TraceStore) -> None:
    job = saved_job(store)
    run = job.runs[1]
    run.record("note", text="saved again")
    store.save_run(run)
    store.save_run(run)
    assert store.job(job.id)["runs"] == 6
    assert store.run(run.trace_id)["steps"] == 6


def test_prefix_lookup(store: TraceStore) -> None:
    job = Job("prefixes", id="feedbeef" + "0" * 24)
    store.begin_job(job)
    task = count()
    for trace_id in ("abc1" + "0" * 28, "abc2" + "0" * 28, "def0" + "0" * 28):
        store.save_run(make_run(job, task, "g", reward=1.0, trace_id=trace_id))
    assert store.run("def")["trace_id"] == "def0" + "0" * 28
    assert store.run("abc1" + "0" * 28)["trace_id"].startswith("abc1")
    with pytest.raises(UnknownId, match=r"ambiguous: abc1.*abc2"):
        store.run("abc")
    with pytest.raises(UnknownId, match="no run with id 'zzz'"):
        store.run("zzz")
    assert store.job("feed")["id"] == job.id
    assert [r["trace_id"][:4] for r in store.job("feed")["traces"]] == ["abc1", "abc2", "def0"]
    with pytest.raises(UnknownId, match="no job"):
        store.job("0000")
    with pytest.raises(ValueError, match="not a plain name"):
        store.save_run(make_run(job, task, "g", reward=1.0, trace_id="../escape"))


def test_runs_without_a_begun_job_get_a_bare_job_row(store: TraceStore) -> None:
    job = Job("never begun")
    store.save_run(make_run(job, count(), "g", reward=0.0))
    assert store.job(job.id)["runs"] == 1
    assert store.jobs()[0]["name"] == job.id


def test_export_messages_and_advantages(store: TraceStore) -> None:
    job = saved_job(store)
    rows = list(store.export(job.id[:8]))
    assert len(rows) == 5  # the errored run is left out
    assert {row["trace_id"] for row in rows} == {r.trace_id for r in job.runs if not r.errored}
    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_group.setdefault(row["group_id"], []).append(row)
    for members in by_group.values():
        expected = group_relative([row["reward"] for row in members], normalize_std=True)
        assert [row["advantage"] for row in members] == pytest.approx(expected)
    a = sorted(by_group["group-a"], key=lambda row: -row["reward"])
    assert [row["advantage"] for row in a] == pytest.approx([1.224744871, 0.0, -1.224744871])
    assert [row["advantage"] for row in by_group["group-b"]] == [0.0, 0.0]
    row = a[0]
    assert row["job_id"] == job.id and row["reward"] == 1.0
    assert row["task"] == {"env": "letters", "slug": job.runs[0].task.slug, "id": "count",
                           "args": '{"word":"banana","letter":"a"}'}  # JSON text: any args
    assert row["messages"] == [
        message("user", [text(f"Count in {job.runs[0].task.slug}")]),
        {**message("assistant", [text("Let me look.")]), "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "bash", "arguments": '{"cmd":"echo 3"}'}}]},
        message("tool", [text("3")], tool_call_id="call_1", name="bash"),
        message("assistant", [text("3")]),
    ]
    unnormalized = list(store.export(job.id, normalize_std=False))
    assert sorted(r["advantage"] for r in unnormalized if r["group_id"] == "group-a") == \
        pytest.approx([-0.5, 0.0, 0.5])


def test_export_of_block_prompts_and_conversations(store: TraceStore) -> None:
    job = Job("blocks")
    prompt = [TextBlock(text="What is shown?")]
    run = make_run(job, count(), "g", reward=1.0, prompt=prompt)
    run.trace.steps[0].data["prompt"].append(
        {"type": "image", "data": "iVBORw0KGgo=", "mime_type": "image/png"})
    run.record("message", role="system", content="Be terse.")
    store.save_run(run)
    messages = next(store.export(job.id))["messages"]
    assert messages[0] == message("system", [text("Be terse.")])
    assert messages[1] == message("user", [
        text("What is shown?"),
        {"type": "image", "text": None, "image": "data:image/png;base64,iVBORw0KGgo="}])
    conversation = {"steps": [{"index": 0, "kind": "prompt", "time": 0.0, "data": {
        "prompt": "Hi?", "messages": [{"role": "system", "content": "Be kind."},
                                      {"role": "user", "content": "Hi?"}]}},
        {"index": 1, "kind": "grade", "time": 0.0, "data": {"reward": 1.0}}]}
    assert trace_messages(conversation) == [message("system", [text("Be kind.")]),
                                            message("user", [text("Hi?")])]


def text(value: str) -> dict[str, Any]:
    """A text part of an exported message."""
    return {"type": "text", "text": value, "image": None}


def message(role: str, content: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """An exported message: every key present, in every message (one Arrow schema)."""
    return {"role": role, "content": content, "tool_calls": [],
            "tool_call_id": fields.get("tool_call_id"), "name": fields.get("name"),
            "token_ids": None, "tokens": None, "logprobs": None}


def test_two_stores_on_one_directory_write_concurrently(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    stores = [TraceStore(root), TraceStore(root)]
    job = Job("concurrent", group=1)
    stores[0].begin_job(job)
    task = count()
    runs = [[make_run(job, task, f"g{i}", reward=i % 2 * 1.0) for i in range(40)]
            for _ in stores]
    failures: list[BaseException] = []

    def write(store: TraceStore, batch: list[Run]) -> None:
        try:
            for run in batch:
                store.save_run(run)
        except BaseException as exc:  # surfaced below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(stores, runs,
                                                                           strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    stores[1].end_job(job)
    for store in stores:
        assert store.job(job.id)["runs"] == 80 and store.jobs()[0]["ended_at"] is not None
        store.close()
    with sqlite3.connect(root / "index.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_root_from_env_missing_store_and_newer_schema(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUD_TRACE_DIR", str(tmp_path / "from-env"))
    with pytest.raises(StoreError, match="no trace store"):
        TraceStore(create=False)
    with TraceStore() as store:
        assert store.root == tmp_path / "from-env"
    with sqlite3.connect(tmp_path / "from-env" / "index.db") as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="upgrade hud"):
        TraceStore()


# -- the commands -----------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Job:
    monkeypatch.setenv("HUD_TRACE_DIR", str(tmp_path / "traces"))
    with TraceStore() as store:
        return saved_job(store)


def test_cli_jobs(filled: Job) -> None:
    runner = CliRunner()
    table = runner.invoke(cli(), ["jobs"])
    assert table.exit_code == 0, table.output
    assert "letters" in table.stdout and filled.id[:12] in table.stdout
    listed = json.loads(runner.invoke(cli(), ["jobs", "--json", "--limit", "5"]).stdout)
    assert listed[0]["id"] == filled.id and listed[0]["errors"] == 1
    one = runner.invoke(cli(), ["jobs", filled.id[:6]])
    assert one.exit_code == 0 and "agent: ConnectionError" in one.stdout
    detail = json.loads(runner.invoke(cli(), ["jobs", filled.id[:6], "--json"]).stdout)
    assert len(detail["traces"]) == 6


def test_cli_trace(filled: Job) -> None:
    runner = CliRunner()
    errored = filled.runs[3]
    shown = runner.invoke(cli(), ["trace", errored.trace_id[:10]])
    assert shown.exit_code == 0, shown.output
    for text in (errored.task.slug, "error in agent: ConnectionError", "tool_result",
                 "2-screen.png", "bash("):
        assert text in shown.stdout
    graded = runner.invoke(cli(), ["trace", filled.runs[0].trace_id])
    assert "exact" in graded.stdout and "1.000" in graded.stdout
    stored = json.loads(runner.invoke(cli(), ["trace", errored.trace_id, "--json"]).stdout)
    assert stored["id"] == errored.trace_id and stored["error"]["phase"] == "agent"


def test_cli_export(filled: Job, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli(), ["export", filled.id])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5 and {"messages", "reward", "group_id", "advantage"} <= set(rows[0])
    output = tmp_path / "out.jsonl"
    written = runner.invoke(cli(), ["export", filled.id[:8], "--output", str(output)])
    assert written.stdout == "" and "wrote 5 rows" in written.stderr
    assert output.read_text().splitlines() == result.stdout.splitlines()


def test_cli_not_found_is_a_usage_error(filled: Job, tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (["trace", "nope"], ["jobs", "nope"], ["export", "nope"]):
        result = runner.invoke(cli(), args)
        assert result.exit_code == 2 and "error: no " in result.stderr, args
    missing = runner.invoke(cli(), ["jobs", "--trace-dir", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "no trace store" in missing.stderr
    assert not (tmp_path / "absent").exists()


def test_cli_in_a_subprocess_imports_lean(filled: Job, tmp_path: Path) -> None:
    code = ("import sys, typer; from hud.cli.traces import register; "
            "lean = not {'sqlite3', 'rich', 'hud.eval.store'} & set(sys.modules); "
            "sys.stderr.write(f'lean={lean}\\n'); app = typer.Typer(); register(app); app()")
    result = subprocess.run([sys.executable, "-c", code, "jobs", "--json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "lean=True" in result.stderr
    assert json.loads(result.stdout)[0]["id"] == filled.id


def test_a_job_status_and_plan_are_recorded_and_listed(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "traces") as store:
        job = saved_job(store)  # recorded without a status, as before there was one
        assert store.jobs()[0]["status"] == "completed"  # it has an end time
        unended = Job("unended")
        store.begin_job(unended)
        assert store.job(unended.id)["status"] == "unfinished"
        store.set_job_status(job.id, "running", {"group": 4, "tasks": []})
        store.set_job_status(job.id, "interrupted")  # the plan stays
        assert store.job(job.id)["status"] == "interrupted"
        assert store.job_plan(job.id) == {"group": 4, "tasks": []}
        assert store.job_plan(unended.id) is None
        with pytest.raises(ValueError, match="not one of running, completed, interrupted"):
            store.set_job_status(job.id, "paused")
    with TraceStore(tmp_path / "traces", create=False) as reopened:  # kept on disk
        assert {row["id"]: row["status"] for row in reopened.jobs()} == {
            job.id: "interrupted", unended.id: "unfinished"}
