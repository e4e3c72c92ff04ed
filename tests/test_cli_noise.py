"""What a newcomer sees on stderr: no library warnings, and one line for a Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hud.eval.store import TraceStore

SLOW_ENV = textwrap.dedent('''
    import asyncio
    from pathlib import Path
    from hud import Environment

    env = Environment("slow")

    @env.template()
    async def wait(n: int = 0):
        Path(__file__).with_name(f"started-{n}").touch()
        await asyncio.sleep(120)
        yield "Say ok."
        yield 1.0

    @wait.solution
    def solve(n: int) -> str:
        return "ok"

    tasks = [wait(n=n) for n in range(3)]
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


def test_ctrl_c_during_eval_prints_one_line_and_leaves_the_job_unfinished(
        tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(SLOW_ENV)
    traces = tmp_path / "traces"
    # A terminal's Ctrl-C signals the whole foreground process group: the CLI, the pool's
    # zygote and its workers alike.
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "eval", "env.py", "oracle"], cwd=tmp_path,
        env={**os.environ, "HUD_TRACE_DIR": str(traces)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("started-*"))) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (proc.returncode, out) == (130, "")
    assert re.fullmatch(r"interrupted: job [0-9a-f]{12} stopped; 0 of 3 rollouts finished, "
                        r"and it stays unfinished in the trace store\n", err), err

    with TraceStore(traces, create=False) as store:
        (job,) = store.jobs()
        assert err.split()[2] == job["id"][:12]
        assert (job["ended_at"], job["runs"], job["completed"], job["errors"]) == (None, 3, 0, 3)
        statuses = {run["status"] for run in store.job(job["id"])["traces"]}
    assert statuses == {"cancelled"}
