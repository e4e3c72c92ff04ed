"""``hud export JOB --format atif``: one ATIF trajectory per run, each validated by Harbor's
own ``harbor.models.trajectories.Trajectory`` (the real ``harbor`` package, which needs
Python >= 3.12: it lives in its own venv, ``.venv-harbor``, that ``.ci/install`` prepares and
this module creates when it is missing)."""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from interchange_jobs import MODEL, ROOT, hud, oracle_job, tool_job
from test_store import png

from hud import Environment
from hud.eval.atif import ATIF_VERSION
from hud.eval.job import Job
from hud.eval.run import Run
from hud.eval.store import TraceStore
from hud.protocol.messages import GradeResult, StartResult, Subscore, TaskRef

HARBOR_VENV = ROOT / ".venv-harbor"

VALIDATE = textwrap.dedent("""
    import json, sys, typing
    from harbor.models.trajectories import Trajectory
    versions = typing.get_args(Trajectory.model_fields["schema_version"].annotation)
    out = {"versions": list(versions), "files": {}}
    for path in sys.argv[1:]:
        text = open(path).read()
        try:
            trajectory = Trajectory.model_validate_json(text)
        except Exception as exc:
            out["files"][path] = {"error": str(exc)}
            continue
        out["files"][path] = {"dumped": trajectory.to_json_dict(),
                              "multimodal": trajectory.has_multimodal_content()}
    print(json.dumps(out))
""")


def harbor_python() -> str:
    """The python of a venv holding ``harbor``: ``.venv-harbor``, made here from a Python
    >= 3.12 (pyenv's, else one on PATH) when it is not there yet."""
    python = HARBOR_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import harbor"],
                                          capture_output=True, check=False).returncode == 0:
        return str(python)
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")))
    candidates += [f"/usr/bin/python3.{minor}" for minor in range(12, 20)]
    found = [path for path in candidates if os.path.exists(path)]
    if not found:
        pytest.skip("harbor needs Python >= 3.12, and none is installed")
    subprocess.run([found[0], "-m", "venv", "--clear", HARBOR_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "harbor"], check=True, timeout=900)
    return str(python)


def validate(paths: list[Path]) -> dict[str, Any]:
    """Harbor's verdict on each file, and the schema versions its model accepts."""
    done = subprocess.run([harbor_python(), "-c", VALIDATE, *map(str, paths)],
                          capture_output=True, text=True, check=True, timeout=120)
    verdict: dict[str, Any] = json.loads(done.stdout)
    for path, result in verdict["files"].items():
        assert "error" not in result, f"{path}: {result['error']}"
        # Harbor's model reads the file back to the same document: nothing dropped or coerced
        assert result["dumped"] == json.loads(Path(path).read_text()), path
    return verdict


