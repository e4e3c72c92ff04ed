"""Harbor task directories, read and checked: the format of Terminal-Bench and the datasets
that Harbor (``pip install harbor``) runs.

A task directory holds ``task.toml`` (timeouts, resources, environment variables),
``instruction.md`` (the prompt), ``environment/Dockerfile`` (or ``[environment]
docker_image``), ``tests/test.sh`` (run in the container after the agent; it writes
``/logs/verifier/reward.txt`` or ``reward.json``) and, optionally, ``solution/solve.sh``
(the reference solution). A dataset is a directory of task directories.

Every problem is a :class:`~hud.errors.LoadError` that names the file and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LoadError

CONFIG = "task.toml"
INSTRUCTION = "instruction.md"
DOCKERFILE = "environment/Dockerfile"
TEST_SCRIPT = "tests/test.sh"
SOLVE_SCRIPT = "solution/solve.sh"
# Harbor's defaults (harbor.models.task.config): agents have no limit of their own.
VERIFIER_TIMEOUT = 600.0
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HarborTask:
    """One task directory, as read from disk."""

    path: Path
    name: str
    instruction: str
    docker_image: str | None = None
    """A pre-built image; without it, ``environment/Dockerfile`` is built."""
    agent_timeout: float | None = None
    verifier_timeout: float = VERIFIER_TIMEOUT
    build_timeout: float = BUILD_TIMEOUT
    cpus: float | None = None
    memory_mb: int | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    verifier_env: dict[str, str] = field(default_factory=dict)
    solution_env: dict[str, str] = field(default_factory=dict)

    @property
    def has_solution(self) -> bool:
        return (self.path / SOLVE_SCRIPT).is_file()


def is_task_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def is_harbor_source(source: str | Path) -> bool:
    """Whether ``source`` is a Harbor task directory or a directory of them (and no hud
    environment: a directory with an ``env.py`` or ``tasks.py`` is ours)."""
    path = Path(source)
    if not path.is_dir() or (path / "env.py").exists() or (path / "tasks.py").exists():
        return False
    return is_task_dir(path) or any(is_task_dir(child) for child in path.iterdir())


def read_dataset(source: str | Path) -> list[HarborTask]:
    """The tasks of a task directory, or of every task directory in ``source`` (sorted by
    name; a subdirectory with an ``instruction.md`` but no ``task.toml`` is an error)."""
    path = Path(source)
    if is_task_dir(path):
        return [read_task(path)]
    dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    tasks = [read_task(d) for d in dirs if is_task_dir(d) or (d / INSTRUCTION).exists()]
    seen: dict[str, Path] = {}
    for task in tasks:
        if task.name in seen:
            raise LoadError(f"{task.path / CONFIG}: [task] name {task.name!r} is also the name "
                            f"of {seen[task.name]}")
        seen[task.name] = task.path
    return tasks


def read_task(path: Path) -> HarborTask:
    """One task directory; raises :class:`LoadError` naming the file and the field."""
    config = _read_config(path / CONFIG)
    where = path / CONFIG
    environment = _table(config, "environment", where)
    verifier = _table(config, "verifier", where)
    agent = _table(config, "agent", where)
    solution = _table(config, "solution", where)
    package = _table(config, "task", where)
    image = _string(environment, "docker_image", "environment", where)
    if image is None and not (path / DOCKERFILE).is_file():
        raise LoadError(f"{path / DOCKERFILE}: missing, and {where} sets no [environment] "
                        "docker_image (a task needs one or the other)")
    for required in (INSTRUCTION, TEST_SCRIPT):
        if not (path / required).is_file():
            raise LoadError(f"{path / required}: missing (every Harbor task has one)")
    name = _string(package, "name", "task", where) or path.name
    return HarborTask(
        path=path.resolve(), name=name.rpartition("/")[2],
        instruction=(path / INSTRUCTION).read_text(),
        docker_image=image,
        agent_timeout=_seconds(agent, "timeout_sec", "agent", where, None),
        verifier_timeout=_positive(verifier.get("timeout_sec", VERIFIER_TIMEOUT),
                                   "timeout_sec", "verifier", where),
        build_timeout=_positive(environment.get("build_timeout_sec", BUILD_TIMEOUT),
                                "build_timeout_sec", "environment", where),
        cpus=_seconds(environment, "cpus", "environment", where, None),
        memory_mb=_count(environment, "memory_mb", "environment", where),
        workdir=_string(environment, "workdir", "environment", where),
        env=_strings(environment, "env", "environment", where),
        verifier_env=_strings(verifier, "env", "verifier", where),
        solution_env=_strings(solution, "env", "solution", where),
    )


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LoadError(f"{path}: missing (a Harbor task directory holds task.toml, "
                        "instruction.md, environment/ and tests/)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LoadError(f"{path}: not valid TOML: {exc}") from None


def _table(config: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise LoadError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _string(table: dict[str, Any], key: str, section: str, where: Path) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise LoadError(f"{where}: [{section}] {key} must be a non-empty string, got {value!r}")
    return value


def _seconds(table: dict[str, Any], key: str, section: str, where: Path,
             default: float | None) -> float | None:
    value = table.get(key, default)
    if value is None:
        return None
    return _positive(value, key, section, where)


def _positive(value: Any, key: str, section: str, where: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LoadError(f"{where}: [{section}] {key} must be a positive number, got {value!r}")
    return float(value)


def _count(table: dict[str, Any], key: str, section: str, where: Path) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value <= 0):
        raise LoadError(f"{where}: [{section}] {key} must be a positive integer, got {value!r}")
    return value


def _strings(table: dict[str, Any], key: str, section: str, where: Path) -> dict[str, str]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LoadError(f"{where}: [{section}] {key} must be a table of strings, got {value!r}")
    return dict(value)
