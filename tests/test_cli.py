"""The command line as people use it: separate processes, stdout for results only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "letter_count"

ENV_WITH_MARKERS = textwrap.dedent('''
    import os
    from hud import Environment

    env = Environment("markers")
    LOG = os.environ["MARKER_FILE"]

    def mark(text):
        with open(LOG, "a") as f:
            f.write(text + "\\n")

    @env.shutdown
    async def bye():
        mark("shutdown")

    @env.template()
    async def count_letter(word: str = "strawberry", letter: str = "r"):
        try:
            answer = yield f"How many {letter} in {word}?"
            yield 1.0 if str(word.count(letter)) in answer else 0.0
        finally:
            mark(f"cleanup:{word}")
''')


def hud(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hud", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, input=stdin, timeout=timeout,
    )


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


def serve(target: str | Path, *extra: str, env: dict[str, str] | None = None) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", str(target), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("ws://"):
        proc.kill()
        raise AssertionError(f"no URL from hud serve: {url!r} {proc.stderr.read()}")
    return Served(proc, url)


@pytest.fixture
def letter_count() -> Iterator[Served]:
    served = serve(EXAMPLE / "env.py")
    yield served
    served.stop()


FAST_AND_FULL = pytest.mark.parametrize("path", ["1", "0"], ids=["fast-path", "typer"])


@FAST_AND_FULL
def test_start_and_grade_as_two_processes(letter_count: Served, path: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUD_CLI_FAST", path)
    url = ["--url", letter_count.url]
    started = hud("task", "start", "count_letter", "--args", '{"word": "banana", "letter": "a"}',
                  *url)
    assert started.returncode == 0, started.stderr
    assert started.stdout == (
        "How many times does 'a' occur in 'banana'? Reply with just the number.\n"
    )
    assert started.stderr.startswith("session: sess-")
    graded = hud("task", "grade", "count_letter", "--answer", "3", *url)
    assert (graded.returncode, graded.stdout) == (0, "1.0\n"), graded.stderr
    assert graded.stderr == ""

    # --json carries the session id; --session resumes exactly that task
    started = hud("task", "start", "count_letter", "--json", *url)
    session = json.loads(started.stdout)["session_id"]
    graded = hud("task", "grade", "count_letter", "--answer-file", "-", "--session", session,
                 "--json", *url, stdin="7")
    result = json.loads(graded.stdout)
    assert (result["session_id"], result["reward"]) == (session, 0.0)


@FAST_AND_FULL
def test_exit_codes(letter_count: Served, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUD_CLI_FAST", path)
    url = ["--url", letter_count.url]
    nothing = hud("task", "grade", "count_letter", "--answer", "3", *url)
    assert nothing.returncode == 5 and nothing.stdout == ""
    assert "no task" in nothing.stderr
    assert hud("task", "start", "nope", *url).returncode == 5
    assert hud("task", "start", "count_letter", "--args", "{bad", *url).returncode == 2
    assert hud("task", "start", "count_letter", "--args", '{"word": 1}', *url).returncode == 4
    both = hud("task", "grade", "count_letter", *url)
    assert both.returncode == 2 and "--answer" in both.stderr
    unreachable = hud("task", "start", "count_letter", "--url", "ws://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    wrong_session = hud("task", "grade", "count_letter", "--answer", "3", "--session",
                        "sess-unknown", *url)
    assert wrong_session.returncode == 5 and "sess-unknown" in wrong_session.stderr
    assert hud("task", "start", "count_letter", "--source", "/no/such/dir.py",
               *url).returncode == 6


def test_sigterm_runs_cleanup_and_hooks_and_exits_zero(tmp_path: Path) -> None:
    env_file = tmp_path / "env.py"
    env_file.write_text(ENV_WITH_MARKERS)
    markers = tmp_path / "markers.log"
    served = serve(env_file, env={"MARKER_FILE": str(markers)})
    started = hud("task", "start", "count_letter", "--args", '{"word": "parked"}',
                  "--url", served.url)
    assert started.returncode == 0
    code, out, err = served.stop()
    assert code == 0, err
    assert out == ""  # the URL line was already read: nothing else on stdout
    assert markers.read_text().splitlines() == ["cleanup:parked", "shutdown"]


def test_serve_prints_only_the_url_on_stdout(tmp_path: Path) -> None:
    served = serve(EXAMPLE / "env.py")
    hud("task", "start", "count_letter", "--args", '{"word": 3}', "--url", served.url)
    hud("task", "grade", "count_letter", "--answer", "x", "--url", served.url)
    code, out, err = served.stop()
    assert code == 0
    assert out == ""  # everything after the URL line: nothing
    assert "serving 'letter-count'" in err


def test_token_required_beyond_loopback(tmp_path: Path) -> None:
    served = serve(EXAMPLE / "env.py", "--host", "0.0.0.0")
    try:
        port = served.url.rsplit(":", 1)[1]
        local = f"ws://127.0.0.1:{port}"
        line = served.proc.stderr.readline()
        while "token:" not in line:
            line = served.proc.stderr.readline()
            assert line, "no token on stderr"
        token = line.split("token:", 1)[1].strip()
        denied = hud("task", "list", "--url", local)
        assert denied.returncode == 3 and "token" in denied.stderr
        for fast in ("1", "0"):
            refused = hud("task", "start", "count_letter", "--url", local,
                          env={"HUD_CLI_FAST": fast})
            assert refused.returncode == 3 and "token" in refused.stderr, refused.stderr
        started = hud("task", "start", "count_letter", "--url", local, "--token", token)
        assert started.returncode == 0 and "strawberry" in started.stdout
        allowed = hud("task", "list", "--url", local, env={"HUD_TOKEN": token})
        assert allowed.returncode == 0 and allowed.stdout.startswith("count_letter\t")
    finally:
        served.stop()


def test_task_list_from_source_and_server(letter_count: Served) -> None:
    rows = hud("task", "list", "--source", str(EXAMPLE))
    assert rows.returncode == 0
    lines = rows.stdout.splitlines()
    assert len(lines) == 5
    slug, template, args = lines[0].split("\t")
    assert template == "count_letter" and json.loads(args) == {"word": "strawberry", "letter": "r"}
    served = hud("task", "list", "--url", letter_count.url, "--json")
    assert json.loads(served.stdout)[0]["id"] == "count_letter"
    by_slug = hud("task", "start", slug, "--source", str(EXAMPLE), "--url", letter_count.url)
    assert "'strawberry'" in by_slug.stdout
    hud("task", "grade", "count_letter", "--answer", "3", "--url", letter_count.url)


def test_task_status_lists_running_and_parked_tasks(letter_count: Served) -> None:
    url = ["--url", letter_count.url]
    empty = hud("task", "status", *url)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "0 task(s)" in empty.stderr
    started = hud("task", "start", "count_letter", "--args", '{"word": "kiwi", "letter": "i"}',
                  *url)
    session = started.stderr.split("session: ")[1].split()[0]
    [line] = hud("task", "status", *url).stdout.splitlines()
    sid, template, state, age, args = line.split("\t")
    assert (sid, template, json.loads(args)) == (session, "count_letter",
                                                 {"word": "kiwi", "letter": "i"})
    assert state.startswith("parked(") and age.endswith("s")  # the CLI disconnected
    [task] = json.loads(hud("task", "status", "--json", *url).stdout)["tasks"]
    assert task["attached"] is False and task["started"] is True and task["expires_in"] > 0
    assert hud("task", "grade", "count_letter", "--answer", "2", *url).stdout == "1.0\n"
    assert hud("task", "status", *url).stdout == ""


def test_init_writes_a_project_that_serves_and_grades(tmp_path: Path) -> None:
    project = tmp_path / "my-env"
    made = hud("init", str(project))
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""
    assert sorted(p.name for p in project.iterdir()) == [
        "Dockerfile.hud", "README.md", "env.py", "pyproject.toml", "tasks.py", "wheels"]
    assert hud("init", str(project)).returncode == 2  # not empty: refused
    assert len(hud("task", "list", "--source", str(project)).stdout.splitlines()) == 3
    served = serve(project / "env.py")
    try:
        url = ["--url", served.url]
        assert hud("task", "start", "count_letter", "--args", '{"word": "banana", "letter": "a"}',
                   *url).returncode == 0
        assert hud("task", "grade", "count_letter", "--answer", "3", *url).stdout == "1.0\n"
    finally:
        served.stop()


def test_serve_module_attr_and_load_errors(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        "from hud import Environment\na = Environment('a')\nb = Environment('b')\n")
    failed = hud("serve", str(tmp_path / "two.py"), "--port", "0")
    assert failed.returncode == 6 and "several environments" in failed.stderr
    (tmp_path / "broken.py").write_text("raise ImportError('boom')\n")
    failed = hud("serve", str(tmp_path / "broken.py"), "--port", "0")
    assert failed.returncode == 6 and "boom" in failed.stderr
    served = serve(f"{tmp_path / 'two.py'}:b")
    try:
        listed = hud("task", "list", "--url", served.url)
        assert listed.returncode == 0 and listed.stdout == ""
    finally:
        served.stop()


def test_version() -> None:
    out = hud("version")
    assert out.returncode == 0 and out.stdout.startswith("hud 0.")
