"""What ``hud``'s parent left open to it stays with ``hud``: the programs an environment
starts (its daemons, a browser, a desktop's apps) do not inherit it, on uvloop, whose
subprocesses ignore ``close_fds``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

LOOKING_ENV = textwrap.dedent('''
    import asyncio, os
    from hud import Environment

    env = Environment("looking")

    @env.initialize
    async def look() -> None:
        """As a daemon starts: what does a program started here hold open?"""
        proc = await asyncio.create_subprocess_exec(
            "ls", "/proc/self/fd", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        with open(os.environ["HELD_REPORT"] + ".tmp", "w") as report:
            report.write(" ".join(out.decode().split()))
        os.rename(os.environ["HELD_REPORT"] + ".tmp", os.environ["HELD_REPORT"])

    @env.template()
    async def noop():
        yield "nothing"
        yield 1.0
''')


def test_a_program_an_environment_starts_inherits_nothing_hud_was_given(
        tmp_path: Path) -> None:
    env_file, report = tmp_path / "env.py", tmp_path / "held.txt"
    env_file.write_text(LOOKING_ENV)
    opened = os.open(tmp_path / "runner-secret.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    secret = os.dup2(opened, 63, inheritable=False)  # (a number no listing has of its own)
    os.close(opened)
    try:  # left open to hud by its parent, as a CI runner's pipe or a log file may be
        server = subprocess.Popen(
            [sys.executable, "-m", "hud", "serve", str(env_file), "--port", "0"],
            pass_fds=(secret,), env={**os.environ, "HELD_REPORT": str(report)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(secret)
    try:
        deadline = time.monotonic() + 60
        while not report.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert report.exists(), server.stderr.read() if server.poll() is not None else ""
        held = report.read_text().split()
    finally:
        server.terminate()
        server.wait(30)
    assert "0" in held and "1" in held and "2" in held  # (the listing is the program's own)
    assert str(secret) not in held
