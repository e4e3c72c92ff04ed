"""An eval that reports as it goes: progress on stderr, Ctrl-C recorded in full, resuming a
job, and retrying rollouts that failed for infrastructure reasons."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hud import Environment
from hud.agents import Agent
from hud.eval import InProcessRuntime, Taskset
from hud.eval.progress import Tally
from hud.eval.run import Run
from hud.eval.store import TraceStore

pytestmark = pytest.mark.anyio

LINE = re.compile(r"(\d+)/(\d+) rollouts · mean reward (-|\d\.\d{3}) · (\d+) errors? · "
                  r"(\d+[smh][ \d]*\w*) elapsed( · ETA (-|\S+( \S+)?))?")


def hud(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HUD_TRACE_DIR": str(cwd / "traces"),
                                        **env}, timeout=120)


# -- progress ---------------------------------------------------------------------------------

MIXED_ENV = textwrap.dedent('''
    import asyncio
    from hud import Environment

    env = Environment("mixed")

    @env.template()
    async def score(n: int = 0):
        await asyncio.sleep(0.4 * n)
        if n == 3:
            raise RuntimeError("setup failed")
        yield "Say ok."
        yield 0.0 if n == 2 else 1.0

    @score.solution
    def solve(n: int) -> str:
        return "ok"

    tasks = [score(n=n) for n in range(4)]
''')


def test_piped_progress_is_a_plain_line_every_interval_and_stdout_stays_data(
        tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(MIXED_ENV)
    done = hud("eval", "env.py", "oracle", "--json", "--max-concurrent", "1", cwd=tmp_path,
               HUD_PROGRESS_INTERVAL="0.2")
    assert done.returncode == 7, done.stderr  # one rollout errored
    assert json.loads(done.stdout)["errors"] == 1  # stdout: the JSON only
    # (The rest of stderr is the environment's log of its failed setup, and the error.)
    lines = [line for line in done.stderr.splitlines() if " rollouts · " in line]
    assert "\x1b" not in done.stderr
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert len(lines) >= 3  # rollouts take 0 + 0.4 + 0.8 + 1.2 s: lines came in between
    assert [LINE.fullmatch(line)[2] for line in lines] == ["4"] * len(lines)
    done_counts = [int(LINE.fullmatch(line)[1]) for line in lines]
    assert done_counts == sorted(done_counts) and done_counts[0] < 4
    assert lines[-1].startswith("4/4 rollouts · mean reward 0.667 · 1 error · ")
    assert " ETA " not in lines[-1]


def test_on_a_terminal_progress_is_a_live_display(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(MIXED_ENV)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "eval", "env.py", "oracle", "--json"], cwd=tmp_path,
        env={**os.environ, "HUD_TRACE_DIR": str(tmp_path / "traces"), "COLUMNS": "160",
             "TERM": "xterm"},
        stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    chunks: list[bytes] = []

    def read() -> None:  # as it comes: a full terminal buffer would block the eval
        with contextlib.suppress(OSError):  # EIO: the terminal's other end closed
            while chunk := os.read(primary, 65536):
                chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        reader.join(timeout=10)
        os.close(primary)
    screen = b"".join(chunks)
    text = screen.decode(errors="replace")
    assert json.loads(out)["errors"] == 1  # stdout (a pipe): the JSON, no escapes
    assert "\x1b[?25l" in text  # the cursor hidden while the display redraws in place
    assert "\x1b[2K" in text or "\x1b[1A" in text  # lines redrawn, not appended
    assert "━" in text and "4/4 rollouts · mean reward 0.667 · 1 error · " in text


def test_the_tally_counts_rewards_errors_cost_and_time_left() -> None:
    now = [100.0]
    tally = Tally(4, clock=lambda: now[0])
    assert tally.line() == "0/4 rollouts · mean reward - · 0 errors · 0s elapsed · ETA -"
    env = Environment("tally")

    @env.template()
    async def noop():
        yield "x"
        yield 1.0

    first, second = Run(noop.task()), Run(noop.task())
    first.trace.reward, first.trace.status = 0.5, "completed"
    first.trace.usage["cost_usd"] = 0.25  # a harness that prices its calls
    second.trace.status = "error"
    now[0] = 130.0
    tally.add(first)
    tally.add(second)
    assert tally.line() == ("2/4 rollouts · mean reward 0.500 · 1 error · $0.2500 · "
                            "30s elapsed · ETA 30s")


# -- Ctrl-C, in the library -------------------------------------------------------------------

cleanup_env = Environment("cleanup")


@cleanup_env.template()
async def linger(n: int = 0):
    yield "wait"
    yield 1.0


class Waits(Agent):
    """Waits to be cancelled, then takes a while to stop: longer for each task."""

    name = "waits"

    def __init__(self, started: list[Run]) -> None:
        super().__init__()
        self.started = started

    async def __call__(self, run: Run) -> None:
        self.started.append(run)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2 * run.task.args["n"])  # closing its connections, say
            raise


async def test_a_cancelled_job_records_every_cut_off_run_before_it_returns(
        tmp_path: Path) -> None:
    started: list[Run] = []
    taskset = Taskset([linger.task(n=n) for n in range(3)])
    with TraceStore(tmp_path) as store:
        work = asyncio.ensure_future(taskset.run(Waits(started), runtime=InProcessRuntime(),
                                                 store=store))
        while len(started) < 3:
            await asyncio.sleep(0.01)
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
        # Recorded by the time the cancellation arrives here, and not after: the slowest
        # rollout to stop did so before it (a gather returned at the first, and its caller
        # closed the store under the others).
        (job,) = store.jobs()
        runs = store.job(job["id"])["traces"]
    assert (job["status"], len(runs)) == ("interrupted", 3)
    assert {run["status"] for run in runs} == {"cancelled"}
    assert {run["error_phase"] for run in runs} == {"agent"}


# -- resume -----------------------------------------------------------------------------------

RESUMABLE_ENV = textwrap.dedent('''
    import asyncio
    from pathlib import Path
    from hud import Environment

    env = Environment("resumable")
    HERE = Path(__file__).parent

    @env.template()
    async def step(n: int = 0):
        with (HERE / "starts").open("a") as log:
            log.write(f"{n}\\n")
        if n and not (HERE / "fast").exists():
            await asyncio.sleep(120)
        yield "Say ok."
        yield 1.0

    @step.solution
    def solve(n: int) -> str:
        return "ok"

    tasks = [step(n=n) for n in range(COUNT)]
''')


def interrupt_eval(tmp_path: Path) -> str:
    """Run three rollouts, Ctrl-C once the fast one is stored and the other two started;
    the job id."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "eval", "env.py", "oracle", "--group", "1"],
        cwd=tmp_path, env={**os.environ, "HUD_TRACE_DIR": str(tmp_path / "traces")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _ready(tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    return re.search(r"--resume ([0-9a-f]{12})", err)[1]


def _ready(tmp_path: Path) -> bool:
    starts = tmp_path / "starts"
    if not starts.exists() or len(starts.read_text().split()) < 3:
        return False
    with TraceStore(tmp_path / "traces") as store:
        return any(job["completed"] for job in store.jobs())


def test_resume_runs_only_what_did_not_finish_into_the_same_job(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(RESUMABLE_ENV.replace("COUNT", "3"))
    job_id = interrupt_eval(tmp_path)
    with TraceStore(tmp_path / "traces") as store:
        before = {run["slug"]: run for run in store.job(job_id)["traces"]}
    assert sorted(run["status"] for run in before.values()) == [
        "cancelled", "cancelled", "completed"]

    (tmp_path / "fast").touch()
    (tmp_path / "starts").write_text("")
    resumed = hud("eval", "--resume", job_id, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming job " + job_id + ": 2 of 3 rollouts left to run" in resumed.stderr
    assert sorted((tmp_path / "starts").read_text().split()) == ["1", "2"]  # not 0 again
    summary = json.loads(resumed.stdout)
    assert summary["job"].startswith(job_id) and len(summary["runs"]) == 2

    with TraceStore(tmp_path / "traces") as store:
        (job,) = store.jobs()
        after = {run["slug"]: run for run in store.job(job_id)["traces"]}
        assert (job["status"], job["runs"], job["completed"]) == ("completed", 3, 3)
        # The cut-off runs continued: same trace ids, the cancelled attempt kept.
        assert {s: r["trace_id"] for s, r in after.items()} == {
            s: r["trace_id"] for s, r in before.items()}
        for run in before.values():
            if run["status"] == "cancelled":
                trace = store.trace(run["trace_id"])
                kinds = [step.kind for step in trace.steps]
                assert trace.attempt == 2 and kinds.index("error") < kinds.index("resume")
                assert trace.steps[kinds.index("resume")].data["after"] == "cancelled"
    again = hud("eval", "--resume", job_id, cwd=tmp_path)
    assert again.returncode == 2 and "has nothing left to run" in again.stderr


def test_resume_refuses_a_changed_taskset_or_other_settings(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(RESUMABLE_ENV.replace("COUNT", "3"))
    job_id = interrupt_eval(tmp_path)
    other = hud("eval", "--resume", job_id, "--group", "2", cwd=tmp_path)
    assert other.returncode == 2
    assert other.stderr == (f"error: --resume: job {job_id} ran with --group 1, not 2: a "
                            "resumed job keeps its settings (leave --group out)\n")
    (tmp_path / "env.py").write_text(RESUMABLE_ENV.replace("COUNT", "4"))
    changed = hud("eval", "--resume", job_id, cwd=tmp_path)
    assert changed.returncode == 2
    assert re.fullmatch(rf"error: cannot resume job {job_id}: the taskset changed since the "
                        r"job ran \(step-\S+ added\); run it as a new job instead\n",
                        changed.stderr), changed.stderr


# -- retries ----------------------------------------------------------------------------------

FLAKY_ENV = textwrap.dedent('''
    import os
    from pathlib import Path
    from hud import Environment

    env = Environment("flaky")
    HERE = Path(__file__).parent

    @env.template()
    async def task(kind: str = "ok"):
        crashed = HERE / f"crashed-{kind}"
        if kind == "crash" and not crashed.exists():
            crashed.touch()
            os._exit(1)  # the environment's process dies during setup: infrastructure
        yield "Say ok."
        yield 0.0 if kind == "low" else 1.0

    @task.solution
    def solve(kind: str) -> str:
        if kind == "agent":
            raise RuntimeError("the agent's own failure")
        return "ok"

    tasks = [task(kind=k) for k in ("crash", "low", "agent")]
''')


def test_retry_errors_retries_infrastructure_failures_only_and_keeps_every_attempt(
        tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(FLAKY_ENV)
    done = hud("eval", "env.py", "oracle", "--retry-errors", "2", "--json", cwd=tmp_path)
    assert done.returncode == 7, done.stderr  # the agent's own error stays an error
    runs = {run["args"]["kind"]: run for run in json.loads(done.stdout)["runs"]}
    assert {k: (r["status"], r["reward"], r["attempt"]) for k, r in runs.items()} == {
        "crash": ("completed", 1.0, 2),  # retried: the environment died in setup
        "low": ("completed", 0.0, 1),  # a low reward is a result, not a failure
        "agent": ("error", None, 1),  # the agent's own failure is not retried
    }
    shown = hud("trace", runs["crash"]["trace_id"], "--json", cwd=tmp_path)
    trace = json.loads(shown.stdout)
    kinds = [step["kind"] for step in trace["steps"]]
    assert kinds[:2] == ["error", "retry"] and "grade" in kinds, kinds
    assert trace["steps"][0]["data"]["phase"] == "setup"
    assert trace["steps"][1]["data"]["error"]["phase"] == "setup"
    assert trace["attempt"] == 2

    (tmp_path / "crashed-crash").unlink()
    once = hud("eval", "env.py", "oracle", "--task-ids", "0", "--json", cwd=tmp_path)
    (run,) = json.loads(once.stdout)["runs"]
    assert (run["status"], run["attempt"], run["error"]["phase"]) == ("error", 1, "setup")
