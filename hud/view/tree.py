"""Branching runs (``tasks.fork``) as ``hud view`` shows them: a prefix run and its branches.

A branch's index row names its prefix (``parent_id``) and the step it branched at
(``branch_step``); the index ``runs_by_parent (job_id, parent_id)`` answers every query here,
so a job's trees cost a few indexed queries however many runs it holds. Advantages are those
``hud export`` gives (:func:`~hud.eval.job.group_relative` over a prefix's completed branches).
"""

from __future__ import annotations

from typing import Any

from ..eval.job import group_relative
from ..eval.store import TraceStore

TREES_SHOWN = 50
_COLUMNS = "trace_id, slug, status, reward, steps, parent_id, branch_step"


def of_run(store: TraceStore, run: dict[str, Any]) -> dict[str, Any] | None:
    """Where ``run`` (an index row) stands in its tree: ``parent`` (the prefix's row, or
    ``None`` for a run that is not a branch), ``siblings`` (the prefix's branches, this run
    among them), and ``branches`` (the runs branched from this one); ``None`` when it is
    neither a branch nor a prefix."""
    parent = siblings = None
    if run["parent_id"]:
        found = _rows(store, "trace_id = ?", (run["parent_id"],))
        parent = found[0] if found else {"trace_id": run["parent_id"], "missing": True}
        siblings = _branches_of(store, run["job_id"], run["parent_id"])
    branches = _branches_of(store, run["job_id"], run["trace_id"])
    if parent is None and not branches:
        return None
    return {"parent": parent, "siblings": siblings, "branches": branches}


def of_job(store: TraceStore, job_id: str) -> dict[str, Any] | None:
    """The job's trees, oldest first: ``trees`` (at most :data:`TREES_SHOWN`, each a
    ``prefix`` row, its ``branches`` with their advantage, and their ``mean`` reward) and
    ``total`` (how many prefixes the job has); ``None`` when no run of it is a branch."""
    total = store.query("SELECT COUNT(DISTINCT parent_id) FROM runs WHERE job_id = ? "
                        "AND parent_id IS NOT NULL", (job_id,))[0][0]
    if not total:
        return None
    ids = [row[0] for row in store.query(
        "SELECT parent_id FROM runs WHERE job_id = ? AND parent_id IS NOT NULL "
        f"GROUP BY parent_id ORDER BY MIN(started_at) LIMIT {TREES_SHOWN}", (job_id,))]
    marks = ", ".join("?" * len(ids))
    prefixes = {row["trace_id"]: row for row in _rows(store, f"trace_id IN ({marks})", ids)}
    children: dict[str, list[dict[str, Any]]] = {key: [] for key in ids}
    for row in _rows(store, f"job_id = ? AND parent_id IN ({marks})", (job_id, *ids)):
        children[row["parent_id"]].append(row)
    trees = []
    for key in ids:
        branches = _with_advantages(children[key])
        rewards = [b["reward"] for b in branches if b["reward"] is not None]
        trees.append({"prefix": prefixes.get(key, {"trace_id": key, "missing": True}),
                      "branches": branches,
                      "mean": sum(rewards) / len(rewards) if rewards else None})
    return {"trees": trees, "total": total}


def _branches_of(store: TraceStore, job_id: str | None, parent_id: str) -> list[dict[str, Any]]:
    # job_id IS ?: a run forked outside a job has none; its branches neither
    return _with_advantages(_rows(store, "job_id IS ? AND parent_id = ?", (job_id, parent_id)))


def _rows(store: TraceStore, where: str, params: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in store.query(
        f"SELECT {_COLUMNS} FROM runs WHERE {where} ORDER BY started_at, trace_id",
        tuple(params))]


def _with_advantages(branches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each branch with ``advantage``: against its completed siblings, as ``hud export``
    computes it (``None`` for a branch that did not complete: it has no reward)."""
    graded = [b for b in branches if b["status"] == "completed" and b["reward"] is not None]
    advantages = group_relative([b["reward"] for b in graded])
    for branch in branches:
        branch["advantage"] = None
    for branch, advantage in zip(graded, advantages, strict=True):
        branch["advantage"] = advantage
    return branches
