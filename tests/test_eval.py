"""The eval engine end to end: tasksets, runtimes, rollouts, jobs, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import eval_env
import pytest
from conftest import serving

from hud.agents import Agent, available, create_agent
from hud.eval import (
    InProcessRuntime,
    PoolRuntime,
    SubprocessRuntime,
    Taskset,
    UrlRuntime,
    group_relative,
)
from hud.eval.run import Run
from hud.eval.schema import SCHEMA_VERSION
from hud.eval.store import TraceStore
from hud.loader import load_environment

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "letter_count"


class Scripted(Agent):
    """Answers from a function of the run; optionally sleeps or raises first."""

    name = "scripted"

    def __init__(self, answer=None, *, sleep: float = 0.0, raises: Exception | None = None):
        super().__init__()
        self.answer, self.sleep, self.raises = answer, sleep, raises

    async def __call__(self, run: Run) -> None:
        run.record("model", content="thinking", tool_calls=[])
        await asyncio.sleep(self.sleep)
        if self.raises is not None:
            raise self.raises
        run.answer = self.answer(run) if callable(self.answer) else self.answer


def words() -> Taskset:
    return Taskset(eval_env.count_letter(word=w, letter="r")
                   for w in ("strawberry", "raspberry", "cranberry"))


@pytest.mark.parametrize("make", [InProcessRuntime, SubprocessRuntime, PoolRuntime])
async def test_oracle_scores_one_on_every_runtime(make) -> None:
    runtime = make(solutions=True)
    job = await words().run(create_agent("oracle"), runtime=runtime, max_concurrent=3)
    assert [run.reward for run in job.runs] == [1.0, 1.0, 1.0]
    assert all(run.status == "completed" and run.error is None for run in job.runs)
    assert job.reward == 1.0


async def test_url_runtime_attaches_to_a_served_environment() -> None:
    async with serving(eval_env.env, token="t0k", enable_solutions=True) as server:
        runtime = UrlRuntime(server.url, token="t0k", solutions=True)
        job = await words().run(create_agent("oracle"), runtime=runtime)
    assert job.reward == 1.0


async def test_pool_gives_every_rollout_a_fresh_process() -> None:
    tasks = Taskset([eval_env.whoami()])
    pool = await tasks.run(Scripted("ok"), group=6, runtime=PoolRuntime(size=3))
    prompts = [run.trace.prompt.split() for run in pool.runs]
    assert len({pid for pid, _ in prompts}) == 6  # six processes
    assert {starts for _, starts in prompts} == {"1"}  # each one fresh
    shared = await tasks.run(Scripted("ok"), group=3, runtime=InProcessRuntime())
    assert sorted(int(run.trace.prompt.split()[1]) for run in shared.runs)[-1] >= 3


async def test_a_pool_worker_serves_its_rollout_on_one_thread() -> None:
    # uvloop resolves "127.0.0.1" for create_server with libuv's thread pool: four threads
    # started in every worker, for nothing
    task = eval_env.whoami()
    async with PoolRuntime(size=1) as pool, pool.open(task) as client:
        started = await client.start(task.id, task.args)
        pid = int(str(started.prompt).split()[0])
        assert os.listdir(f"/proc/{pid}/task") == [str(pid)]
        assert (await client.grade("ok")).reward == 1.0


async def test_a_pool_whose_zygote_was_killed_starts_another(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(
        "import os, signal\n"
        "from hud import Environment\n"
        "env = Environment('zygote-killer')\n"
        "@env.template()\n"
        "async def kill(n: int):\n"
        "    if n == 0:\n"
        "        os.kill(os.getppid(), signal.SIGKILL)  # the zygote\n"
        "        os._exit(1)\n"
        "    yield 'say ok'\n"
        "    yield 1.0\n"
        "tasks = [kill(n=n) for n in range(4)]\n")
    tasks = Taskset.from_source(tmp_path / "env.py")
    async with PoolRuntime(size=1) as pool:
        async with asyncio.timeout(60):  # the old pool waited for a dead zygote forever
            job = await tasks.run(Scripted("ok"), runtime=pool, max_concurrent=1)
    assert job.runs[0].error.phase == "setup"
    # the next rollout may still get the worker the dead zygote had ready; after it, a new
    # zygote serves
    assert [run.reward for run in job.runs[2:]] == [1.0, 1.0]


async def test_a_worker_whose_template_blocks_its_loop_is_killed_after_release(
        tmp_path: Path) -> None:
    """SIGTERM reaches a worker through its event loop; one that a template blocks never
    sees it, and used to outlive the pool, the zygote and hud itself."""
    (tmp_path / "env.py").write_text(
        "import os, time\n"
        "from pathlib import Path\n"
        "from hud import Environment\n"
        "env = Environment('loop-blocker')\n"
        "@env.template()\n"
        "async def block(where: str):\n"
        "    Path(where).write_text(str(os.getpid()))\n"
        "    time.sleep(3600)  # the event loop with it\n"
        "    yield 'never'\n"
        "    yield 1.0\n")
    pidfile = tmp_path / "worker.pid"
    task = load_environment(str(tmp_path / "env.py")).templates["block"](where=str(pidfile))
    async with PoolRuntime(size=1, kill_after=0.5) as pool, pool.open(task) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await client.start(task.id, task.args)
    # The pool has closed, so every worker it released has exited (a zombie until its
    # parent, the zygote, or init after it, reaps it).
    stat = Path(f"/proc/{pidfile.read_text()}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_pool_without_pidfds_still_stops_its_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``pidfd_open`` is refused (a seccomp filter, an old kernel), a released worker
    gets its SIGTERM alone, and the rollout's outcome stands."""
    def refused(pid: int) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "pidfd_open", refused)
    async with PoolRuntime(size=1) as pool:
        job = await words().run(Scripted(lambda run: "3"), runtime=pool, max_concurrent=1)
    assert [(run.error, run.reward) for run in job.runs] == [(None, 1.0)] * 3  # three r each


