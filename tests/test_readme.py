"""The README's tutorial runs as written: its code blocks, extracted from README.md, in order."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TUTORIAL = README[README.index("## Tutorial"):README.index("## Shells and tools")]


def block_after(marker: str, language: str) -> str:
    """The first ``language`` code block after ``marker`` in the tutorial."""
    start = TUTORIAL.index(marker)
    found = re.compile(rf"```{language}\n(.*?)```", re.S).search(TUTORIAL, start)
    assert found, f"no {language} block after {marker!r} in README.md"
    return found.group(1)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def hud_lines(block: str, command: str) -> list[list[str]]:
    """The ``hud COMMAND ...`` lines of a shell block, comments dropped, as argv."""
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [argv for argv in lines if argv[:2] == ["hud", command]]


def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(block_after("**1. Write an environment.**", "python"))
    (tmp_path / "tasks.py").write_text(block_after("**2. Mint tasks.**", "python"))
    hud = [sys.executable, "-m", "hud"]

    check = run([*hud, "check", "env.py"], tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok  \tcount_letter-"), check.stdout
    oracle = run([*hud, "eval", "tasks.py", "oracle", "--json",
                  "--trace-dir", str(tmp_path / "traces")], tmp_path)
    assert oracle.returncode == 0, oracle.stderr
    assert '"reward":1.0' in oracle.stdout, oracle.stdout

    # 3. Serve it and drive a task by hand (on a free port: HUD_URL is --url's default).
    server = subprocess.Popen([*hud, "serve", "env.py", "--port", "0"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        by_hand = block_after("**3. Serve it", "sh")
        (start,) = hud_lines(by_hand, "task")[:1]
        (grade,) = hud_lines(by_hand, "task")[1:]
        started = run([sys.executable, "-m", *start], tmp_path, env={"HUD_URL": url})
        prompt = "How many times does 'a' occur in 'banana'? Reply with the number."
        assert started.stdout == f"{prompt}\n", started.stderr
        graded = run([sys.executable, "-m", *grade], tmp_path, env={"HUD_URL": url})
        assert (graded.returncode, graded.stdout) == (0, "1.0\n"), graded.stderr

        # 5. From Python, by hand.
        client = block_after("**5. From Python, by hand.**", "python")
        (tmp_path / "by_hand.py").write_text(client.replace("ws://127.0.0.1:8765", url))
        by_python = run([sys.executable, "by_hand.py"], tmp_path)
        assert by_python.stdout == f"{prompt} 1.0\n", by_python.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    # From Python, as a training loop would.
    training = block_after("From Python, as a training loop would", "python")
    (tmp_path / "train.py").write_text(training)
    trained = run([sys.executable, "train.py"], tmp_path,
                  env={"HUD_TRACE_DIR": str(tmp_path / "traces")})
    assert trained.returncode == 0, trained.stderr
    # The oracle solves every run: each group's advantages are 16 zeros, one line per task.
    zeros = "[" + ", ".join(["0.0"] * 16) + "]"
    assert trained.stdout == (f"count_letter-352c4b24 {zeros}\n"
                              f"count_letter-10a707c8 {zeros}\n"), trained.stderr
