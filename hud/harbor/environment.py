"""A Harbor dataset as a hud environment: one template per task directory.

Each task runs in a fresh container of its image (built from ``environment/Dockerfile``
with podman or docker, once per content). The agent gets the container as the ``shell``
capability (``ssh/2``, per-task key); the prompt is ``instruction.md``. The agent has
``[agent] timeout_sec`` (the template's ``agent_timeout``). Once the agent has answered or
run out of time, ``tests/`` is copied to ``/tests`` and ``tests/test.sh`` runs there
(``[verifier] timeout_sec``, its output in ``/logs/verifier/test-stdout.txt``); the reward is
``/logs/verifier/reward.json`` (``{"name": number, ...}``: ``reward`` is the reward, else
the mean; the others are subscores) or ``reward.txt`` (one number). The reference solution
(the oracle's) copies ``solution/`` to ``/solution`` and runs ``solve.sh``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..capability import Service
from ..environment import Environment
from ..protocol.messages import Binding
from ..runner import Bindings, TaskScope, current_scope
from ..runtimes.engine import Engine, EngineFailed, find_engine
from .container import TaskContainer, image_for
from .shell import ContainerShell
from .task import HarborTask, read_dataset

log = logging.getLogger(__name__)

SHELL = "shell"
VERIFIER_DIR = "/logs/verifier"
_loaded: dict[Path, Environment] = {}


def harbor_environment(source: str | Path) -> Environment:
    """The environment of the Harbor dataset (or task directory) at ``source``; one object
    per directory in a process, so tasks loaded twice share their templates."""
    root = Path(source).resolve()
    if root not in _loaded:
        tasks = read_dataset(root)
        env = Environment(f"harbor-{root.name}", description=f"Harbor tasks from {root}")
        containers = Containers().attach(env)
        for task in tasks:
            _register(env, containers, task)
        env.source = str(root)  # type: ignore[attr-defined]  # where runtimes.source_of looks
        _loaded[root] = env
    return _loaded[root]


class Containers(Service):
    """The ``shell`` capability: an SSH daemon whose per-task keys open that task's
    container, started by the task hook and removed when the task ends."""

    def __init__(self) -> None:
        self.tasks: dict[str, HarborTask] = {}
        self.engine: Engine | None = None
        self.daemon: Any = None

    async def start(self) -> None:
        from ..capabilities.ssh.server import ShellDaemon

        self.engine = Engine(find_engine())
        self.daemon = ShellDaemon("root")
        await self.daemon.start()
        self.publish(Binding(
            name=SHELL, protocol="ssh/2", url=f"ssh://127.0.0.1:{self.daemon.port}",
            params={"user": "root", "host_pubkey": self.daemon.host_pubkey,
                    "isolation": "container", "shell": "bash", "sftp": False,
                    "credentials": "per-task"}))

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.aclose()
        self.daemon = None

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        assert self.engine is not None and self.daemon is not None, "not started"
        task = self.tasks[scope.template]
        container = TaskContainer(self.engine, task)
        shell = ContainerShell(container)
        try:
            await container.start(await image_for(self.engine, task))
            key = self.daemon.admit(shell)
            scope.state[self] = container
            try:
                yield {SHELL: {"client_key": key.export_private_key().decode(),
                               "task": scope.id}}
            finally:
                self.daemon.revoke(key)
                shell.closed = True
        except EngineFailed as exc:
            raise RuntimeError(f"Harbor task {task.name!r}: {exc}") from None
        finally:
            scope.state.pop(self, None)
            await container.remove()

    def current(self) -> TaskContainer:
        """The container of the task whose code runs now."""
        scope = current_scope()
        container = scope.state.get(self) if scope is not None else None
        if not isinstance(container, TaskContainer):
            raise RuntimeError("no Harbor task is running here")
        return container


def _register(env: Environment, containers: Containers, task: HarborTask) -> None:
    containers.tasks[task.name] = task

    async def run_task() -> Any:
        yield task.instruction
        yield await verify(containers.current(), task)

    async def solve() -> str:
        container = containers.current()
        await container.copy_in(task.path / "solution", "/solution")
        done = await container.run("bash /solution/solve.sh", env=task.solution_env,
                                   timeout=task.agent_timeout or task.verifier_timeout)
        if done.exit_status != 0:
            log.warning("%s: solution/solve.sh exited with %d: %s", task.name,
                        done.exit_status, done.stderr[-2000:])
        return ""

    phases = [task.build_timeout, task.verifier_timeout, task.agent_timeout or 0.0]
    template = env.template(id=task.name, description=task.instruction.strip()[:200],
                            timeout=max(phases), agent_timeout=task.agent_timeout)(run_task)
    if task.has_solution:
        template.solution(solve)


async def verify(container: TaskContainer, task: HarborTask) -> dict[str, Any]:
    """Run ``tests/test.sh`` in the container and read the reward it wrote."""
    await container.copy_in(task.path / "tests", "/tests")
    await container.run(f"mkdir -p {VERIFIER_DIR} && rm -f {VERIFIER_DIR}/reward.*",
                        timeout=30, user="root")
    done = await container.run(f"bash /tests/test.sh > {VERIFIER_DIR}/test-stdout.txt 2>&1",
                               env=task.verifier_env, timeout=task.verifier_timeout)
    info: dict[str, Any] = {"test_exit_status": done.exit_status, "timed_out": done.timed_out}
    # reward.json wins, as in Harbor; the kind goes on a line of its own after the file
    found = await container.run(
        f"cd {VERIFIER_DIR}; tail -c 2000 test-stdout.txt >&2; for kind in json txt; do "
        'if [ -f "reward.$kind" ]; then cat "reward.$kind"; printf "\\n%s" "$kind"; exit; fi; '
        "done; exit 1", timeout=30)
    info["test_output"] = found.stderr
    kind = found.stdout.rstrip().rpartition("\n")[2]
    text = found.stdout.rstrip().rpartition("\n")[0]
    if found.exit_status != 0 or kind not in ("json", "txt"):
        return {"reward": 0.0, "info": {**info, "error": f"tests/test.sh wrote no "
                                        f"{VERIFIER_DIR}/reward.txt or reward.json"}}
    reward = parse_reward(text, kind)
    reward["info"] = {**info, **reward.get("info", {})}
    return reward


def parse_reward(text: str, kind: str) -> dict[str, Any]:
    """``reward.txt`` (one number) or ``reward.json`` (``{name: number}``) as a reward with
    subscores; a malformed file scores 0 and says why in ``info``."""
    try:
        if kind == "txt":
            return {"reward": float(text.strip())}
        rewards = json.loads(text)
        if not isinstance(rewards, dict) or not rewards:
            raise ValueError("reward.json must be an object of named numbers")
        values = {str(k): float(v) for k, v in rewards.items()}
    except (ValueError, TypeError) as exc:
        return {"reward": 0.0, "info": {"error": f"reward.{kind}: {exc}"}}
    reward = values.pop("reward", None)
    if reward is None:
        reward = sum(values.values()) / len(values)
    return {"reward": reward, "subscores": values} if values else {"reward": reward}
