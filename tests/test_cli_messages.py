"""CLI messages in the user's terms (arguments, flags and commands, not protocol fields), and
their exit codes, asserted exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "letter_count"


def hud(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HUD_URL", "HUD_TOKEN")}
    proc = subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = subprocess.Popen([sys.executable, "-m", "hud", "serve", str(EXAMPLE), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    try:
        yield server.stdout.readline().strip()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_a_wrong_argument_type_names_the_argument_template_and_type(url: str) -> None:
    assert hud("task", "start", "count_letter", "--url", url, "--args", '{"word": 3}') == (
        4, "", "error: template 'count_letter': argument 'word' must be str, not int\n")


def test_an_unknown_argument_suggests_the_close_one(url: str) -> None:
    assert hud("task", "start", "count_letter", "--url", url, "--args", '{"wrd": "x"}') == (
        4, "", "error: template 'count_letter' has no argument 'wrd' (did you mean 'word'?); "
               "its arguments: word, letter\n")


def test_nothing_listening_hints_at_hud_serve() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hint = " (is it served? start it with `hud serve env.py`)\n"
    assert hud("task", "start", "count_letter", "--url", f"ws://127.0.0.1:{port}") == (
        3, "", f"error: cannot reach an environment at ws://127.0.0.1:{port}: "
               f"[Errno 111] Connection refused{hint}")
    code, _, err = hud("task", "list", "--url", f"ws://127.0.0.1:{port}")
    assert (code, err.endswith(f"Connection refused{hint}")) == (3, True), err


@pytest.mark.parametrize("command", [["task", "start", "count_letter"], ["task", "list"]])
def test_a_port_out_of_range_is_refused_in_words(command: list[str]) -> None:
    assert hud(*command, "--url", "ws://127.0.0.1:99999") == (
        3, "", "error: ws://127.0.0.1:99999: the port must be a number from 0 to 65535\n")


def test_serve_refuses_a_port_out_of_range() -> None:
    code, out, err = hud("serve", str(EXAMPLE), "--port", "99999")
    assert (code, out) == (2, "")
    assert "99999 is not in the range 0<=x<=65535" in err


def test_a_wrong_flag_is_reported_once() -> None:
    code, out, err = hud("task", "start", "count_letter", "--bogus")
    assert (code, out, err.count("No such option: --bogus")) == (2, "", 1)
    assert "usage: hud task" not in err  # the fast path's parser stays silent


def test_a_directory_without_an_environment_names_what_was_looked_for(tmp_path: Path) -> None:
    assert hud("check", str(tmp_path)) == (
        6, "", f"error: {tmp_path}: no tasks.py or env.py, and 0 files define an Environment; "
               "name the file\n")
    code, _, err = hud("serve", str(tmp_path))
    assert (code, err.splitlines()[-1]) == (
        6, f"error: {tmp_path}: no env.py, and 0 files define an Environment; name the file")


def test_eval_of_a_json_file_that_is_not_rows_says_the_format(tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text('{"word": "kiwi"}')
    expected = ('expected a JSON list of rows {"id": TEMPLATE, "args": {...}, "slug": optional} '
                '(or {"tasks": [...]}), or .jsonl with one row per line, as `Taskset.to_file` '
                'writes\n')
    assert hud("eval", str(tmp_path / "rows.json"), "oracle") == (
        6, "", f"error: {tmp_path / 'rows.json'} is not task rows (KeyError: 'tasks'); "
               + expected)


def test_a_missing_optional_dependency_names_the_extra() -> None:
    code = ("import sys; sys.modules['numpy'] = None\n"  # as if numpy were not installed
            "from hud import Environment\n"
            "Environment('x').desktop()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "ModuleNotFoundError: the desktop capability needs numpy, which hud installs with an "
        "extra: pip install 'hud-runtime[desktop]'")
