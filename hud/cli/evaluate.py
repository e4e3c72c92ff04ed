"""``hud eval`` and ``hud check``: run a taskset against an agent and report the rewards.

Progress goes to stderr; the results (a table, or JSON with ``--json``) to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from ..eventloop import run as run_on_loop
from .app import fail
from .common import EXIT_ENVIRONMENT, EXIT_USAGE

EXIT_ROLLOUT_ERRORS = 7
EXIT_CHECK_FAILED = 8


def parse_config(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON where they parse as JSON, else strings."""
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--config wants key=value, got {pair!r}", EXIT_USAGE)
        try:
            config[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            config[key] = raw
    return config


def load_taskset(source: str, env: str | None, task_ids: str | None) -> Any:
    from ..eval.taskset import Taskset
    from ..loader import LoadError

    try:
        taskset = Taskset.from_source(source, env=env)
    except (LoadError, OSError, ValueError) as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    if task_ids:
        taskset = taskset.filter(part.strip() for part in task_ids.split(","))
    if not len(taskset):
        fail(f"{source}: no tasks to run" + (f" matching {task_ids!r}" if task_ids else ""),
             EXIT_USAGE)
    return taskset


def make_agent(name: str, model: str | None, config: dict[str, Any]) -> Any:
    from ..agents import create_agent

    if model:
        config = {**config, "model": model}
    try:
        agent = create_agent(name, **config)
        agent.check()
    except (LookupError, ValueError, TypeError) as exc:
        fail(str(exc), EXIT_USAGE)
    return agent


def run_eval(options: dict[str, Any]) -> int:
    from ..eval.runtimes import make_runtime

    taskset = load_taskset(options["source"], options["env"], options["task_ids"])
    agent = make_agent(options["agent"], options["model"], parse_config(options["config"]))
    width = options["max_concurrent"] or min(len(taskset) * options["group"], 32)
    try:
        runtime = make_runtime(
            options["runtime"], solutions=bool(getattr(agent, "needs_solutions", False)),
            token=options["token"], **({"size": width} if options["runtime"] in (None, "pool")
                                       else {}),
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    job = run_on_loop(_run(taskset, agent, runtime, width, options))
    rows = [_run_row(run) for run in job.runs]
    if options["output"]:
        Path(options["output"]).write_text(
            "".join(msgspec.json.encode(row).decode() + "\n" for row in rows))
    if options["json"]:
        summary = {"job": job.id, "name": job.name, "agent": job.agent, "model": job.model,
                   "reward": job.reward, "errors": len(job.errors), "tasks": job.summary(),
                   "runs": rows}
        sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
    else:
        _print_table(job)
    return EXIT_ROLLOUT_ERRORS if job.errors else 0


async def _run(taskset: Any, agent: Any, runtime: Any, width: int, options: dict[str, Any]) -> Any:
    from ..eval.store import TraceStore

    store = TraceStore(options["trace_dir"])
    with store, _progress(len(taskset) * options["group"]) as advance:
        return await taskset.run(
            agent, group=options["group"], max_concurrent=width, runtime=runtime,
            timeout=options["timeout"], max_steps=options["max_steps"],
            config=agent.config, store=store, progress=advance,
        )


class _progress:
    """A progress bar on stderr for batches (more than one rollout)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.total <= 1:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress("rollouts", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("rollouts", total=self.total)
        return lambda run: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run_row(run: Any) -> dict[str, Any]:
    error = run.error
    return {
        "trace_id": run.trace_id, "job_id": run.job_id, "slug": run.task.slug,
        "template": run.task.id, "args": run.task.args, "group_id": run.group_id,
        "status": run.status, "reward": run.reward,
        "subscores": run.trace.subscores, "answer": run.trace.answer,
        "error": None if error is None else msgspec.to_builtins(error),
    }


def _print_table(job: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{job.name} · {job.agent or 'agent'} · job {job.id[:8]}")
    for column in ("task", "runs", "mean reward", "spread (std)", "errors"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in job.summary():
        mean = "-" if row["mean"] is None else f"{row['mean']:.3f}"
        std = "-" if row["std"] is None else f"{row['std']:.3f}"
        table.add_row(row["slug"], str(row["runs"]), mean, std, str(row["errors"]))
    console = Console(file=sys.stdout, width=120)
    console.print(table)
    reward = "-" if job.reward is None else f"{job.reward:.3f}"
    console.print(f"mean reward {reward} over {len(job.runs) - len(job.errors)} completed "
                  f"runs; {len(job.errors)} errored")
    for run in job.errors[:10]:
        sys.stderr.write(f"error: {run.task.slug} ({run.status} during {run.error.phase}): "
                         f"{run.error.message}\n")


def run_check(source: str, env: str | None, task_ids: str | None, as_json: bool,
              timeout: float | None) -> int:
    """Every task: ``oracle`` must score 1 and ``nop`` must not; report the ones that fail."""
    from ..eval.pool import PoolRuntime

    taskset = load_taskset(source, env, task_ids)
    oracle = make_agent("oracle", None, {})
    nop = make_agent("nop", None, {})

    async def both() -> tuple[Any, Any]:
        solved = await taskset.run(oracle, runtime=PoolRuntime(solutions=True), timeout=timeout)
        idle = await taskset.run(nop, runtime=PoolRuntime(), timeout=timeout)
        return solved, idle

    solved, idle = run_on_loop(both())
    report = []
    for task, with_oracle, with_nop in zip(taskset, solved.runs, idle.runs, strict=True):
        problems = []
        if with_oracle.errored:
            problems.append(f"oracle {with_oracle.status} during {with_oracle.error.phase}: "
                            f"{with_oracle.error.message}")
        elif with_oracle.reward != 1.0:
            problems.append(f"oracle scored {with_oracle.reward} (must be 1)")
        if with_nop.errored:
            problems.append(f"nop {with_nop.status} during {with_nop.error.phase}: "
                            f"{with_nop.error.message}")
        elif with_nop.reward == 1.0:
            problems.append("nop scored 1 (the grader does not separate doing nothing)")
        report.append({"slug": task.slug, "template": task.id, "oracle": with_oracle.reward,
                       "nop": with_nop.reward, "ok": not problems, "problems": problems})
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        for row in report:
            mark = "ok  " if row["ok"] else "FAIL"
            sys.stdout.write(f"{mark}\t{row['slug']}\toracle={row['oracle']}\tnop={row['nop']}"
                             + "".join(f"\n\t- {p}" for p in row["problems"]) + "\n")
        bad = sum(1 for row in report if not row["ok"])
        sys.stderr.write(f"{len(report) - bad} of {len(report)} tasks separate oracle from nop\n")
    return EXIT_CHECK_FAILED if any(not row["ok"] for row in report) else 0