async def test_a_released_worker_ends_its_loop_as_asyncio_run_would(tmp_path: Path) -> None:
    """A worker runs its whole life in one run of its loop. On the way out it still does
    what ``asyncio.run`` does: the tasks left running are cancelled, async generators left
    open are finalized, and the default executor's threads are waited for."""
    (tmp_path / "env.py").write_text(
        "import asyncio, time\n"
        "from pathlib import Path\n"
        "from hud import Environment\n"
        "env = Environment('leftovers')\n"
        "kept = []\n"
        "async def forever(out):\n"
        "    try:\n"
        "        await asyncio.Event().wait()\n"
        "    finally:\n"
        "        (out / 'task').write_text('cancelled')\n"
        "async def ticks(out):\n"
        "    try:\n"
        "        while True:\n"
        "            yield 1\n"
        "    finally:\n"
        "        (out / 'generator').write_text('finalized')\n"
        "def slow(out):\n"
        "    time.sleep(0.5)\n"
        "    (out / 'thread').write_text('done')\n"
        "@env.template()\n"
        "async def leave(where: str):\n"
        "    out = Path(where)\n"
        "    kept.append(asyncio.create_task(forever(out)))\n"
        "    ticking = ticks(out)\n"
        "    kept.append(ticking)\n"
        "    await ticking.__anext__()\n"
        "    kept.append(asyncio.get_running_loop().run_in_executor(None, slow, out))\n"
        "    yield 'say ok'\n"
        "    yield 1.0\n")
    out = tmp_path / "out"
    out.mkdir()
    task = load_environment(str(tmp_path / "env.py")).templates["leave"](where=str(out))
    async with PoolRuntime(size=1) as pool, pool.open(task) as client:
        await client.start(task.id, task.args)
        assert (await client.grade("ok")).reward == 1.0
    async with asyncio.timeout(30):  # the pool has released the worker: it is on its way out
        while len(list(out.iterdir())) < 3:
            await asyncio.sleep(0.05)
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "task": "cancelled", "generator": "finalized", "thread": "done"}


async def test_group_runs_share_a_group_id_and_give_advantages() -> None:
    flaky = iter([1, 0, 1, 1] * 3)

    job = await words().run(Scripted(lambda run: "3" if next(flaky) else "0"), group=4,
                            runtime=InProcessRuntime(), max_concurrent=1)
    assert list(job.results) == [t.slug for t in words()]
    for runs in job.results.values():
        assert len(runs) == 4 and len({r.group_id for r in runs}) == 1
    assert len({runs[0].group_id for runs in job.results.values()}) == 3
    rewards = [r.reward for r in job.results[words().slugs[0]]]
    assert rewards == [1.0, 0.0, 1.0, 1.0]
    advantages = group_relative(rewards, normalize_std=True)
    assert advantages == pytest.approx([0.57735, -1.73205, 0.57735, 0.57735], abs=1e-4)
    assert group_relative([0.5, 0.5]) == [0.0, 0.0]
    assert group_relative([1.0, 0.0], normalize_std=False) == [0.5, -0.5]
    with pytest.raises(ValueError, match="errored"):
        group_relative([1.0, None])  # type: ignore[list-item]


async def test_seed_training_snippet_runs_as_written() -> None:
    agent = create_agent("oracle")
    job = await Taskset(eval_env.count_letter(word=w) for w in ("strawberry", "kiwi")).run(
        agent, group=4, runtime=InProcessRuntime(solutions=True))
    for runs in job.results.values():
        advantages = group_relative([r.reward for r in runs], normalize_std=True)
        assert advantages == [0.0] * 4
        assert all(len(r.trace_id) == 32 for r in runs)


