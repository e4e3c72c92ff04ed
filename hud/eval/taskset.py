"""Tasksets: the rows an evaluation runs, and running them against an agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environment import Task, default_slug
from .config import DEFAULT, needs_solutions
from .job import Job
from .rollout import AgentCallable, rollout
from .run import Run
from .trace import new_id

if TYPE_CHECKING:
    from ..runtimes import Runtime
    from .config import EvalConfig

Progress = Callable[[Run], None]


ROWS_FORMAT = ('a JSON list of rows {"id": TEMPLATE, "args": {...}, "slug": optional} (or '
               '{"tasks": [...]}), or .jsonl with one row per line, as `Taskset.to_file` writes')


class Taskset:
    """An ordered collection of tasks, indexed by slug (slugs are unique: repeat a task
    with ``group=``, not by listing it twice)."""

    def __init__(self, tasks: Iterable[Task] = (), name: str | None = None) -> None:
        self.name = name or "taskset"
        self._tasks: dict[str, Task] = {}
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"a taskset holds Task rows, not {type(task).__name__}")
            if task.slug in self._tasks:
                raise ValueError(f"duplicate task {task.slug!r}: use group= to repeat a task")
            self._tasks[task.slug] = task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __getitem__(self, slug: str) -> Task:
        return self._tasks[slug]

    def __repr__(self) -> str:
        return f"Taskset({self.name!r}, {len(self)} tasks)"

    @property
    def slugs(self) -> list[str]:
        return list(self._tasks)

    def filter(self, selectors: Iterable[str]) -> Taskset:
        """Tasks whose slug, template id or position (``"0"``) is among ``selectors``."""
        wanted = set(selectors)
        rows = [t for i, t in enumerate(self) if {t.slug, t.id, str(i)} & wanted]
        return Taskset(rows, self.name)

    def exclude(self, slugs: Iterable[str]) -> Taskset:
        dropped = set(slugs)
        return Taskset([t for t in self if t.slug not in dropped], self.name)

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_source(cls, source: str | Path, *, env: str | None = None) -> Taskset:
        """From ``tasks.py``, an ``env.py`` with tasks in it, a directory, or a ``.json`` /
        ``.jsonl`` file of rows (whose environment is ``env``, else ``env.py`` beside it)."""
        path = Path(source)
        if path.suffix in (".json", ".jsonl"):
            return cls.from_file(path, env=env)
        from ..loader import load_tasks

        return cls(load_tasks(str(source)), name=path.resolve().stem)

    @classmethod
    def from_file(cls, path: str | Path, *, env: str | None = None) -> Taskset:
        """Rows ``{"id", "args", "slug"?}`` from JSON (a list) or JSONL, bound to the live
        templates of their environment so every runtime can run them."""
        from ..loader import load_environment
        from ..taskfile_env import load_task_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        mcp_tasks = load_task_file(path)  # the original SDK's rows: prompt, mcp_config, ...
        if mcp_tasks is not None:
            return cls(mcp_tasks[1], name=path.stem)
        text = path.read_text()
        try:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                loaded = json.loads(text)
                rows = loaded if isinstance(loaded, list) else loaded["tasks"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not task rows ({type(exc).__name__}: {exc}); "
                             f"expected {ROWS_FORMAT}") from None
        if not rows or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path} holds no task rows; expected {ROWS_FORMAT}")
        environment = load_environment(env or path.parent)
        tasks = []
        for i, row in enumerate(rows):
            template = environment.templates.get(row.get("id", ""))
            if template is None:
                raise ValueError(f"{path}: row {i} names no template of {environment.name!r}: "
                                 f"{row.get('id')!r}")
            task = template.task(**row.get("args", {}))
            slug = row.get("slug") or default_slug(task.id, task.args)
            tasks.append(Task(env=task.env, id=task.id, args=task.args, slug=slug,
                              template=template))
        return cls(tasks, name=path.stem)

    def to_file(self, path: str | Path) -> None:
        rows = [task.to_dict() for task in self]
        path = Path(path)
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            path.write_text(json.dumps(rows, indent=2) + "\n")

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        agent: AgentCallable,
        config: EvalConfig | None = None,
        *,
        runtime: Runtime | str | None = None,
        job: Job | None = None,
        store: Any = None,
        progress: Progress | None = None,
        **settings: Any,
    ) -> Job:
        """Run every task ``group`` times (each task's repeats share a group id), at most
        ``config.width(...)`` at once, each in a fresh environment from ``runtime``: an open
        :class:`~hud.runtimes.Runtime`, else the one ``config.runtime`` names (default: a warm
        pool of isolated processes). ``settings`` are :class:`EvalConfig` fields that
        override ``config``'s (``run(agent, group=16)``). Returns the :class:`Job`; ``store``
        (a ``TraceStore``) records every run as it finishes, ``progress`` sees each one."""
        if isinstance(runtime, str):
            settings["runtime"] = runtime
            runtime = None
        config = dataclasses.replace(config or DEFAULT, **settings)
        rollouts = len(self) * config.group
        if runtime is None:
            runtime = config.create_runtime(agent, rollouts)
        elif needs_solutions(agent) and not runtime.solutions:
            raise ValueError(f"{getattr(agent, 'name', 'this agent')} needs a runtime with "
                             "solutions enabled (solutions=True)")
        job = job or Job(self.name, group=config.group, agent=getattr(agent, "name", None),
                         model=getattr(agent, "model", None))
        if store is not None:
            store.begin_job(job)
        gate = asyncio.Semaphore(config.width(rollouts))
        plan = [(task, gid) for task in self for gid in [new_id()] for _ in range(config.group)]

        def record(run: Run) -> Run:
            run.job_id = job.id
            if store is not None:
                store.save_run(run)
            return run

        # A runtime that places whole rollouts, agent included (ray), runs them itself.
        place = getattr(runtime, "rollout", None)

        async def one(task: Task, group_id: str) -> Run:
            started: list[Run] = []
            async with gate:
                try:
                    if place is not None:
                        run: Run = await place(task, agent, group_id=group_id,
                                          timeout=config.timeout, max_steps=config.max_steps,
                                          on_start=started.append)
                    else:
                        run = await rollout(task, agent, runtime, group_id=group_id,
                                            timeout=config.timeout, max_steps=config.max_steps,
                                            on_start=started.append)
                except asyncio.CancelledError:
                    # Interrupted: the job keeps no end time, and its cut-off runs say so.
                    for cut in started:
                        record(cut)
                    raise
            record(run)
            if progress is not None:
                progress(run)
            return run

        async with runtime:
            job.runs.extend(await asyncio.gather(*(one(t, g) for t, g in plan)))
        job.ended_at = time.time()
        if store is not None:
            store.end_job(job)
        return job
