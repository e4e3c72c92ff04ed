"""Harbor task directories without containers: reading them (and the errors for malformed
ones, through the CLI, exactly), the reward files, and ``hud export-tasks --format harbor``
checked with Harbor's own task loader (the ``harbor`` package, in the .venv-harbor that
tests/test_atif.py shares)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_atif import harbor_python

from hud.harbor import is_harbor_source, read_dataset
from hud.harbor.environment import parse_reward
from hud.harbor.export import harbor_toml
from hud.loader import load_tasks

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "tests" / "data" / "harbor"


def hud(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """A copy of the dataset's hello-file task, to break."""
    return Path(shutil.copytree(DATASET / "hello-file", tmp_path / "hello-file"))


def test_the_dataset_reads_as_three_tasks_with_their_settings() -> None:
    tasks = {t.name: t for t in read_dataset(DATASET)}
    assert sorted(tasks) == ["count-lines", "fix-add", "hello-file"]
    hello = tasks["hello-file"]
    assert hello.instruction.startswith("Create a file named `hello.txt` in `/app`")
    assert (hello.agent_timeout, hello.verifier_timeout, hello.build_timeout) == (120, 60, 300)
    assert (hello.cpus, hello.memory_mb, hello.docker_image) == (1, 512, None)
    assert tasks["count-lines"].docker_image == "localhost/hud-base:bookworm"
    assert all(t.has_solution for t in tasks.values())


def test_a_dataset_a_task_and_a_hud_project_are_told_apart() -> None:
    assert is_harbor_source(DATASET) and is_harbor_source(DATASET / "fix-add")
    assert not is_harbor_source(ROOT / "examples" / "letter_count")
    assert not is_harbor_source(DATASET / "fix-add" / "tests")


@pytest.mark.parametrize(("toml", "problem"), [
    ("[verifier]\ntimeout_sec = \"soon\"\n",
     "task.toml: [verifier] timeout_sec must be a positive number, got 'soon'"),
    ("[agent]\ntimeout_sec = -1\n",
     "task.toml: [agent] timeout_sec must be a positive number, got -1"),
    ("environment = 3\n", "task.toml: [environment] must be a table, got int"),
    ("[environment]\nenv = { A = 1 }\n",
     "task.toml: [environment] env must be a table of strings, got {'A': 1}"),
    ("[verifier\n", "task.toml: not valid TOML: Expected ']' at the end of a table "
     "declaration (at line 1, column 10)"),
])
def test_a_malformed_task_toml_names_the_file_and_the_field(task: Path, toml: str,
                                                             problem: str) -> None:
    (task / "task.toml").write_text(toml)
    assert hud("eval", str(task), "oracle") == (6, "", f"error: {task}/{problem}\n")


def test_missing_files_are_named(task: Path) -> None:
    (task / "tests" / "test.sh").unlink()
    assert hud("check", str(task)) == (
        6, "", f"error: {task}/tests/test.sh: missing (every Harbor task has one)\n")
    (task / "environment" / "Dockerfile").unlink()
    assert hud("check", str(task)) == (
        6, "", f"error: {task}/environment/Dockerfile: missing, and {task}/task.toml sets no "
        "[environment] docker_image (a task needs one or the other)\n")


def test_a_task_directory_without_task_toml_in_a_dataset_is_named(tmp_path: Path) -> None:
    shutil.copytree(DATASET / "fix-add", tmp_path / "fix-add")
    (tmp_path / "draft").mkdir()
    (tmp_path / "draft" / "instruction.md").write_text("unfinished")
    assert hud("eval", str(tmp_path), "oracle") == (
        6, "", f"error: {tmp_path}/draft/task.toml: missing (a Harbor task directory holds "
        "task.toml, instruction.md, environment/ and tests/)\n")