async def test_failures_name_their_phase_and_carry_no_reward() -> None:
    runtime = InProcessRuntime()
    cases = Taskset([eval_env.crash_setup(), eval_env.crash_grade(), eval_env.lenient()])
    job = await cases.run(Scripted("x"), runtime=runtime)
    by_id = {run.task.id: run for run in job.runs}
    assert (by_id["crash_setup"].status, by_id["crash_setup"].error.phase) == ("error", "setup")
    assert "seed failed" in by_id["crash_setup"].error.message
    assert (by_id["crash_grade"].error.phase, by_id["crash_grade"].reward) == ("grade", None)
    assert by_id["lenient"].reward == 1.0
    assert job.reward == 1.0  # errored runs are not zeros
    assert len(job.errors) == 2

    agent_bug = await Taskset([eval_env.lenient()]).run(
        Scripted(raises=KeyError("oops")), runtime=runtime)
    (run,) = agent_bug.runs
    assert (run.status, run.error.phase, run.error.type, run.reward) == (
        "error", "agent", "KeyError", None)


async def test_environment_failure_is_an_error_not_a_zero(tmp_path: Path) -> None:
    broken = tmp_path / "env.py"
    broken.write_text("raise RuntimeError('cannot import')\n")
    runtime = SubprocessRuntime(str(broken))
    job = await Taskset([eval_env.lenient()]).run(Scripted("x"), runtime=runtime)
    (run,) = job.runs
    assert (run.status, run.error.phase, run.reward) == ("error", "environment", None)


async def test_deadline_cancels_the_task_over_the_protocol(tmp_path: Path) -> None:
    marker = tmp_path / "cleanup"
    tasks = Taskset([eval_env.marks_cleanup(marker=str(marker))])
    job = await tasks.run(Scripted("x", sleep=30), runtime=SubprocessRuntime(), timeout=1.5)
    (run,) = job.runs
    assert (run.status, run.error.phase, run.reward) == ("timeout", "agent", None)
    assert "timed out after 1.5 s" in run.error.message
    assert marker.read_text() == "cleaned up"
    slow = await Taskset([eval_env.slow_start(seconds=30)]).run(
        Scripted("x"), runtime=InProcessRuntime(), timeout=0.3)
    assert (slow.runs[0].status, slow.runs[0].error.phase) == ("timeout", "setup")


def test_taskset_sources_and_filters(tmp_path: Path) -> None:
    ts = Taskset.from_source(EXAMPLE / "tasks.py")
    assert len(ts) == 5 and ts.slugs[0].startswith("count_letter-")
    assert len(ts.filter(["0", ts.slugs[2]])) == 2
    assert len(ts.filter(["count_letter"])) == 5
    assert len(ts.exclude([ts.slugs[0]])) == 4
    rows = tmp_path / "rows.jsonl"
    ts.to_file(rows)
    again = Taskset.from_file(rows, env=str(EXAMPLE / "env.py"))
    assert again.slugs == ts.slugs and again[ts.slugs[0]].template is not None
    as_json = tmp_path / "rows.json"
    ts.to_file(as_json)
    assert Taskset.from_file(as_json, env=str(EXAMPLE)).slugs == ts.slugs
    with pytest.raises(ValueError, match="duplicate"):
        Taskset([eval_env.count_letter(), eval_env.count_letter()])


