"""hud.graders: answer checks, Grade.gather, BashGrader, LLMJudgeGrader, the fix_tests example.

The judge talks to a local Chat Completions server speaking OpenAI's wire format, driven by
the real ``openai`` SDK; everything else runs for real (bash, a served environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import serving

from hud.client import open_client
from hud.environment import Environment
from hud.graders import (
    CommandResult,
    Grader,
    GraderError,
    Score,
    contains,
    contains_all,
    contains_any,
    f1_score,
    find_numbers,
    get_command_runner,
    normalize_text,
    parse_verdict,
    reset_command_runner,
    run_subprocess,
    sandbox_runner,
    set_command_runner,
    using_command_runner,
)
from hud.loader import load_environment
from hud.native import BashGrader, Grade, LLMJudgeGrader, exact_match, numeric_match
from hud.runner import normalize_reward

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fix_tests"

# --- answer checks ----------------------------------------------------------------------------


def test_normalize_text() -> None:
    assert normalize_text("  The Answer:  42!  ") == "answer 42"
    assert normalize_text("An apple, a day") == "apple day"
    assert normalize_text("\uff21\uff22\uff23") == "abc"  # NFKC: full-width letters


@pytest.mark.parametrize(
    ("answer", "expected", "normalize", "score"),
    [
        ("Paris", "paris", True, 1.0),
        ("  The Paris. ", "paris", True, 1.0),
        ("Paris", "paris", False, 0.0),
        (" Paris\n", "Paris", False, 1.0),
        ("Lyon", ["Paris", "Lyon"], True, 1.0),
        ("Paris, France", "paris", True, 0.0),
        (None, "paris", True, 0.0),
        (42, "42", True, 1.0),
    ],
)
def test_exact_match(answer: Any, expected: Any, normalize: bool, score: float) -> None:
    assert exact_match(answer, expected, normalize=normalize) == score


def test_contains_family() -> None:
    assert contains("The capital is PARIS", "paris") == 1.0
    assert contains("The capital is PARIS", "paris", case_sensitive=True) == 0.0
    assert contains(None, "x") == 0.0
    assert contains_any("red and blue", ["green", "blue"]) == 1.0
    assert contains_any("red and blue", ["green", "pink"]) == 0.0
    assert contains_all("red and blue", ["red", "BLUE"]) == 1.0
    assert contains_all("red and blue", ["red", "green"]) == 0.0
    assert contains_all("red", "red") == 1.0  # one string is one substring, not characters
    with pytest.raises(ValueError):
        contains_any("x", [])
    with pytest.raises(ValueError):
        contains_all("x", [])


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("42", [42.0]),
        ("-7 and +3 and \u22122", [-7.0, 3.0, -2.0]),
        ("pi is 3.14, half is .5, and 42. ends it", [3.14, 0.5, 42.0]),
        ("1,234,567 people; 1,2,3", [1234567.0, 1.0, 2.0, 3.0]),
        ("1,2345", [1.0, 2345.0]),
        ("6.02e23 and 1E-3 and 2.5e+2", [6.02e23, 0.001, 250.0]),
        ("$1,000.50 or 10%", [1000.5, 10.0]),
        ("v1.2 on x86, abc123", []),
        ("no numbers here", []),
        ("range 5-3", [5.0, 3.0]),
    ],
)
def test_find_numbers(text: str, numbers: list[float]) -> None:
    assert find_numbers(text) == numbers


def test_numeric_match_picks_the_number_the_caller_asks_for() -> None:
    answer = "Step 1: add them. Step 2: the answer is 42"
    assert numeric_match(answer, 42) == 1.0  # "last" by default
    assert numeric_match(answer, 42, pick="first") == 0.0
    assert numeric_match(answer, 1, pick="first") == 1.0
    assert numeric_match(answer, 42, pick="only") == 0.0
    assert numeric_match("42", 42, pick="only") == 1.0
    with pytest.raises(ValueError):
        numeric_match(answer, 42, pick="middle")  # type: ignore[arg-type]


def test_numeric_match_values_and_tolerance() -> None:
    assert numeric_match("about 3.14159", 3.14, tolerance=0.01) == 1.0
    assert numeric_match("about 3.2", 3.14, tolerance=0.01) == 0.0
    assert numeric_match("1,234", 1234) == 1.0
    assert numeric_match("1e20", "100,000,000,000,000,000,000") == 1.0
    assert numeric_match("-.5", -0.5) == 1.0
    assert numeric_match("0.30", "0.3") == 1.0
    assert numeric_match("nothing", 0) == 0.0
    assert numeric_match(None, 0) == 0.0
    assert numeric_match(7, 7) == 1.0
    with pytest.raises(ValueError):
        numeric_match("3", "3 or 4")
    with pytest.raises(TypeError):
        numeric_match("1", True)


def test_f1_score() -> None:
    assert f1_score("the cat sat", "cat sat") == 1.0  # articles dropped
    assert f1_score("cat sat on the mat", "cat sat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "cat") == 0.0
    assert f1_score("cat", "") == 0.0
    assert f1_score(None, "cat") == 0.0
    assert f1_score("a dog", ["cat", "dog"]) == 1.0


# --- Grade and Grader -------------------------------------------------------------------------


def s(name: str, score: float, weight: float = 1.0, **info: Any) -> Score:
    return Score(name=name, score=score, weight=weight, info=info)


def test_combine_normalizes_positive_weights() -> None:
    grade = Grade.combine([s("a", 1.0, 0.7), s("b", 0.0, 0.3)])
    assert grade.reward == pytest.approx(0.7)
    grade = Grade.combine([s("a", 1.0, 7), s("b", 0.5, 3)])
    assert grade.reward == pytest.approx(0.85)
    assert [x.weight for x in grade.subscores] == [pytest.approx(0.7), pytest.approx(0.3)]
    assert grade.reward == pytest.approx(sum(x.score * x.weight for x in grade.subscores))


def test_combine_penalties_zero_weights_and_clamping() -> None:
    assert Grade.combine([s("a", 1.0), s("rude", 1.0, -0.25)]).reward == 0.75
    assert Grade.combine([s("a", 1.0), s("rude", 0.0, -0.25)]).reward == 1.0
    assert Grade.combine([s("a", 0.2), s("rude", 1.0, -0.5)]).reward == 0.0  # clamped
    assert Grade.combine([s("a", 1.0), s("note", 0.0, 0.0)]).reward == 1.0  # reported only
    assert Grade.combine([s("a", 1.0, 0.7), s("b", 0.0, 0.3), s("c", 1.0, -0.2)]).reward == 0.5
    # penalties alone count down from full marks
    assert Grade.combine([s("rude", 1.0, -0.3)]).reward == 0.7
    assert Grade.combine([s("rude", 0.0, -0.3)]).reward == 1.0


def test_combine_deduplicates_names_and_collects_info() -> None:
    grade = Grade.combine([s("bash", 1.0, cmd="a"), s("bash", 0.0), s("bash", 1.0), s("x", 1)])
    assert [x.name for x in grade.subscores] == ["bash", "bash-2", "bash-3", "x"]
    assert grade.info == {"subscores": {"bash": {"cmd": "a"}}}


@pytest.mark.parametrize(
    "bad",
    [[], [s("a", 1.5)], [s("a", -0.1)], [s("a", math.nan)], [s("a", 1.0, math.inf)], [0.5]],
)
def test_combine_rejects_bad_scores(bad: list[Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Grade.combine(bad)


class Fixed(Grader):
    default_name = "fixed"

    @classmethod
    async def compute(cls, *, value: Any) -> Any:  # type: ignore[override]
        return value


@pytest.mark.anyio
async def test_grader_base_accepts_floats_pairs_and_scores() -> None:
    plain = await Fixed.grade(value=1)
    assert (plain.name, plain.score, plain.weight, plain.info) == ("fixed", 1.0, 1.0, {})
    pair = await Fixed.grade(0.5, name="half", value=(0.5, {"why": "half"}))  # weight positional
    assert (pair.name, pair.score, pair.weight, pair.info) == ("half", 0.5, 0.5, {"why": "half"})
    scored = await Fixed.grade(weight=2, value=s("ignored", 0.25, 9, k=1))
    assert (scored.name, scored.score, scored.weight, scored.info) == ("fixed", 0.25, 2, {"k": 1})
    for bad in (1.5, math.nan, "1", True):
        with pytest.raises((ValueError, TypeError)):
            await Fixed.grade(value=bad)


@pytest.mark.anyio
async def test_gather_runs_graders_concurrently(tmp_path: Path) -> None:
    meet = "touch {}; until [ -e {} ]; do sleep 0.01; done"  # each waits for the other
    grade = await Grade.gather(
        BashGrader.grade(weight=0.7, command=meet.format("a", "b"), cwd=tmp_path, timeout=60),
        BashGrader.grade(weight=0.3, command=meet.format("b", "a") + "; exit 1", cwd=tmp_path,
                         timeout=60),
        s("said-done", 1.0, 0.0),
    )
    assert grade.reward == pytest.approx(0.7)
    assert [(x.name, x.score) for x in grade.subscores] == [
        ("bash", 1.0), ("bash-2", 0.0), ("said-done", 1.0)
    ]
    assert grade.info["subscores"]["bash-2"]["exit_code"] == 1


class Slow(Grader):
    cancelled = False

    @classmethod
    async def compute(cls) -> float:  # type: ignore[override]
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cls.cancelled = True
            raise
        return 1.0


class Broken(Grader):
    @classmethod
    async def compute(cls) -> float:  # type: ignore[override]
        await asyncio.sleep(0.05)
        raise GraderError("the judge is down")


@pytest.mark.anyio
async def test_gather_raises_the_failure_itself_and_cancels_the_rest() -> None:
    with pytest.raises(GraderError, match="judge is down"):
        await asyncio.wait_for(Grade.gather(Slow.grade(), Broken.grade()), 5)
    assert Slow.cancelled


def test_runner_accepts_grades_and_scores_as_rewards() -> None:
    grade = Grade.combine([s("tests", 1.0, 0.7, exit_code=0), s("lint", 0.0, 0.3)])
    reward = normalize_reward(grade)
    assert reward.reward == pytest.approx(0.7)
    assert [(x.name, x.score, x.weight) for x in reward.subscores] == [
        ("tests", 1.0, pytest.approx(0.7)), ("lint", 0.0, pytest.approx(0.3))
    ]
    assert reward.info == {"subscores": {"tests": {"exit_code": 0}}}
    assert normalize_reward(s("alone", 0.25, k=1)).reward == 0.25


graded_env = Environment("graders-test")


@graded_env.template()
async def checked(lint_fails: bool = False):
    """Grade with two commands, a check of the answer, and a penalty."""
    answer = yield "Say done."
    yield await Grade.gather(
        BashGrader.grade(weight=0.7, command="test -d /"),
        BashGrader.grade(weight=0.3, command="exit 1" if lint_fails else "true"),
        Score(name="said-done", score=contains(answer, "done"), weight=0),
        BashGrader.grade(weight=-0.2, name="slow", command="true"),
    )


@graded_env.template()
async def single():
    """Yield one grader's score as the whole reward."""
    yield "Anything."
    yield await BashGrader.grade(command="exit 3")