def export(traces: Path, job_id: str, output: Path) -> list[Path]:
    done = hud("export", job_id[:8], "--format", "atif", "--output", str(output),
               traces=traces)
    assert done.returncode == 0, done.stderr
    return [Path(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def tool_trajectories(tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("atif")
    summary = tool_job(base / "store")
    paths = export(base / "store", summary["job"], base / "out")
    assert sorted(path.name for path in paths) == sorted(
        f"{run['trace_id']}.json" for run in summary["runs"])
    validate(paths)
    return summary, {path.stem: json.loads(path.read_text()) for path in paths}


def test_the_version_is_the_newest_that_harbor_accepts() -> None:
    versions = validate([])["versions"]
    newest = max(versions, key=lambda v: tuple(int(n) for n in v.split("-v")[1].split(".")))
    assert newest == ATIF_VERSION


def test_a_tool_run_reads_as_prompt_tool_call_observation_answer(
        tool_trajectories: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    summary, documents = tool_trajectories
    run = summary["runs"][0]
    trajectory = documents[run["trace_id"]]
    word, letter = run["args"]["word"], run["args"]["letter"]
    assert trajectory["schema_version"] == ATIF_VERSION
    assert trajectory["session_id"] == trajectory["trajectory_id"] == run["trace_id"]
    prompt, call, answer = trajectory["steps"]
    assert prompt["source"] == "user" and word in prompt["message"]
    assert call["source"] == "agent" and call["message"] == "Counting."
    assert call["tool_calls"] == [{"tool_call_id": "call_count", "function_name": "count_letter",
                                   "arguments": {"text": word, "letter": letter}}]
    assert call["observation"] == {"results": [
        {"source_call_id": "call_count", "content": str(word.count(letter))}]}
    assert call["metrics"] == {"prompt_tokens": 30, "completion_tokens": 7}
    assert call["extra"]["stop_reason"] == "tool_calls" and call["extra"]["latency_s"] > 0
    assert call["llm_call_count"] == 1
    assert answer["source"] == "agent" and answer["message"] == str(word.count(letter))
    assert "tool_calls" not in answer and answer["metrics"]["prompt_tokens"] == 40
    assert [step["step_id"] for step in trajectory["steps"]] == [1, 2, 3]
    assert all(step["timestamp"].endswith("+00:00") for step in trajectory["steps"])


def test_agent_model_tools_usage_and_reward(
        tool_trajectories: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    summary, documents = tool_trajectories
    run = summary["runs"][1]
    trajectory = documents[run["trace_id"]]
    agent = trajectory["agent"]
    assert agent["name"] == "openai_compatible" and agent["model_name"] == MODEL
    assert agent["extra"]["settings"]["temperature"] == 0.2
    names = [tool["function"]["name"] for tool in agent["tool_definitions"]]
    assert {"count_letter", "reverse"} <= set(names)  # the environment's tools, with its shell's
    count = agent["tool_definitions"][names.index("count_letter")]
    assert count["type"] == "function" and count["function"]["description"].startswith("Count")
    assert set(count["function"]["parameters"]["properties"]) == {"text", "letter"}
    assert trajectory["final_metrics"] == {
        "total_prompt_tokens": 70, "total_completion_tokens": 10, "total_steps": 3,
        "extra": {"reward": 1.0, "status": "completed"}}
    hud_extra = trajectory["extra"]["hud"]
    assert hud_extra["job_id"] == summary["job"] and hud_extra["group_id"] == run["group_id"]
    assert hud_extra["task"]["slug"] == run["slug"]
    assert [phase["phase"] for phase in hud_extra["phases"]] == [
        "environment", "setup", "agent", "grade"]


def test_an_oracle_run_ends_with_its_answer(tmp_path: Path) -> None:
    summary = oracle_job(tmp_path / "store")
    paths = export(tmp_path / "store", summary["job"], tmp_path / "out")
    validate(paths)
    for run in summary["runs"]:
        trajectory = json.loads((tmp_path / "out" / f"{run['trace_id']}.json").read_text())
        prompt, answer = trajectory["steps"]
        assert prompt["source"] == "user" and run["args"]["word"] in prompt["message"]
        assert answer == {"step_id": 2, "timestamp": answer["timestamp"], "source": "agent",
                          "message": run["answer"], "llm_call_count": 0,
                          "extra": {"hud_kind": "answer"}}
        assert trajectory["agent"] == {"name": "oracle", "version": trajectory["agent"]["version"]}
        assert trajectory["final_metrics"]["extra"]["reward"] == 1.0


# -- images, cost, errors: runs recorded through the engine's own transitions ------------------

env = Environment("pictures", version="2.0.0")


@env.template()
async def describe(name: str = "grey"):
    answer = yield f"What colour is {name}?"
    yield 1.0 if answer == name else 0.0


SCREEN = png(3, 2)
PHOTO = png(1, 1)


def image(payload: bytes) -> dict[str, Any]:
    return {"type": "image", "data": base64.b64encode(payload).decode(), "mime_type": "image/png"}


def pictured_runs(job: Job) -> list[Run]:
    """One graded run with images in its prompt and its tool result, cost and cached tokens;
    one that failed in the agent phase after a tool result."""
    runs = []
    for fails in (False, True):
        run = Run(describe(), group_id="g")
        run.job_id, run.agent_name, run.model = job.id, "scripted", "tiny-1"
        ref = TaskRef(template="describe", args={})
        run.started(StartResult(session_id="s", task=ref, prompt=[
            {"type": "text", "text": "What colour is this?"}, image(PHOTO)]))
        run.record("message", role="system", content="You look at pictures.")
        run.record_model_call(
            latency=0.5, content=None, stop_reason="tool_use", reasoning="Look first.",
            tool_calls=[{"id": "t1", "name": "screenshot", "arguments": "{}"}],
            usage={"input_tokens": 100, "cached_input_tokens": 60, "output_tokens": 9,
                   "reasoning_tokens": 4, "cost_usd": 0.0125})
        run.record("tool_result", 0.02, tool_call_id="t1", name="screenshot", is_error=False,
                   content=[{"type": "text", "text": "the screen"}, image(SCREEN)])
        if fails:
            run.failed("error", "agent", ConnectionError("model server unreachable"))
        else:
            run.record_model_call(latency=0.1, content="grey", stop_reason="end_turn",
                                  usage={"input_tokens": 50, "output_tokens": 1})
            run.answer = "grey"
            run.graded(GradeResult(session_id="s", task=ref, reward=1.0, info={"seen": True},
                                   subscores=[Subscore(name="colour", score=1.0)]))
        runs.append(run)
    return runs


def test_images_are_files_next_to_the_trajectory_and_errors_a_system_step(
        tmp_path: Path) -> None:
    job = Job("pictures", agent="scripted", model="tiny-1")
    with TraceStore(tmp_path / "store") as store:
        store.begin_job(job)
        graded, failed = pictured_runs(job)
        store.save_run(graded)
        store.save_run(failed)
    out = tmp_path / "out"
    paths = export(tmp_path / "store", job.id, out)
    verdict = validate(paths)
    assert all(result["multimodal"] for result in verdict["files"].values())
    document = json.loads((out / f"{graded.trace_id}.json").read_text())
    system, prompt, look, answer = document["steps"]
    assert system == {"step_id": 1, "timestamp": system["timestamp"], "source": "system",
                      "message": "You look at pictures."}
    photo = prompt["message"][1]["source"]
    assert prompt["message"][0] == {"type": "text", "text": "What colour is this?"}
    assert (out / photo["path"]).read_bytes() == PHOTO and photo["media_type"] == "image/png"
    assert not Path(photo["path"]).is_absolute() and photo["path"].startswith("images/")
    assert look["message"] == "" and look["reasoning_content"] == "Look first."
    assert look["metrics"] == {"prompt_tokens": 100, "completion_tokens": 9, "cached_tokens": 60,
                               "cost_usd": 0.0125, "extra": {"reasoning_tokens": 4}}
    (result,) = look["observation"]["results"]
    screen = result["content"][1]["source"]
    assert (out / screen["path"]).read_bytes() == SCREEN
    assert answer["message"] == "grey" and answer["llm_call_count"] == 1
    assert document["final_metrics"] == {
        "total_prompt_tokens": 150, "total_completion_tokens": 10, "total_cached_tokens": 60,
        "total_cost_usd": 0.0125, "total_steps": 4,
        "extra": {"reward": 1.0, "subscores": [{"name": "colour", "score": 1.0}],
                  "info": {"seen": True}, "status": "completed"}}

    broken = json.loads((out / f"{failed.trace_id}.json").read_text())
    last = broken["steps"][-1]
    assert last["source"] == "system"
    assert last["message"] == ("the run failed during agent: ConnectionError: "
                               "model server unreachable")
    assert broken["final_metrics"]["extra"] == {
        "status": "error", "error": {"phase": "agent", "type": "ConnectionError",
                                    "message": "model server unreachable"}}
    assert "reward" not in broken["final_metrics"]["extra"]


def test_an_unknown_format_or_job_is_a_usage_error(tmp_path: Path) -> None:
    job = Job("pictures")
    with TraceStore(tmp_path) as store:
        store.begin_job(job)
    done = hud("export", job.id, "--format", "parquet", traces=tmp_path)
    assert done.returncode == 2 and "unknown export format 'parquet'" in done.stderr
    done = hud("export", "nope", "--format", "atif", traces=tmp_path)
    assert done.returncode == 2 and "no job with id 'nope'" in done.stderr


def test_the_default_directory_is_named_after_the_job(tmp_path: Path) -> None:
    job = Job("pictures", agent="scripted")
    with TraceStore(tmp_path / "store") as store:
        store.begin_job(job)
        runs = pictured_runs(job)
        for run in runs:
            store.save_run(run)
    done = hud("export", job.id[:6], "--format", "atif", traces=tmp_path / "store",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = sorted(Path(line) for line in done.stdout.splitlines())
    assert written == sorted(Path(f"atif-{job.id}") / f"{run.trace_id}.json"
                             for run in runs)
    validate([tmp_path / path for path in written])


def test_a_run_that_recorded_nothing_is_still_a_valid_trajectory(tmp_path: Path) -> None:
    job = Job("pictures")
    run = Run(describe(), group_id="g")  # saved before it started: no steps, no answer
    run.job_id = job.id
    with TraceStore(tmp_path / "store") as store:
        store.begin_job(job)
        store.save_run(run)
    (path,) = export(tmp_path / "store", job.id, tmp_path / "out")
    validate([path])
    assert json.loads(path.read_text())["steps"] == [
        {"step_id": 1, "source": "system", "message": "the run recorded no steps (status pending)"}]