@pytest.mark.parametrize(("text", "kind", "reward"), [
    ("1\n", "txt", {"reward": 1.0}),
    ("0.25", "txt", {"reward": 0.25}),
    ('{"reward": 0.5, "style": 1, "tests": 0}', "json",
     {"reward": 0.5, "subscores": {"style": 1.0, "tests": 0.0}}),
    ('{"reward": 1}', "json", {"reward": 1.0}),
    ('{"a": 1, "b": 0}', "json", {"reward": 0.5, "subscores": {"a": 1.0, "b": 0.0}}),
    ("{}", "json", {"reward": 0.0, "info": {
        "error": "reward.json: reward.json must be an object of named numbers"}}),
    ("pass", "txt", {"reward": 0.0, "info": {
        "error": "reward.txt: could not convert string to float: 'pass'"}}),
])
def test_reward_files_as_harbor_writes_them(text: str, kind: str, reward: dict) -> None:
    assert parse_reward(text, kind) == reward


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The letter_count example exported as Harbor tasks."""
    target = tmp_path_factory.mktemp("export") / "harbor"
    code, out, err = hud("export-tasks", "examples/letter_count/tasks.py", str(target),
                         "--format", "harbor", "--image", "localhost/letter-count:test",
                         "--timeout", "90")
    assert code == 0, err
    assert sorted(out.split()) == sorted(str(p) for p in target.iterdir())
    return target


def test_export_writes_a_task_directory_per_task(exported: Path) -> None:
    task = exported / "count_letter-352c4b24"
    assert sorted(p.name for p in exported.iterdir())[0] == "count_letter-21a63f1e"
    config = tomllib.loads((task / "task.toml").read_text())
    assert config["metadata"] == {"hud_env": "letter-count", "hud_template": "count_letter",
                                  "hud_args": '{"letter": "r", "word": "strawberry"}'}
    assert config["environment"] == {"docker_image": "localhost/letter-count:test"}
    assert config["agent"] == config["verifier"] == {"timeout_sec": 90}
    assert (task / "instruction.md").read_text().startswith(
        "How many times does 'r' occur in 'strawberry'?")
    assert (task / "environment" / "Dockerfile").read_text() == "FROM localhost/letter-count:test\n"
    solve = subprocess.run(["bash", "-c", (task / "solution" / "solve.sh").read_text()
                            .replace("/logs/agent", "$T")], env={"T": str(task)},
                           capture_output=True, text=True)
    assert (solve.returncode, (task / "answer.txt").read_text()) == (0, "3")


def test_export_keeps_a_templates_own_agent_timeout() -> None:
    """A Harbor task read in (its ``[agent] timeout_sec`` became the template's
    ``agent_timeout``) and exported again keeps its agent's limit; ``--timeout`` stays the
    verifier's."""
    hello = {task.id: task for task in load_tasks(DATASET)}["hello-file"]
    config = tomllib.loads(harbor_toml(hello, "img", 90))
    assert config["agent"] == {"timeout_sec": 120}
    assert config["verifier"] == {"timeout_sec": 90}
    assert "verifier" not in tomllib.loads(harbor_toml(hello, "img", None))


def test_export_refuses_a_directory_that_is_not_empty(exported: Path) -> None:
    assert hud("export-tasks", "examples/letter_count/tasks.py", str(exported)) == (
        2, "", f"error: {exported} is not empty: export into a new directory\n")
    assert hud("export-tasks", "examples/letter_count/tasks.py", "/tmp/x", "--format",
               "inspect") == (2, "", "error: --format 'inspect': choose one of harbor\n")


LOAD_WITH_HARBOR = """
import json, sys
from harbor.models.task.task import Task
rows = []
for path in sys.argv[1:]:
    task = Task(path)
    rows.append({"name": task.name, "valid": Task.is_valid_dir(path),
                 "image": task.config.environment.docker_image,
                 "verifier_timeout": task.config.verifier.timeout_sec,
                 "instruction": task.instruction.splitlines()[0]})
print(json.dumps(rows))
"""


def harbor_loads(*paths: Path) -> list[dict]:
    proc = subprocess.run([harbor_python(), "-c", LOAD_WITH_HARBOR, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_harbors_own_loader_accepts_the_exported_tasks(exported: Path) -> None:
    rows = harbor_loads(*sorted(exported.iterdir()))
    assert len(rows) == 5 and all(row["valid"] for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["count_letter-352c4b24"] == {
        "name": "count_letter-352c4b24", "valid": True,
        "image": "localhost/letter-count:test", "verifier_timeout": 90.0,
        "instruction": "How many times does 'r' occur in 'strawberry'? Reply with just the "
        "number."}


def test_harbors_own_loader_accepts_the_test_dataset() -> None:
    rows = harbor_loads(*sorted(DATASET.iterdir()))
    assert [(r["name"], r["valid"]) for r in rows] == [
        ("count-lines", True), ("fix-add", True), ("hello-file", True)]
