"""``hud eval`` and ``hud check``: run a taskset against an agent and report the rewards.

Progress goes to stderr (:mod:`hud.eval.progress`); the results (a table, or JSON with
``--json``) to stdout. The first Ctrl-C cancels the rollouts in flight over the protocol (their
cleanup runs), records them, marks the job ``interrupted`` and prints a summary; a second one
exits at once. SIGTERM (``kill``, ``timeout``, ``docker stop``) does the same, with exit code
143. ``--resume JOB`` runs what an interrupted job did not finish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..eval.config import DEFAULT, EvalConfig
from ..eventloop import run as run_on_loop
from .common import EXIT_ENVIRONMENT, EXIT_USAGE, fail, results, user_prints_to_stderr

EXIT_ROLLOUT_ERRORS = 7
EXIT_CHECK_FAILED = 8
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Stop an eval cleanly; its exit code is 128 + the signal's number, as shells report it
(130 for a Ctrl-C, 143 for SIGTERM)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalCommand:
    """``hud eval`` as parsed: what to run, with which harness, where the results go, and
    the :class:`~hud.eval.config.EvalConfig` handed to the library as it is."""

    source: str | None
    """``None`` only with :attr:`resume` (the job's own)."""
    agent: str | None
    model: str | None = None
    harness_settings: tuple[str, ...] = ()
    """``--config key=value`` pairs, for the harness."""
    task_ids: str | None = None
    env: str | None = None
    output: Path | None = None
    trace_dir: Path | None = None
    json: bool = False
    config: EvalConfig = DEFAULT
    resume: str | None = None
    """A job id (or prefix) to resume: its own taskset, agent and config."""
    otlp: str | None = None
    """An OTLP/HTTP endpoint for the runs as OpenTelemetry traces (:mod:`hud.eval.otel`)."""


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


def load_taskset(source: str, env: str | None, task_ids: str | None, *,
                 templates: bool = False) -> Any:
    """The tasks of ``source`` (exit 6 when it does not load), filtered by ``task_ids``; with
    ``templates``, a source with no task rows (an ``env.py``) gives one task per template,
    with its default arguments. From here on, what user code prints goes to stderr."""
    from ..errors import LoadError
    from ..eval.taskset import Taskset

    user_prints_to_stderr()
    try:
        taskset = Taskset.from_source(source, env=env)
        if templates and not len(taskset) and Path(source).suffix not in (".json", ".jsonl"):
            taskset = _template_defaults(source)
    except (LoadError, OSError, ValueError) as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    if task_ids:
        taskset = taskset.filter(part.strip() for part in task_ids.split(","))
    if not len(taskset):
        fail(f"{source}: no tasks to run" + (f" matching {task_ids!r}" if task_ids else ""),
             EXIT_USAGE)
    return taskset


def _template_defaults(source: str) -> Any:
    """One task per template of the environment at ``source``, with its default arguments;
    a template that needs arguments is named on stderr and left out."""
    from ..eval.taskset import Taskset
    from ..loader import load_environment
    from ..protocol.errors import InvalidParams

    environment = load_environment(source)
    tasks = []
    for template in environment.templates.values():
        try:
            tasks.append(template.task())
        except InvalidParams as exc:
            sys.stderr.write(f"skipped template {template.id}: {exc.message} (it has no "
                             "default; list its tasks in tasks.py to check it)\n")
    return Taskset(tasks, name=environment.name)


def make_agent(name: str, model: str | None, config: dict[str, Any]) -> Any:
    from ..agents import create_agent

    if model:
        config = {**config, "model": model}
    try:
        agent = create_agent(name, **config)
        check = getattr(agent, "check", None)  # an Agent's; a plain callable has none
        if check is not None:
            check()
    except (LookupError, ValueError, TypeError) as exc:
        fail(str(exc), EXIT_USAGE)
    return agent


def run_eval(command: EvalCommand) -> int:
    from ..errors import StoreError
    from ..eval.progress import Tally
    from ..eval.store import TraceStore

    try:
        opened = TraceStore(command.trace_dir)
    except StoreError as exc:  # e.g. written by a newer hud
        fail(f"{exc}; pass --trace-dir DIR to record into another store", EXIT_USAGE)
    with opened as store:
        if command.resume:
            # lazy: only --resume needs it, and it imports load_taskset back from here
            from .resume import resumed

            command, job, slots, taskset = resumed(command, store)
            agent = _agent(command)
        else:
            taskset = load_taskset(command.source or ".", command.env, command.task_ids)
            slots = taskset.plan(command.config.group)
            agent = _agent(command)
            job = _new_job(command, taskset.name, agent, slots)
        try:
            runtime = command.config.create_runtime(agent, len(slots))
        except (LookupError, ValueError, TypeError) as exc:
            fail(f"--runtime {command.config.runtime}: {exc}", EXIT_USAGE)
        tally = Tally(len(slots))
        with _otlp_export(command.otlp) as export:
            stopped_by = run_on_loop(_run(taskset, agent, runtime, command, job, slots, tally,
                                          store, export))
    if stopped_by is not None:
        _print_interrupted(job, tally)
        return 128 + stopped_by
    _report(command, job)
    return EXIT_ROLLOUT_ERRORS if job.errors else 0


def _agent(command: EvalCommand) -> Any:
    return make_agent(command.agent or "", command.model,
                      parse_config(list(command.harness_settings)))


def _new_job(command: EvalCommand, name: str, agent: Any, slots: list[Any]) -> Any:
    from ..eval.job import Job

    job = Job(name, group=command.config.group, agent=getattr(agent, "name", None),
              model=getattr(agent, "model", None))
    job.plan = _plan(command, slots)
    return job


def _report(command: EvalCommand, job: Any) -> None:
    """The results on stdout (a table, or JSON), and one JSON line per run in ``--output``."""
    rows = [_run_row(run) for run in job.runs]
    if command.output:
        command.output.write_text(
            "".join(msgspec.json.encode(row).decode() + "\n" for row in rows))
    if command.json:
        summary = {"job": job.id, "name": job.name, "agent": job.agent, "model": job.model,
                   "reward": job.reward, "errors": len(job.errors), "tasks": job.summary(),
                   "runs": rows}
        results().write(msgspec.json.encode(summary).decode() + "\n")
    else:
        _print_table(job)
    results().flush()


def _plan(command: EvalCommand, slots: list[Any]) -> dict[str, Any]:
    from ..eval.resume import make_plan

    config = command.config
    return make_plan(
        slots, group=config.group,
        config={"max_concurrent": config.max_concurrent, "max_steps": config.max_steps,
                "timeout": config.timeout, "runtime": config.runtime,
                "retry_errors": config.retry_errors},
        command={"source": str(Path(command.source or ".").resolve()), "env": command.env,
                 "task_ids": command.task_ids, "agent": command.agent,
                 "model": command.model,
                 "harness": parse_config(list(command.harness_settings))})


def _otlp_export(url: str | None) -> Any:
    """``with``: a function exporting a finished run over OTLP, or ``None`` when export is
    off (no ``--otlp``, no ``OTEL_EXPORTER_OTLP_*ENDPOINT``)."""
    import contextlib

    from ..eval.otel import traces_endpoint

    endpoint = traces_endpoint(url)
    if endpoint is None:
        return contextlib.nullcontext()
    from ..eval.otel import open_otlp_export

    try:  # the extra is imported here, when asked for, so that a missing one is a usage error
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        fail(f"exporting to {endpoint} needs OpenTelemetry ({exc.name} is missing): "
             "pip install 'hud-runtime[otel]'", EXIT_USAGE)
    return open_otlp_export(endpoint)


async def _run(taskset: Any, agent: Any, runtime: Any, command: EvalCommand, job: Any,
               slots: list[Any], tally: Any, store: Any, export: Any = None) -> int | None:
    """Run the eval with progress on stderr; the signal that cut it off (a Ctrl-C, SIGTERM:
    the rollouts in flight were cancelled and recorded, and the job marked ``interrupted``),
    or None. ``export`` receives each finished run's trace."""
    from ..eval.progress import open_progress

    async with open_progress(tally, sys.stderr) as advance:
        def finished(run: Any) -> None:
            export(run.trace)
            advance(run)

        work = asyncio.ensure_future(taskset.run(
            agent, command.config, runtime=runtime, store=store, job=job, slots=slots,
            progress=advance if export is None else finished))
        interrupts = _interrupts(work, tally)
        with interrupts:
            await asyncio.wait([work])
    if work.cancelled():
        return interrupts.first
    work.result()
    return None


class _interrupts:
    """``with``: the first SIGINT or SIGTERM cancels ``work`` (:attr:`first` is its number);
    the second exits the process at once."""

    def __init__(self, work: asyncio.Future[Any], tally: Any) -> None:
        self.work, self.tally, self.count = work, tally, 0
        self.first: int | None = None

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOPPING_SIGNALS:
            loop.add_signal_handler(signum, self._interrupt, signum)

    def __exit__(self, *exc: object) -> None:
        for signum in STOPPING_SIGNALS:
            asyncio.get_running_loop().remove_signal_handler(signum)

    def _interrupt(self, signum: int) -> None:
        self.count += 1
        if self.count > 1:
            # The real stderr: a live display holds a proxy of it, and hid the cursor.
            stream = sys.__stderr__
            if stream is not None:
                show_cursor = "\x1b[?25h" if stream.isatty() else ""
                stream.write(f"{show_cursor}interrupted again: exiting now, without waiting "
                             "for cleanup\n")
                stream.flush()
            os._exit(128 + (self.first or signum))  # at once: no cleanup, by request
        self.first = signum
        in_flight = self.tally.total - self.tally.done
        cause, again = (("", "Ctrl-C again") if signum == signal.SIGINT
                        else (" on SIGTERM", "a second signal"))
        sys.stderr.write(f"stopping{cause}: cancelling the rollouts in flight (up to "
                         f"{in_flight}) and running their cleanup; {again} to quit at once\n")
        sys.stderr.flush()
        self.work.cancel()


def _print_interrupted(job: Any, tally: Any) -> None:
    mean = "-" if tally.mean is None else f"{tally.mean:.3f}"
    sys.stderr.write(
        f"interrupted: job {job.id[:12]} stopped with {tally.done} of {tally.total} "
        f"rollouts finished (mean reward {mean}, {tally.errors} errors); it is marked "
        f"interrupted in the trace store: `hud eval --resume {job.id[:12]}` runs the rest\n")


def _run_row(run: Any) -> dict[str, Any]:
    error = run.error
    return {
        "trace_id": run.trace_id, "job_id": run.job_id, "slug": run.task.slug,
        "template": run.task.id, "args": run.task.args, "group_id": run.group_id,
        "status": run.status, "reward": run.reward, "attempt": run.attempt,
        "subscores": run.trace.subscores, "info": run.trace.info, "answer": run.trace.answer,
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
    console = Console(file=results(), width=120)
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
    taskset = load_taskset(source, env, task_ids, templates=True)
    oracle = make_agent("oracle", None, {})
    nop = make_agent("nop", None, {})
    try:
        config = EvalConfig.from_options(timeout=timeout)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)

    async def both() -> tuple[Any, Any]:
        return await taskset.run(oracle, config), await taskset.run(nop, config)

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
        results().write(msgspec.json.encode(report).decode() + "\n")
        results().flush()
    else:
        for row in report:
            mark = "ok  " if row["ok"] else "FAIL"
            results().write(f"{mark}\t{row['slug']}\toracle={row['oracle']}\tnop={row['nop']}"
                             + "".join(f"\n\t- {p}" for p in row["problems"]) + "\n")
        results().flush()
        bad = sum(1 for row in report if not row["ok"])
        sys.stderr.write(f"{len(report) - bad} of {len(report)} tasks separate oracle from nop\n")
    return EXIT_CHECK_FAILED if any(not row["ok"] for row in report) else 0