@pytest.mark.anyio
async def test_a_served_template_yields_a_gathered_grade() -> None:
    async with serving(graded_env) as server, open_client(server.url) as client:
        await client.start("checked", {"lint_fails": True})
        graded = await client.grade("I am done")
        assert graded.reward == pytest.approx(0.5)
        assert [(x.name, x.score) for x in graded.subscores] == [
            ("bash", 1.0), ("bash-2", 0.0), ("said-done", 1.0), ("slow", 1.0)
        ]
        assert [x.weight for x in graded.subscores] == pytest.approx([0.7, 0.3, 0.0, -0.2])
        assert graded.info["subscores"]["bash-2"]["exit_code"] == 1

        await client.start("checked")
        assert (await client.grade("not yet")).reward == pytest.approx(0.8)

        await client.start("single")
        graded = await client.grade("x")
        assert graded.reward == 0.0
        assert graded.info["exit_code"] == 3


# --- BashGrader and command runners ------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.anyio
async def test_bash_grader_pass_and_fail(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("x")
    passed = await BashGrader.grade(command="test -f marker && echo ok", cwd=tmp_path)
    assert (passed.name, passed.score, passed.weight) == ("bash", 1.0, 1.0)
    assert passed.info == {"command": "test -f marker && echo ok", "exit_code": 0,
                           "stdout": "ok\n", "stderr": ""}
    failed = await BashGrader.grade(command="echo oops >&2; exit 4", cwd=tmp_path, weight=0.3)
    assert (failed.score, failed.weight, failed.info["exit_code"]) == (0.0, 0.3, 4)
    assert failed.info["stderr"] == "oops\n"
    assert "timed_out" not in failed.info


@pytest.mark.anyio
async def test_bash_grader_keeps_only_the_tail_of_long_output() -> None:
    score = await BashGrader.grade(command="seq 1 100000")
    assert score.score == 1.0
    assert len(score.info["stdout"]) == 4000
    assert score.info["stdout"].endswith("99999\n100000\n")


@pytest.mark.anyio
async def test_bash_grader_timeout_kills_the_process_group(tmp_path: Path) -> None:
    score = await BashGrader.grade(
        command="echo started; sleep 30 & echo $! > pid; wait", cwd=tmp_path, timeout=0.5
    )
    assert score.score == 0.0
    assert score.info["timed_out"] is True and score.info["exit_code"] is None
    assert score.info["stdout"] == "started\n"  # output before the timeout is kept
    assert wait_dead(int((tmp_path / "pid").read_text()))


async def cancel_once_started(task: asyncio.Future[Any], pid_file: Path) -> None:
    """Cancel ``task`` once its command wrote its background job's pid to ``pid_file``;
    the cancel must reach the caller, and that job must die with it."""
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_dead(int(pid_file.read_text()))


@pytest.mark.anyio
async def test_cancelling_a_bash_grader_kills_its_command(tmp_path: Path) -> None:
    task = asyncio.ensure_future(
        BashGrader.grade(command="sleep 30 & echo $! > pid; wait", cwd=tmp_path)
    )
    await cancel_once_started(task, tmp_path / "pid")


@pytest.mark.anyio
async def test_a_cancel_while_the_command_is_starting_kills_what_it_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process runs before its start is done being awaited (its pipes connect after); a
    cancel that lands then used to leave the command's background jobs running (a loaded
    machine made it happen to the test above)."""
    real = asyncio.create_subprocess_exec
    started = asyncio.Event()

    async def slow_to_connect(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kwargs)
        started.set()
        await asyncio.sleep(0.5)  # the cancel lands here
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_to_connect)
    pid_file = tmp_path / "pid"
    task = asyncio.ensure_future(
        BashGrader.grade(command="sleep 30 & echo $! > pid; wait", cwd=tmp_path))
    await started.wait()
    await cancel_once_started(task, pid_file)


@pytest.mark.anyio
async def test_bash_grader_cannot_start_raises() -> None:
    with pytest.raises(FileNotFoundError, match="no directory"):
        await BashGrader.grade(command="true", cwd="/no/such/dir")


class Recorder:
    """A command runner standing in for a sandbox: records what it was asked to run."""

    def __init__(self, exit_code: int = 0) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.exit_code = exit_code

    async def __call__(self, command: str, *, cwd: Any, timeout: Any) -> CommandResult:
        self.calls.append((command, cwd, timeout))
        return CommandResult(exit_code=self.exit_code, stdout="in the sandbox\n")


@pytest.mark.anyio
async def test_an_installed_runner_is_used_by_graders_and_their_tasks() -> None:
    sandbox = Recorder()
    assert get_command_runner() is run_subprocess
    with using_command_runner(sandbox):
        grade = await Grade.gather(
            BashGrader.grade(command="pytest -q", cwd="/workspace", timeout=60),
            BashGrader.grade(command="ruff check ."),
        )
    assert get_command_runner() is run_subprocess
    assert sandbox.calls == [("pytest -q", "/workspace", 60), ("ruff check .", None, 600)]
    assert grade.reward == 1.0
    assert grade.info["subscores"]["bash"]["stdout"] == "in the sandbox\n"

    token = set_command_runner(Recorder(exit_code=2))
    try:
        assert (await BashGrader.grade(command="x")).score == 0.0
    finally:
        reset_command_runner(token)
    explicit = Recorder()
    assert (await BashGrader.grade(command="y", runner=explicit)).score == 1.0
    assert explicit.calls == [("y", None, 600)]


@pytest.mark.anyio
async def test_runners_are_per_context() -> None:
    first, second = Recorder(), Recorder()

    async def rollout(runner: Recorder, command: str) -> None:
        with using_command_runner(runner):
            await asyncio.sleep(0.01)
            await BashGrader.grade(command=command)

    await asyncio.gather(rollout(first, "one"), rollout(second, "two"))
    assert [c[0] for c in first.calls] == ["one"]
    assert [c[0] for c in second.calls] == ["two"]


class SandboxStandIn:
    """Shaped like the workspace sandbox: ``run`` returns ``exit_status`` and friends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    async def run(self, command: str, *, cwd: str | None, timeout: float | None) -> Any:
        self.calls.append((command, cwd, timeout))
        timed_out = command == "sleep"
        return SimpleNamespace(exit_status=-9 if timed_out else 0, stdout="out", stderr="",
                               timed_out=timed_out)


