"""Tasksets: the rows an evaluation runs, and running them against an agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..environment import Task, default_slug
from .branching import branch_rollout
from .config import DEFAULT, needs_solutions
from .job import Job
from .rollout import AgentCallable, rollout
from .run import Run
from .trace import Step, Trace, new_id

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

    def plan(self, group: int = 1) -> list[Slot]:
        """The rollouts of a job: every task ``group`` times, its repeats sharing a group id."""
        return [Slot(task, gid) for task in self for gid in [new_id()] for _ in range(group)]

    async def run(
        self,
        agent: AgentCallable,
        config: EvalConfig | None = None,
        *,
        runtime: Runtime | str | None = None,
        job: Job | None = None,
        store: Any = None,
        progress: Progress | None = None,
        slots: list[Slot] | None = None,
        branch_at: int | None = None,
        branches: int = 2,
        **settings: Any,
    ) -> Job:
        """Run every task ``group`` times (each task's repeats share a group id), at most
        ``config.width(...)`` at once, each in a fresh environment from ``runtime``: an open
        :class:`~hud.runtimes.Runtime`, else the one ``config.runtime`` names (default: a warm
        pool of isolated processes). ``settings`` are :class:`EvalConfig` fields that
        override ``config``'s (``run(agent, group=16)``). ``slots`` replaces the rollouts
        :meth:`plan` makes (a resumed job's). Returns the :class:`Job`.

        ``store`` (a ``TraceStore``) records every run as it finishes, and every run cut off
        when this is cancelled, before the cancellation propagates; the job's status goes
        from ``running`` to ``completed``, or ``interrupted``. ``progress`` sees each run.

        With ``branch_at=K``, each rollout runs the agent ``K`` steps, forks the episode
        ``branches`` ways (``tasks.fork``: a runtime that runs each task in its own process)
        and finishes each branch (:func:`hud.eval.branching.branch_rollout`); the job holds
        each prefix, then its branches."""
        if isinstance(runtime, str):
            settings["runtime"] = runtime
            runtime = None
        config = dataclasses.replace(config or DEFAULT, **settings)
        slots = self.plan(config.group) if slots is None else slots
        rollouts = len(slots)
        if runtime is None:
            runtime = config.create_runtime(agent, rollouts)
        elif needs_solutions(agent) and not runtime.solutions:
            raise ValueError(f"{getattr(agent, 'name', 'this agent')} needs a runtime with "
                             "solutions enabled (solutions=True)")
        job = job or Job(self.name, group=config.group, agent=getattr(agent, "name", None),
                         model=getattr(agent, "model", None))
        job.planned = rollouts if branch_at is None else rollouts * (1 + branches)
        if store is not None:
            store.begin_job(job)
            store.set_job_status(job.id, "running", job.plan)
        each = _Rollouts(agent, runtime, config, job, store, progress,
                         asyncio.Semaphore(config.width(rollouts)))
        try:
            async with runtime, asyncio.TaskGroup() as group:
                # A task group, not gather: cancelled, it waits for every rollout to record
                # its cut-off run (gather returns at the first, and the store closed under
                # the others).
                tasks = [group.create_task(each.one(slot) if branch_at is None else
                                           each.tree(slot, branch_at, branches))
                         for slot in slots]
        except asyncio.CancelledError:
            if store is not None:
                store.set_job_status(job.id, "interrupted")
            raise
        for task in tasks:
            job.runs.extend(task.result())
        job.ended_at = time.time()
        if store is not None:
            store.end_job(job)
            store.set_job_status(job.id, "completed")
        return job


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    """One rollout of a job: a task, its group id, and the trace it continues (a resumed
    run's, which keeps its id and steps), if any."""

    task: Task
    group_id: str
    trace: Trace | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Rollouts:
    """What every rollout of one :meth:`Taskset.run` shares."""

    agent: AgentCallable
    runtime: Runtime
    config: EvalConfig
    job: Job
    store: Any
    progress: Progress | None
    gate: asyncio.Semaphore

    def record(self, run: Run) -> Run:
        run.job_id = self.job.id
        if self.store is not None:
            self.store.save_run(run)
        return run

    async def one(self, slot: Slot) -> list[Run]:
        started: list[Run] = []
        async with self.gate:
            try:
                if getattr(self.runtime, "rollout", None) is None:
                    run = await rollout(slot.task, self.agent, self.runtime,
                                        group_id=slot.group_id, timeout=self.config.timeout,
                                        max_steps=self.config.max_steps,
                                        retries=self.config.retry_errors, trace=slot.trace,
                                        on_start=started.append)
                else:
                    run = await self.placed(slot, started.append)
            except asyncio.CancelledError:
                # Interrupted: the run (marked cancelled by the rollout) is recorded, so a
                # resumed job knows to run it again.
                for cut in started:
                    self.record(cut)
                raise
        self.record(run)
        if self.progress is not None:
            self.progress(run)
        return [run]

    async def placed(self, slot: Slot, on_start: Callable[[Run], object]) -> Run:
        """A rollout that its runtime places whole, agent included (``ray``), placed again
        while it fails in the environment phase (a dead node), up to ``retry_errors`` more
        times; each later attempt's trace starts with a ``retry`` step naming the last
        attempt's error."""
        place = self.runtime.rollout  # type: ignore[attr-defined]
        run: Run = await place(slot.task, self.agent, group_id=slot.group_id,
                               timeout=self.config.timeout, max_steps=self.config.max_steps,
                               on_start=on_start)
        for attempt in range(2, self.config.retry_errors + 2):
            error = run.trace.error
            if run.status != "error" or error is None or error.phase != "environment":
                break
            last = msgspec.to_builtins(error)
            run = await place(slot.task, self.agent, group_id=slot.group_id,
                              timeout=self.config.timeout, max_steps=self.config.max_steps,
                              on_start=on_start)
            trace = run.trace
            trace.attempt = attempt
            trace.steps.insert(0, Step(index=0, kind="retry", time=trace.started_at,
                                       data={"attempt": attempt, "after": "error",
                                             "error": last}))
            for index, step in enumerate(trace.steps):
                step.index = index
        return run

    async def tree(self, slot: Slot, branch_at: int, branches: int) -> list[Run]:
        """A prefix of ``branch_at`` steps, then its ``branches`` branches (see
        :func:`~hud.eval.branching.branch_rollout`), each recorded."""
        async with self.gate:
            runs = await branch_rollout(slot.task, self.agent, self.runtime,
                                        branch_at=branch_at, branches=branches,
                                        group_id=slot.group_id,
                                        max_steps=self.config.max_steps)
        for run in runs:
            self.record(run)
            if self.progress is not None:
                self.progress(run)
        return runs
