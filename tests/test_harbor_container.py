"""Harbor tasks in containers, with podman: ``hud check`` and ``hud eval`` on the test
dataset (tests/data/harbor), the agent's shell inside the task's container, and what the
verifier leaves (no reward file, a timeout).

Opt-in like tests/test_container.py (HUD_TEST_CONTAINER=1, or CI=true where it must run).
The dataset's two images are built once per content of their ``environment/`` (reused by
later runs); the other tasks use the base image as their ``docker_image``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from test_container import BASE_IMAGE, REPO_ROOT, _require_container_tools
from test_container_runtime import docker_env  # noqa: F401  (a fixture: docker via podman)

from hud.eval import Run, Taskset
from hud.harbor import read_dataset
from hud.harbor.container import image_tag
from hud.runtimes.engine import RUNTIME_LABEL

pytestmark = pytest.mark.container
DATASET = REPO_ROOT / "tests" / "data" / "harbor"


@pytest.fixture(autouse=True)
def _podman() -> None:
    _require_container_tools()


def hud(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=900, env=env)


def harbor_containers() -> list[str]:
    return subprocess.run(["podman", "ps", "--all", f"--filter=label={RUNTIME_LABEL}=harbor",
                           "--format={{.Names}}"], capture_output=True, text=True,
                          check=True).stdout.split()


def test_check_passes_on_the_dataset() -> None:
    proc = hud("check", str(DATASET))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout == ("ok  \tcount-lines\toracle=1.0\tnop=0.0\n"
                           "ok  \tfix-add\toracle=1.0\tnop=0.0\n"
                           "ok  \thello-file\toracle=1.0\tnop=0.0\n")
    assert harbor_containers() == []


def test_eval_with_the_oracle_gives_rewards_and_named_subscores(tmp_path: Path) -> None:
    proc = hud("eval", str(DATASET), "oracle", "--json", "--trace-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = {run["slug"]: run for run in msgspec.json.decode(proc.stdout)["runs"]}
    assert {slug: run["reward"] for slug, run in runs.items()} == {
        "count-lines": 1.0, "fix-add": 1.0, "hello-file": 1.0}
    assert runs["fix-add"]["subscores"] == [{"name": "runs", "score": 1.0, "weight": 1.0},
                                            {"name": "correct", "score": 1.0, "weight": 1.0}]
    assert runs["hello-file"]["info"] == {"test_exit_status": 0, "timed_out": False,
                                          "test_output": ""}
    assert harbor_containers() == []


def test_check_with_docker_builds_and_runs_the_task(request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """The same through the docker CLI (against podman's Docker API): the task's image is
    built (an environment/ of its own, so it is; with BuildKit asked for where docker has
    no buildx), its container run, verified, removed."""
    env = dict(request.getfixturevalue("docker_env"))
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode:
        env["DOCKER_BUILDKIT"] = "1"
    task = Path(shutil.copytree(DATASET / "hello-file", tmp_path / "hello-file"))
    (task / "environment" / "build-id").write_text(uuid.uuid4().hex)
    [harbor_task] = read_dataset(task)
    try:
        proc = hud("check", str(task), env=env)
        assert (proc.returncode, proc.stdout) == (
            0, "ok  \thello-file\toracle=1.0\tnop=0.0\n"), proc.stderr[-4000:]
    finally:
        subprocess.run(["podman", "rmi", "--force", image_tag(harbor_task)],
                       capture_output=True)
    assert harbor_containers() == []


@pytest.mark.anyio
async def test_the_agents_shell_is_inside_the_tasks_container() -> None:
    """The ``shell`` capability runs commands in the task's container (its files, its
    working directory, exit statuses, stdin); what the agent changes there is graded."""
    seen: dict[str, object] = {}

    async def agent(run: Run) -> None:
        shell = await run.client.open("shell")
        seen["pwd"] = (await shell.run("pwd")).stdout
        seen["before"] = (await shell.run("python3 add.py 2 3")).stdout
        seen["exit"] = (await shell.run("exit 3")).exit_status
        [name] = harbor_containers()
        seen["hostname"] = (await shell.run("hostname")).stdout.strip()
        seen["inspected"] = subprocess.run(
            ["podman", "inspect", "--format={{.Config.Hostname}}", name],
            capture_output=True, text=True).stdout.strip()
        source = (await shell.read_file("/app/add.py")).decode()
        await shell.write_file("/app/add.py", source.replace(" - ", " + "))
        run.answer = "fixed"

    taskset = Taskset.from_source(DATASET).filter(["fix-add"])
    [run] = (await taskset.run(agent)).runs
    assert (run.status, run.reward) == ("completed", 1.0), run.error
    assert (seen["pwd"], seen["before"], seen["exit"]) == ("/app\n", "-1\n", 3)
    assert seen["hostname"] == seen["inspected"]
    assert harbor_containers() == []


def _task(root: Path, name: str, test_sh: str, verifier_timeout: float = 60,
          agent_timeout: float | None = None) -> None:
    (root / name / "tests").mkdir(parents=True)
    agent = "" if agent_timeout is None else f"[agent]\ntimeout_sec = {agent_timeout}\n\n"
    (root / name / "task.toml").write_text(
        f'[environment]\ndocker_image = "{BASE_IMAGE}"\n\n{agent}'
        f"[verifier]\ntimeout_sec = {verifier_timeout}\n")
    (root / name / "instruction.md").write_text("Do nothing.\n")
    (root / name / "tests" / "test.sh").write_text(test_sh)


@pytest.mark.anyio
async def test_a_verifier_without_a_reward_or_out_of_time_scores_zero_and_says_why(
        tmp_path: Path) -> None:
    _task(tmp_path, "no-reward", "echo checking; exit 1\n")
    _task(tmp_path, "too-slow", "sleep 30; echo 1 > /logs/verifier/reward.txt\n",
          verifier_timeout=1)

    async def nop(run: Run) -> None:
        run.answer = ""

    job = await Taskset.from_source(tmp_path).run(nop)
    runs = {run.task.slug: run for run in job.runs}
    assert [(r.status, r.reward) for r in runs.values()] == [("completed", 0.0)] * 2, [
        r.error for r in runs.values()]
    assert runs["no-reward"].trace.info == {
        "test_exit_status": 1, "timed_out": False, "test_output": "checking\n",
        "error": "tests/test.sh wrote no /logs/verifier/reward.txt or reward.json"}
    assert runs["too-slow"].trace.info["timed_out"] is True
    assert harbor_containers() == []


@pytest.mark.anyio
async def test_an_agent_out_of_time_is_stopped_and_what_it_left_is_verified(
        tmp_path: Path) -> None:
    """``[agent] timeout_sec``: the agent is stopped there, and the verifier still scores
    what it left in the container (as Harbor does); a task without one is not cut off."""
    test_sh = ("if [ -f /tmp/progress ]; then echo 1; else echo 0; fi "
               "> /logs/verifier/reward.txt\n")
    _task(tmp_path, "timed", test_sh, agent_timeout=3)  # time enough to touch the file
    _task(tmp_path, "untimed", test_sh)

    async def works_slowly(run: Run) -> None:
        shell = await run.client.open("shell")
        if run.task.id == "timed":
            await shell.run("touch /tmp/progress")
            await asyncio.sleep(3600)
        await asyncio.sleep(4)  # past the other task's limit
        await shell.run("touch /tmp/progress")
        run.answer = "done"

    job = await Taskset.from_source(tmp_path).run(works_slowly, timeout=60)
    runs = {run.task.slug: run for run in job.runs}
    assert {slug: (r.status, r.reward) for slug, r in runs.items()} == {
        "timed": ("completed", 1.0), "untimed": ("completed", 1.0)}, [
        r.error for r in runs.values()]
    stops = {slug: [s.data for s in r.trace.steps if s.kind == "stop"]
             for slug, r in runs.items()}
    assert stops == {"timed": [{"reason": "agent_timeout", "timeout": 3}], "untimed": []}
    assert harbor_containers() == []


@pytest.fixture(scope="module")
def letter_count_image() -> Iterator[str]:
    """``hud build`` of the letter_count example (removed afterwards)."""
    _require_container_tools()
    tag = "localhost/hud-harbor-export-test:1"
    proc = hud("build", ".", "--engine", "podman", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
               "--build-arg", "ENV_PATH=examples/letter_count/env.py", "-t", tag)
    assert proc.returncode == 0, proc.stderr[-4000:]
    try:
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True)


def test_exported_tasks_pass_check_in_their_containers(letter_count_image: str,
                                                       tmp_path: Path) -> None:
    """The round trip: our task exported as a Harbor task, run as one. Its test.sh serves
    the environment inside the container and grades the answer solve.sh (or nobody) wrote."""
    target = tmp_path / "exported"
    proc = hud("export-tasks", "examples/letter_count/tasks.py", str(target), "--format",
               "harbor", "--image", letter_count_image, "--task-ids", "count_letter-352c4b24")
    assert proc.returncode == 0, proc.stderr
    proc = hud("check", str(target))
    assert (proc.returncode, proc.stdout) == (
        0, "ok  \tcount_letter-352c4b24\toracle=1.0\tnop=0.0\n"), proc.stderr[-4000:]
    assert harbor_containers() == []