@pytest.mark.anyio
async def test_sandbox_runner_adapts_a_sandbox() -> None:
    sandbox = SandboxStandIn()
    with using_command_runner(sandbox_runner(sandbox)):
        ok = await BashGrader.grade(command="pytest", cwd=Path("/workspace"), timeout=9)
        late = await BashGrader.grade(command="sleep")
    assert (ok.score, ok.info["exit_code"], ok.info["stdout"]) == (1.0, 0, "out")
    assert (late.score, late.info["exit_code"], late.info["timed_out"]) == (0.0, None, True)
    assert sandbox.calls == [("pytest", "/workspace", 9), ("sleep", None, 600)]


@pytest.mark.anyio
async def test_bash_grader_sees_what_the_agent_left_in_a_real_sandbox(tmp_path: Path) -> None:
    import hud.capabilities.sandbox as sandboxes_module

    (tmp_path / "given.txt").write_text("given\n")
    sandboxes = sandboxes_module.Sandboxes(sandboxes_module.SandboxConfig(root=str(tmp_path)))
    try:
        sandbox = await sandboxes.open()
        await sandbox.run("echo fixed > by_agent.txt")
        with using_command_runner(sandbox_runner(sandbox)):
            grade = await Grade.gather(
                BashGrader.grade(command="cat given.txt by_agent.txt"),
                BashGrader.grade(command="sleep 30", timeout=0.3),
            )
    finally:
        await sandboxes.aclose()
    assert grade.reward == 0.5
    assert grade.info["subscores"]["bash"]["stdout"] == "given\nfixed\n"
    assert grade.info["subscores"]["bash-2"]["timed_out"] is True


