"""Resuming a job: its plan (what it runs, recorded with its status in the trace store), and
the rollouts of it that did not finish.

A rollout finished when its run is ``completed``, ``error`` or ``timeout``; a ``cancelled``
run (cut off by Ctrl-C) or a missing one did not. A resumed rollout continues the cut-off
run's trace (same trace id, its steps kept, a ``resume`` step after them), in the task's
group (same group id), so the job ends with exactly the runs it planned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from .taskset import Slot

if TYPE_CHECKING:
    from .taskset import Taskset
    from .trace import Trace

FINISHED = ("completed", "error", "timeout")
# api_key, token, client_secret, ... are left out of a stored plan: give them again.
_SECRET = re.compile(r"(key|token|secret|password|auth|credential)", re.IGNORECASE)


def make_plan(slots: list[Slot], *, group: int, config: dict[str, Any],
              command: dict[str, Any]) -> dict[str, Any]:
    """The JSON plan of a job: each task (slug, template, args) with its group id, the
    eval config and the command's own settings (``harness``: secret-looking names left out,
    and listed in ``withheld``)."""
    harness = command.get("harness", {})
    tasks: dict[str, dict[str, Any]] = {}
    for slot in slots:
        tasks.setdefault(slot.task.slug, {**task_row(slot.task), "group_id": slot.group_id})
    return {
        **command,
        "harness": {k: v for k, v in harness.items() if not _SECRET.search(k)},
        "withheld": sorted(k for k in harness if _SECRET.search(k)),
        "group": group, "config": config, "tasks": list(tasks.values()),
    }


def task_row(task: Any) -> dict[str, Any]:
    args = msgspec.json.decode(msgspec.json.encode(task.args))  # as it reads back from JSON
    return {"slug": task.slug, "id": task.id, "args": args}


def check_taskset(plan: dict[str, Any], taskset: Taskset) -> None:
    """Raise ``ValueError`` naming the difference when ``taskset`` is not the one the plan
    was made from (tasks added, removed, or with other templates or arguments)."""
    planned = {row["slug"]: (row["id"], row["args"]) for row in plan["tasks"]}
    current = {row["slug"]: (row["id"], row["args"]) for row in map(task_row, taskset)}
    if planned == current:
        return
    changes = [f"{slug} added" for slug in current if slug not in planned]
    changes += [f"{slug} removed" for slug in planned if slug not in current]
    changes += [f"{slug} changed" for slug in planned
                if slug in current and planned[slug] != current[slug]]
    raise ValueError("the taskset changed since the job ran (" + ", ".join(changes) + ")")


def remaining_slots(plan: dict[str, Any], taskset: Taskset, runs: Iterable[dict[str, Any]],
                    load_trace: Callable[[str], Trace]) -> list[Slot]:
    """The rollouts of the plan that did not finish, given the job's stored ``runs`` (index
    rows): each cut-off run continued (its trace from ``load_trace``), then new ones for
    rollouts that never started."""
    by_slug: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_slug.setdefault(run["slug"], []).append(run)
    slots = []
    for row in plan["tasks"]:
        stored = by_slug.get(row["slug"], [])
        missing = plan["group"] - sum(1 for run in stored if run["status"] in FINISHED)
        cut = [run["trace_id"] for run in stored if run["status"] not in FINISHED]
        task = taskset[row["slug"]]
        for i in range(max(0, missing)):
            trace = load_trace(cut[i]) if i < len(cut) else None
            slots.append(Slot(task, row["group_id"], trace))
    return slots
