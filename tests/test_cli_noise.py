"""What a newcomer sees on stderr: no library warnings, and one line for a Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hud.eval.store import TraceStore

SLOW_ENV = textwrap.dedent('''
    import asyncio
    from pathlib import Path
    from hud import Environment

    env = Environment("slow")
    HERE = Path(__file__).parent

    @env.template()
    async def wait(n: int = 0, stuck: bool = False):
        try:
            (HERE / f"started-{n}").touch()
            await asyncio.sleep(120)
            yield "Say ok."
            yield 1.0
        finally:
            if stuck:
                await asyncio.sleep(60)  # a cleanup that hangs: only a second Ctrl-C ends it
            (HERE / f"cleaned-{n}").touch()

    @wait.solution
    def solve(n: int, stuck: bool) -> str:
        return "ok"

    tasks = [wait(n=n, stuck=STUCK) for n in range(3)]
''')


def test_importing_the_shell_capability_prints_no_cryptography_warning() -> None:
    code = ("import warnings\n"
            "import hud.capabilities.ssh.server, hud.capabilities.ssh.client\n"
            "from cryptography.utils import CryptographyDeprecationWarning as W\n"
            "warnings.warn('not asyncssh: still shown', W)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    # The filter is asyncssh's only: the same warning from elsewhere still shows.
    assert proc.stderr == ("<string>:4: CryptographyDeprecationWarning: not asyncssh: "
                           "still shown\n")


def start_eval(tmp_path: Path, *, stuck: bool) -> subprocess.Popen[str]:
    """``hud eval`` of three rollouts that never finish, once all three are in setup."""
    (tmp_path / "env.py").write_text(SLOW_ENV.replace("STUCK", str(stuck)))
    # A terminal's Ctrl-C signals the whole foreground process group: the CLI, the pool's
    # zygote and its workers alike.
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "eval", "env.py", "oracle"], cwd=tmp_path,
        # No progress line before the Ctrl-C, however slowly the pool starts: one at the end.
        env={**os.environ, "HUD_TRACE_DIR": str(tmp_path / "traces"),
             "HUD_PROGRESS_INTERVAL": "600"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("started-*"))) < 3:
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(proc.communicate())
        time.sleep(0.1)
    return proc


def stopped(proc: subprocess.Popen[str], signum: int, group: bool) -> tuple[str, str]:
    """``proc``'s output once ``signum`` (to its whole group, as a terminal sends a Ctrl-C,
    or to it alone) has ended it; killed if the test fails first."""
    try:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_during_eval_cancels_cleans_up_summarises_and_marks_the_job_interrupted(
        tmp_path: Path) -> None:
    proc = start_eval(tmp_path, stuck=False)
    out, err = stopped(proc, signal.SIGINT, group=True)
    assert (proc.returncode, out) == (130, "")
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert re.fullmatch(r"0/3 rollouts · mean reward - · 0 errors · \d+s elapsed · ETA -",
                        lines[1]), err  # the progress as it stopped
    assert lines[0] == ("stopping: cancelling the rollouts in flight (up to 3) and running "
                        "their cleanup; Ctrl-C again to quit at once"), err
    assert re.fullmatch(r"interrupted: job ([0-9a-f]{12}) stopped with 0 of 3 rollouts "
                        r"finished \(mean reward -, 0 errors\); it is marked interrupted in "
                        r"the trace store: `hud eval --resume \1` runs the rest", lines[-1]), err
    # Each template's cleanup ran in its environment: cancelled over the protocol.
    assert sorted(p.name for p in tmp_path.glob("cleaned-*")) == [
        "cleaned-0", "cleaned-1", "cleaned-2"]

    with TraceStore(tmp_path / "traces", create=False) as store:
        (job,) = store.jobs()
        assert lines[-1].split()[2] == job["id"][:12]
        assert (job["status"], job["ended_at"], job["runs"], job["errors"]) == (
            "interrupted", None, 3, 3)
        statuses = {run["status"] for run in store.job(job["id"])["traces"]}
    assert statuses == {"cancelled"}  # every rollout cut off is recorded, none lost
    listed = subprocess.run([sys.executable, "-m", "hud", "jobs", "--dir",
                             str(tmp_path / "traces")], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert re.search(rf"{job['id'][:12]} .* interrupted ", listed.stdout), listed.stdout


def test_sigterm_stops_an_eval_as_ctrl_c_does(tmp_path: Path) -> None:
    """``kill``, ``timeout`` and ``docker stop`` send SIGTERM to hud alone (not to its
    group, as a terminal's Ctrl-C does): the rollouts are cancelled and recorded all the
    same, and the job is resumable; the exit code is 143 (128 + SIGTERM)."""
    proc = start_eval(tmp_path, stuck=False)
    out, err = stopped(proc, signal.SIGTERM, group=False)
    assert (proc.returncode, out) == (143, "")
    lines = err.splitlines()
    assert lines[0] == ("stopping on SIGTERM: cancelling the rollouts in flight (up to 3) and "
                        "running their cleanup; a second signal to quit at once"), err
    assert re.fullmatch(r"interrupted: job [0-9a-f]{12} stopped with 0 of 3 rollouts .*",
                        lines[-1]), err
    assert sorted(p.name for p in tmp_path.glob("cleaned-*")) == [
        "cleaned-0", "cleaned-1", "cleaned-2"]
    with TraceStore(tmp_path / "traces", create=False) as store:
        (job,) = store.jobs()
        assert (job["status"], job["runs"]) == ("interrupted", 3)
        assert {run["status"] for run in store.job(job["id"])["traces"]} == {"cancelled"}


def test_a_second_ctrl_c_exits_at_once_without_waiting_for_cleanup(tmp_path: Path) -> None:
    proc = start_eval(tmp_path, stuck=True)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("stopping: cancelling the rollouts in flight"), first
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (proc.returncode, out) == (130, "")
    # It left while the cleanups hung (they had a minute to go): no summary. (The lines
    # after it are the environments' own, about the cleanups they then abandon.)
    lines = err.splitlines()
    assert lines[0] == "interrupted again: exiting now, without waiting for cleanup", err
    assert "interrupted: job" not in err and "Traceback" not in err, err


CHATTY_ENV = textwrap.dedent(f'''
    import sys
    print("imported")
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from eval_env import chatty, env  # its template prints as it starts

    tasks = [chatty()]
''')


@pytest.mark.parametrize("runtime", ["pool", "subprocess", "inprocess"])
def test_what_user_code_prints_is_a_log_and_stdout_holds_the_result(
        tmp_path: Path, runtime: str) -> None:
    """A task file's print at import (in hud eval, and in the environment's process) and a
    template's print in a rollout go to stderr: ``hud eval --json``'s stdout is its JSON. (A
    print in a ``hud serve`` child once came before its URL, and the subprocess runtime
    waited for that URL forever.)"""
    source = tmp_path / "tasks.py"
    source.write_text(CHATTY_ENV)
    done = subprocess.run(
        [sys.executable, "-m", "hud", "eval", str(source), "oracle", "--json", "--runtime",
         runtime], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HUD_TRACE_DIR": str(tmp_path / "traces")})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reward"] == 1.0  # the whole of stdout
    assert "imported" in done.stderr and "a chatty worker speaking" in done.stderr


def test_hud_serve_and_hud_task_list_write_only_their_results_to_stdout(tmp_path: Path) -> None:
    source = tmp_path / "tasks.py"
    source.write_text(CHATTY_ENV)
    listed = subprocess.run([sys.executable, "-m", "hud", "task", "list", "--source",
                             str(source)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\t")[0] == "chatty" and "imported" in listed.stderr
    served = subprocess.Popen([sys.executable, "-m", "hud", "serve", str(source), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert served.stdout is not None
        readable, _, _ = select.select([served.stdout], [], [], 60)  # (not to hang on a bug)
        assert readable and served.stdout.readline().startswith("ws://127.0.0.1:")
    finally:
        served.terminate()
        _, err = served.communicate(timeout=30)
    assert "imported" in err
