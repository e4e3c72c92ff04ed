"""Our own examples' graders against an agent that games them (issue 13, item 9): planted
test runners, substring answers, and a capability killed by the agent scoring 0 with its
cause instead of leaving the mean as an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client
from hud.errors import CapabilityLost
from hud.loader import load_environment
from hud.protocol.errors import TemplateError

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
FIX = "sed -i 's/text.split(\" \")/text.split()/' wordstats.py"
# A stand-in for the standard library's unittest that reports success for any tests.
FAKE_UNITTEST = "import sys\nclass TestCase: pass\ndef main(*a, **k): sys.exit(0)\n"
# A page whose state throws when the grader reads it.
HOSTILE_PAGE = "void Object.defineProperty(window, 'submission', {get() { throw Error('no'); }})"


async def test_a_planted_unittest_does_not_pass_the_coding_example() -> None:
    env = load_environment(EXAMPLES / "coding" / "env.py")
    async with serving(env) as server:
        async with open_client(server.url) as client:
            await client.start("fix_failing_test")
            shell = await client.open("shell")
            await shell.write_file("unittest.py", FAKE_UNITTEST)
            await shell.write_file("tests/test_wordstats.py", "")
            fooled = await shell.run("python3 -B -m unittest -q")
            assert fooled.exit_status == 0  # the agent's own check is fooled...
            graded = await client.grade("done")
            assert graded.reward == 0.0  # ...the grader is not
            assert json.loads(graded.info["verdict"]) == {"ran": 3, "failed": 2}
        async with open_client(server.url) as client:
            await client.start("fix_failing_test")
            shell = await client.open("shell")
            await shell.write_file("unittest.py", FAKE_UNITTEST)  # harmless next to a fix
            await shell.run(FIX, check=True)
            assert (await client.grade("done")).reward == 1.0


async def test_letter_count_wants_the_number_alone() -> None:
    env = load_environment(EXAMPLES / "letter_count" / "env.py")
    answers = {"0123456789": 0.0, "3 or 2": 0.0, "13": 0.0, "3": 1.0, " 3\n": 1.0}
    async with serving(env) as server, open_client(server.url) as client:
        for answer, reward in answers.items():
            await client.start("count_letter", {"word": "strawberry", "letter": "r"})
            assert (await client.grade(answer)).reward == reward, answer


@pytest.mark.parametrize("path,text", [
    ("pytest.py", "raise SystemExit(0)\n"),
    ("conftest.py", "import os\nos._exit(0)\n"),
    ("tests/test_checkout.py", "def test_nothing():\n    pass\n"),
    ("pyproject.toml", "[tool.pytest.ini_options]\naddopts = '--collect-only'\n"),
])
async def test_fix_tests_grades_with_its_own_pytest_config_and_tests(path: str,
                                                                     text: str) -> None:
    env = load_environment(EXAMPLES / "fix_tests" / "env.py")
    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("fix-tests")
        repo = Path(str(started.prompt).rsplit("The repository is at: ", 1)[1].strip())
        (repo / path).write_text(text)
        graded = await client.grade("done")
        assert {s.name: s.score for s in graded.subscores}["tests"] == 0.0
        assert "2 failed" in graded.info["subscores"]["tests"]["stdout"]


def eval_hostile(tmp_path: Path, name: str, cls: str
                 ) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """``hud eval`` of the coding example's first task with harness ``name`` (class ``cls``
    of tests/hostile_harnesses.py), installed as a third party would: an entry point in a
    dist-info on PYTHONPATH. Returns the finished eval and the environment it ran with."""
    info = tmp_path / "site" / f"hud_{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: hud-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hud.harnesses]\n{name} = hostile_harnesses:{cls}\n")
    path = os.pathsep.join([str(info.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HUD_TRACE_DIR": str(tmp_path / "traces")}
    done = subprocess.run(
        [sys.executable, "-m", "hud", "eval", str(EXAMPLES / "coding" / "tasks.py"), name,
         "--task-ids", "0", "--json"], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    return done, env


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_an_agent_that_kills_its_sandbox_fails_its_rollout(tmp_path: Path) -> None:
    """``kill -9 -1`` as the agent. With the sandbox's own users (server as root) it cannot
    reach the spawner, so grading runs and scores the agent's work; without them it kills
    the sandbox, and the lost capability scores 0 with the cause. Never an error."""
    done, _ = eval_hostile(tmp_path, "sandbox_killer", "SandboxKiller")
    summary = json.loads(done.stdout)
    assert summary["errors"] == 0 and summary["reward"] == 0.0
    [run] = summary["runs"]
    assert (run["status"], run["reward"], run["error"]) == ("completed", 0.0, None)
    if os.geteuid() != 0:  # one user for agent and spawner: the kill reached the sandbox
        assert "the sandbox is gone" in run["info"]["cause"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_a_hostile_page_or_a_crashed_browser_scores_zero() -> None:
    # One test: the example's module (and its browser spares) belongs to one event loop.
    env = load_environment(EXAMPLES / "browser" / "env.py")
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("sign-up")
        devtools = await client.open("browser")
        await devtools.evaluate(HOSTILE_PAGE)
        graded = await client.grade("done")  # 0, not an error
        assert (graded.reward, graded.info) == (0.0, {"thanks": ""})

        await client.start("sign-up")
        devtools = await client.open("browser")
        with pytest.raises(Exception):  # noqa: B017 (the connection drops as the browser dies)
            await devtools.send("Browser.crash")
        graded = await client.grade("done")
        assert graded.reward == 0.0
        assert "the browser of task-" in graded.info["cause"]
        assert "is gone" in graded.info["cause"]


async def test_a_lost_capability_is_the_agents_failure_only_once_it_acted() -> None:
    env = Environment("lost")

    @env.template()
    async def lost_in_grading():
        yield "prompt"
        raise CapabilityLost("the widget is gone")

    @env.template()
    async def lost_in_setup():
        raise CapabilityLost("the widget never came up")
        yield "prompt"

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("lost_in_grading")
        graded = await client.grade("done")
        assert (graded.reward, graded.info) == (0.0, {"cause": "the widget is gone"})
        with pytest.raises(TemplateError, match="the widget never came up") as raised:
            await client.start("lost_in_setup")
        assert raised.value.data["phase"] == "setup"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_an_intruders_attacks_fail_and_are_in_its_trace(tmp_path: Path) -> None:
    """Through `hud eval` as users run it: every attack of a scripted intruder is refused,
    each refusal is in the stored trace (`hud trace --json`), and the rollout scores 0 as the
    agent's failure, never as an error of the infrastructure."""
    done, env = eval_hostile(tmp_path, "intruder", "Intruder")
    [run] = json.loads(done.stdout)["runs"]
    assert (run["status"], run["reward"], run["error"]) == ("completed", 0.0, None)
    shown = subprocess.run([sys.executable, "-m", "hud", "trace", run["trace_id"], "--json"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    steps = json.loads(shown.stdout)["steps"]
    outcome = {s["data"]["tool_call_id"]: s["data"] for s in steps if s["kind"] == "tool_result"}
    assert len(outcome) == 4
    for refused in ("0", "1"):  # the host's /etc is not there; pid 1 is another user
        assert outcome[refused]["exit_status"] != 0
        assert ("Permission denied" in outcome[refused]["stderr"]
                or "No such file" in outcome[refused]["stderr"]), outcome[refused]
    assert "getfd -1 Operation not permitted" in outcome["2"]["stdout"], outcome["2"]
    assert outcome["3"]["stdout"].strip() == "1000"