# --- LLMJudgeGrader against a local Chat Completions server ------------------------------------

Reply = str | tuple[int, dict[str, Any], dict[str, str]]
REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 503: "Service Unavailable"}


def completion(content: str, model: str) -> dict[str, Any]:
    """A chat.completion object as OpenAI sends it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
    }


def api_error(status: int, message: str, code: str) -> Reply:
    body = {"error": {"message": message, "type": "error", "param": None, "code": code}}
    return status, body, {}


class FakeChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1:0, HTTP/1.1 with keep-alive.

    ``reply(request_json)`` returns the assistant's text, or ``(status, body, headers)``.
    """

    def __init__(self, reply: Callable[[dict[str, Any]], Reply]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.handlers: set[asyncio.Task[Any]] = set()
        self.base_url = ""

    async def __aenter__(self) -> FakeChatServer:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while await self.answer_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = await reader.readline()
        if not request_line:
            return False
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        assert request_line.split()[:2] == [b"POST", b"/v1/chat/completions"], request_line
        request = json.loads(body)
        self.requests.append(request)
        self.headers.append(headers)
        reply = self.reply(request)
        status, payload, extra = (
            (200, completion(reply, request["model"]), {}) if isinstance(reply, str) else reply
        )
        data = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {REASONS[status]}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        return True


@contextlib.asynccontextmanager
async def chat_server(reply: Callable[[dict[str, Any]], Reply]) -> AsyncIterator[FakeChatServer]:
    async with FakeChatServer(reply) as server:
        yield server


def keyword_judge(request: dict[str, Any]) -> Reply:
    """Met when the criterion's last word occurs in the answer."""
    user = request["messages"][-1]["content"]
    answer = user.split("Answer:\n", 1)[1].split("\n\nCriterion:\n")[0]
    keyword = user.rsplit("Criterion:\n", 1)[1].split()[-1]
    met = keyword.lower() in answer.lower()
    return json.dumps({"met": met, "explanation": f"{keyword} {'found' if met else 'missing'}"})


def sequence(*replies: Reply) -> Callable[[dict[str, Any]], Reply]:
    """The given replies in order; the last one repeats."""
    queue = list(replies)
    return lambda request: queue.pop(0) if len(queue) > 1 else queue[0]


def criterion_of(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"].rsplit("Criterion:\n", 1)[1])


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUD_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.anyio
@pytest.mark.usefixtures("no_openai_env")
async def test_judge_scores_each_criterion() -> None:
    criteria = ["mentions Paris", ("mentions France", 2.0), ("mentions Berlin", -0.1)]
    async with chat_server(keyword_judge) as server:
        good = await LLMJudgeGrader.grade(
            answer="Paris is the capital of France.", criteria=criteria,
            question="What is the capital of France?", model="judge-1",
            base_url=server.base_url,
        )
        mixed = await LLMJudgeGrader.grade(
            answer="Paris, or maybe Berlin", criteria=criteria, base_url=server.base_url,
            weight=0.5, name="rubric",
        )
    assert (good.name, good.score, good.weight) == ("judge", 1.0, 1.0)
    assert [c["met"] for c in good.info["criteria"]] == [True, True, False]
    assert good.info["criteria"][1] == {
        "criterion": "mentions France", "weight": 2.0, "met": True, "votes": [True],
        "explanation": "France found",
    }
    assert good.info["model"] == "judge-1"
    assert mixed.score == pytest.approx(1 / 3 - 0.1)
    assert (mixed.name, mixed.weight, mixed.info["model"]) == ("rubric", 0.5, "gpt-4o-mini")
    first = server.requests[0]
    assert (first["model"], first["temperature"]) == ("judge-1", 0.0)
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert "What is the capital of France?" in first["messages"][1]["content"]
    assert sorted(criterion_of(r) for r in server.requests[:3]) == sorted(
        c if isinstance(c, str) else c[0] for c in criteria
    )
    assert server.headers[0]["authorization"] == "Bearer unused"


@pytest.mark.anyio
async def test_judge_uses_the_given_key_and_temperature(no_openai_env: None) -> None:
    async with chat_server(keyword_judge) as server:
        await LLMJudgeGrader.grade(answer="x", criteria=["says x"], base_url=server.base_url,
                                   api_key="sk-test", temperature=0.7)
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    assert server.requests[0]["temperature"] == 0.7


@pytest.mark.anyio
async def test_judge_retries_a_rate_limit_then_succeeds() -> None:
    limited: Reply = (*api_error(429, "Rate limit reached", "rate_limit_exceeded")[:2],
                      {"Retry-After": "0"})
    async with chat_server(sequence(limited, '{"met": true, "explanation": "ok"}')) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=["c"], base_url=server.base_url)
    assert score.score == 1.0
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_judge_retries_server_errors_with_backoff() -> None:
    down = api_error(503, "overloaded", "server_error")
    async with chat_server(sequence(down, down, '{"met": false}')) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=["c"], backoff=0.01,
                                           base_url=server.base_url)
    assert score.score == 0.0
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_judge_gives_up_after_its_retries() -> None:
    async with chat_server(sequence(api_error(503, "down", "server_error"))) as server:
        with pytest.raises(GraderError, match="no verdict after 3 tries"):
            await LLMJudgeGrader.grade(answer="a", criteria=["c"], retries=2, backoff=0.01,
                                       base_url=server.base_url)
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_judge_does_not_retry_a_bad_request() -> None:
    async with chat_server(sequence(api_error(400, "no such model", "model_not_found"))) as srv:
        with pytest.raises(GraderError, match="no such model"):
            await LLMJudgeGrader.grade(answer="a", criteria=["c"], base_url=srv.base_url)
    assert len(srv.requests) == 1


