"""``hud eval --resume JOB``: run again, into the same job, the rollouts it did not finish,
with the taskset, agent and config it ran with (recorded as its plan in the trace store)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..eval.config import DEFAULT
from .common import EXIT_USAGE, fail

if TYPE_CHECKING:
    from ..eval.store import TraceStore
    from .evaluate import EvalCommand

# The command's settings a resumed job takes from its plan: given again, they must agree.
_OWN = {"source": "SOURCE", "agent": "AGENT", "model": "--model", "env": "--env",
        "task_ids": "--task-ids"}
_CONFIG = {"group": "--group", "max_steps": "--max-steps", "timeout": "--timeout",
           "runtime": "--runtime"}


def resumed(command: EvalCommand, store: TraceStore) -> tuple[EvalCommand, Any, list[Any], Any]:
    """The command as the job ran it, the job, the rollouts left, and the taskset; exits
    with a usage error when the job cannot be resumed (unknown, not from ``hud eval``, its
    taskset changed, or a setting given again that differs)."""
    from ..errors import UnknownId
    from ..eval.job import Job
    from ..eval.resume import check_taskset, remaining_slots
    from .evaluate import load_taskset

    try:
        record = store.job(command.resume or "")
    except UnknownId as exc:
        fail(f"--resume: {exc}", EXIT_USAGE)
    plan = store.job_plan(record["id"])
    if plan is None:
        fail(f"--resume: job {record['id'][:12]} was not run by this version of hud eval "
             "(no plan recorded): run it again instead", EXIT_USAGE)
    command = _as_planned(command, plan, record["id"])
    taskset = load_taskset(plan["source"], plan["env"], plan["task_ids"])
    try:
        check_taskset(plan, taskset)
    except ValueError as exc:
        fail(f"cannot resume job {record['id'][:12]}: {exc}; run it as a new job instead",
             EXIT_USAGE)
    slots = remaining_slots(plan, taskset, record["traces"], store.trace)
    if not slots:
        fail(f"job {record['id'][:12]} has nothing left to run: every rollout finished",
             EXIT_USAGE)
    job = Job(record["name"], group=plan["group"], agent=record["agent"],
              model=record["model"], id=record["id"])
    job.started_at = record["started_at"]
    total = plan["group"] * len(plan["tasks"])
    sys.stderr.write(f"resuming job {record['id'][:12]}: {len(slots)} of {total} rollouts "
                     "left to run\n")
    return command, job, slots, taskset


def _as_planned(command: EvalCommand, plan: dict[str, Any], job_id: str) -> EvalCommand:
    for name, flag in _OWN.items():
        given = getattr(command, name)
        if name == "source" and given is not None:
            given = str(Path(given).resolve())
        if given is not None and given != plan[name]:
            _differs(flag, given, plan[name], job_id)
    ran = {**plan["config"], "group": plan["group"]}
    for name, flag in _CONFIG.items():
        given = getattr(command.config, name)
        if given != getattr(DEFAULT, name) and given != ran[name]:
            _differs(flag, given, ran[name], job_id)
    withheld = [name for name in plan["withheld"]
                if not any(pair.startswith(f"{name}=") for pair in command.harness_settings)]
    if withheld:
        fail(f"--resume: job {job_id[:12]} ran with --config {', '.join(withheld)}, which "
             "the trace store does not keep: give them again with --config", EXIT_USAGE)
    settings = [f"{k}={_json(v)}" for k, v in plan["harness"].items()]
    config = dataclasses.replace(
        command.config, group=plan["group"], max_steps=plan["config"]["max_steps"],
        timeout=plan["config"]["timeout"], runtime=plan["config"]["runtime"],
        max_concurrent=command.config.max_concurrent or plan["config"]["max_concurrent"],
        retry_errors=command.config.retry_errors or plan["config"]["retry_errors"])
    return dataclasses.replace(
        command, source=plan["source"], agent=plan["agent"], model=plan["model"],
        env=plan["env"], task_ids=plan["task_ids"],
        harness_settings=(*settings, *command.harness_settings), config=config)


def _differs(flag: str, given: Any, ran: Any, job_id: str) -> None:
    fail(f"--resume: job {job_id[:12]} ran with {flag} {ran!r}, not {given!r}: a resumed job "
         f"keeps its settings (leave {flag} out)", EXIT_USAGE)


def _json(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()  # --config reads a value as JSON first