def test_an_edit_in_the_same_second_and_of_the_same_size_is_loaded(tmp_path: Path) -> None:
    """The environment file is compiled from its source each time: a ``.pyc`` cached from
    the edit before (same whole-second mtime, same size) would hide the new one."""
    env_file = tmp_path / "env.py"
    load = ("import sys; from hud.loader import load_environment; "
            "print(load_environment(sys.argv[1]).name)")
    # bytecode is cached as Python does by default (CI's machines may turn that off)
    writes_pyc = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    names = []
    for count in (3, 4):
        env_file.write_text(f"from hud import Environment\nenv = Environment('count-{count}')\n")
        os.utime(env_file, (1_700_000_000, 1_700_000_000))  # the same second both times
        done = subprocess.run([sys.executable, "-c", load, str(env_file)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env=writes_pyc)
        assert done.returncode == 0, done.stderr
        names.append(done.stdout.strip())
    assert names == ["count-3", "count-4"]


def test_registry_resolves_names_and_model_families() -> None:
    assert {"oracle", "nop"} <= set(available())
    assert create_agent("nop").name == "nop"
    with pytest.raises(LookupError, match="registered: "):
        create_agent("no-such-harness")
    for model, harness in (("claude-opus-4-5", "claude"), ("gpt-5.1", "openai"),
                           ("o3-mini", "openai"), ("gemini-9-ultra", "gemini")):
        agent = create_agent(model, api_key="k")
        assert (agent.name, agent.model) == (harness, model)


def hud(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_eval_reports_rewards_and_records_traces(tmp_path: Path) -> None:
    traces = {"HUD_TRACE_DIR": str(tmp_path / "traces")}
    out = tmp_path / "runs.jsonl"
    done = hud("eval", str(EXAMPLE / "tasks.py"), "oracle", "--group", "2", "--json",
               "--output", str(out), env=traces)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["reward"] == 1.0 and summary["errors"] == 0
    assert len(summary["runs"]) == 10 and len(summary["tasks"]) == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["status"] for r in rows} == {"completed"} and len(rows) == 10
    listed = hud("jobs", "--json", env=traces)
    assert json.loads(listed.stdout)[0]["id"] == summary["job"]

    table = hud("eval", str(EXAMPLE / "tasks.py"), "nop", "--task-ids", "0,1", env=traces)
    assert table.returncode == 0
    assert "mean reward 0.000 over 2 completed runs; 0 errored" in table.stdout


def test_cli_eval_exit_code_is_nonzero_only_for_errors(tmp_path: Path) -> None:
    source = tmp_path / "tasks.py"
    source.write_text(
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from eval_env import crash_setup, lenient\n"
        "tasks = [crash_setup(), lenient()]\n")
    result = hud("eval", str(source), "nop", "--json", env={"HUD_TRACE_DIR": str(tmp_path)})
    assert result.returncode == 7
    runs = json.loads(result.stdout)["runs"]
    assert [(r["status"], r["reward"]) for r in runs] == [("error", None), ("completed", 1.0)]
    unknown = hud("eval", str(source), "no-such-agent")
    assert unknown.returncode == 2 and "no harness named" in unknown.stderr


def test_cli_eval_into_a_store_of_a_newer_hud_is_one_clear_error(tmp_path: Path) -> None:
    with TraceStore(tmp_path):
        pass
    with sqlite3.connect(tmp_path / "index.db") as db:
        db.execute("PRAGMA user_version=99")  # as a later hud would leave it
    result = hud("eval", str(EXAMPLE), "oracle", env={"HUD_TRACE_DIR": str(tmp_path)})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"error: {tmp_path} holds schema v99; this hud reads up to "
                             f"v{SCHEMA_VERSION} (upgrade hud); pass --trace-dir DIR to record "
                             "into another store\n")


def test_cli_check_flags_graders_that_do_not_separate(tmp_path: Path) -> None:
    good = hud("check", str(EXAMPLE))
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("ok  \t") == 5
    source = tmp_path / "tasks.py"
    source.write_text(
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from eval_env import count_letter, lenient, crash_grade\n"
        "tasks = [count_letter(), lenient(), crash_grade()]\n")
    bad = hud("check", str(source), "--json")
    assert bad.returncode == 8
    report = {row["template"]: row for row in json.loads(bad.stdout)}
    assert report["count_letter"]["ok"] is True
    assert report["lenient"]["problems"] == [
        "nop scored 1 (the grader does not separate doing nothing)"]
    assert "oracle error during grade" in report["crash_grade"]["problems"][0]


def test_third_party_harness_installs_and_runs_by_name(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(ROOT / "examples" / "harness_plugin")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = {"PYTHONPATH": str(target), "HUD_TRACE_DIR": str(tmp_path / "traces")}
    result = hud("eval", str(EXAMPLE / "tasks.py"), "letter_counter", "--json", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["agent"] == "letter_counter" and summary["reward"] == 1.0


class ShellFixer(Agent):
    """Fixes examples/coding's bug through the ssh capability, as a model's tool calls would."""

    name = "shell_fixer"

    async def __call__(self, run: Run) -> None:
        shell = await run.client.open("shell")
        before = await shell.run("python3 -B -m unittest -q", timeout=60)
        await shell.run("sed -i 's/text.split(\" \")/text.split()/' wordstats.py", timeout=10)
        run.record("tool_result", tool_call_id="1", content=before.stderr[-200:])
        run.answer = "fixed"


@pytest.mark.parametrize("make", [InProcessRuntime, PoolRuntime])
async def test_agent_drives_the_sandboxed_shell_on_every_runtime(make) -> None:
    sys.path.insert(0, str(ROOT / "examples" / "coding"))
    from hud.loader import load_tasks

    tasks = Taskset(t for t in load_tasks(str(ROOT / "examples" / "coding" / "tasks.py"))
                    if t.id == "fix_failing_test")
    job = await tasks.run(ShellFixer(), runtime=make(), group=2, max_concurrent=2)
    assert [(r.status, r.reward) for r in job.runs] == [("completed", 1.0)] * 2, [
        r.error for r in job.runs]
    idle = await tasks.run(create_agent("nop"), runtime=make())
    assert idle.runs[0].reward == 0.0  # each rollout starts from the pristine, broken repo