@pytest.mark.anyio
async def test_judge_retries_a_malformed_verdict() -> None:
    fenced = 'Sure.\n```json\n{"met": "yes", "explanation": "it does"}\n```'
    async with chat_server(sequence("I would rather not say.", fenced)) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=["c"], base_url=server.base_url)
    assert score.score == 1.0
    assert score.info["criteria"][0]["explanation"] == "it does"
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_judge_without_any_verdict_is_an_error_not_a_zero() -> None:
    expected = re.escape("no verdict in the reply 'Hmm, hard to say.'")
    async with chat_server(sequence("Hmm, hard to say.")) as server:
        with pytest.raises(GraderError, match=expected):
            await LLMJudgeGrader.grade(answer="a", criteria=["c"], retries=1,
                                       base_url=server.base_url)
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_judge_unreachable_is_an_error() -> None:
    async with chat_server(keyword_judge) as server:
        base_url = server.base_url  # closed when the block ends
    with pytest.raises(GraderError, match="APIConnectionError"):
        await LLMJudgeGrader.grade(answer="a", criteria=["c"], retries=1, backoff=0.01,
                                   base_url=base_url)


@pytest.mark.anyio
async def test_judge_majority_vote_over_samples() -> None:
    yes, no = '{"met": true}', '{"met": false}'
    async with chat_server(sequence(yes, no, yes)) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=["c"], samples=3,
                                           base_url=server.base_url)
    assert score.score == 1.0
    assert sorted(score.info["criteria"][0]["votes"]) == [False, True, True]
    assert len(server.requests) == 3

    # a tie goes against the answer: a criterion unmet, a fault present
    async with chat_server(sequence(yes, no)) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=["c"], samples=2,
                                           base_url=server.base_url)
    assert score.score == 0.0
    async with chat_server(sequence(yes, no)) as server:
        score = await LLMJudgeGrader.grade(answer="a", criteria=[("fault", -1.0)], samples=2,
                                           base_url=server.base_url)
    assert score.info["criteria"][0]["met"] is True
    assert score.score == 0.0


@pytest.mark.anyio
async def test_judge_rejects_an_empty_rubric() -> None:
    with pytest.raises(ValueError, match="at least one criterion"):
        await LLMJudgeGrader.grade(answer="a", criteria=[])


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ('{"met": true, "explanation": "yes"}', (True, "yes")),
        ('{"met": false}', (False, "")),
        ('Here you go: {"met": "no", "explanation": "has {braces}"} done', (False, "has {braces}")),
        ('{"criterion_status": "MET", "explanation": "ok"}', (True, "ok")),
        ('{"criterion_status": "UNMET"}', (False, "")),
        ("```json\n{\"met\": true}\n```", (True, "")),
        ("Yes. It cites a source.", (True, "Yes. It cites a source.")),
        ("Not met: no source.", (False, "Not met: no source.")),
        ("unmet", (False, "unmet")),
        ("I am not sure", None),
        ('{"explanation": "forgot the verdict"}', None),
        ("", None),
    ],
)
def test_parse_verdict(text: str, verdict: tuple[bool, str] | None) -> None:
    assert parse_verdict(text) == verdict


# --- the fix_tests example ---------------------------------------------------------------------


def repository_of(prompt: Any) -> Path:
    return Path(str(prompt).rsplit("The repository is at: ", 1)[1].strip())


@pytest.mark.anyio
async def test_fix_tests_example_end_to_end() -> None:
    env = load_environment(EXAMPLE / "env.py")
    async with serving(env) as server, open_client(server.url) as client:
        # an agent that fixes the bug
        started = await client.start("fix-tests")
        repo = repository_of(started.prompt)
        assert repo.is_dir() and repo != EXAMPLE / "workspace"
        code = repo / "checkout.py"
        code.write_text(code.read_text().replace(
            "sum(price for price, _quantity in lines)",
            "sum(price * quantity for price, quantity in lines)",
        ))
        graded = await client.grade("fixed")
        assert graded.reward == 1.0, graded.info
        assert [(x.name, x.score) for x in graded.subscores] == [("tests", 1.0), ("lint", 1.0)]
        assert not repo.exists()  # the task cleaned up its copy

        # an agent that does nothing: the tests fail, the lint passes
        started = await client.start("fix-tests")
        assert repository_of(started.prompt) != repo or not repo.exists()
        graded = await client.grade("done")
        assert graded.reward == pytest.approx(0.3)
        assert "failed" in graded.info["subscores"]["tests"]["stdout"]

    assert "_quantity in lines" in (EXAMPLE / "workspace" / "checkout.py").read_text()


def test_fix_tests_taskset_loads() -> None:
    script = "from tasks import tasks; print(len(tasks), tasks[0].id, tasks[0].env)"
    out = subprocess.run([sys.executable, "-c", script], cwd=EXAMPLE, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    assert out.stdout.split() == ["1", "fix-tests", "coding-env"]
