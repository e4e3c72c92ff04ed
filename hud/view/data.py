"""What each page of ``hud view`` shows, read from the trace store's index in a few queries.

Every list is computed in SQL (aggregates, one page of rows), so a job of 10,000 runs costs
the same few queries as a job of ten; only the run page reads a trace document.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ..eval.store import TraceStore

PAGE_SIZE = 100
HISTOGRAM_BINS = 10
ERRORED = "('error', 'timeout', 'cancelled')"

_JOBS = f"""
SELECT j.id, j.name, j.agent, j.model, j.group_size, j.started_at, j.ended_at, j.planned,
       COUNT(r.trace_id) AS runs,
       COALESCE(SUM(r.status IN {ERRORED}), 0) AS errors,
       COALESCE(SUM(r.status = 'cancelled'), 0) AS cancelled,
       AVG(r.reward) AS reward,
       AVG(r.reward * r.reward) - AVG(r.reward) * AVG(r.reward) AS variance,
       COALESCE(SUM(r.cost), 0) AS cost,
       MAX(r.ended_at) AS last_ended, MIN(r.env) AS env
FROM jobs j LEFT JOIN runs r ON r.job_id = j.id
"""

JOB_SORTS = {"started": "j.started_at", "name": "j.name", "harness": "j.agent",
             "model": "j.model", "runs": "runs", "reward": "reward", "errors": "errors",
             "cost": "cost", "duration": "COALESCE(j.ended_at, last_ended) - j.started_at"}
RUN_SORTS = {"started": "started_at", "task": "slug", "reward": "reward", "status": "status",
             "duration": "ended_at - started_at", "cost": "cost", "steps": "steps"}


@dataclass(frozen=True, slots=True)
class Listing:
    """How a table is sorted and filtered (from the query string)."""

    sort: str = "started"
    descending: bool = True
    text: str = ""
    status: str = ""
    page: int = 0


def jobs(store: TraceStore, listing: Listing, limit: int = 500) -> list[dict[str, Any]]:
    """Jobs with their aggregates, filtered by ``listing.text`` (name, harness, model, id)."""
    where = ""
    params: tuple[str, ...] = ()
    if listing.text:
        where = ("WHERE j.name LIKE ?1 OR j.agent LIKE ?1 OR j.model LIKE ?1 "
                 "OR j.id LIKE ?1")
        params = (f"%{listing.text}%",)
    order = _order(JOB_SORTS, listing)
    rows = store.query(f"{_JOBS} {where} GROUP BY j.id ORDER BY {order} LIMIT {int(limit)}",
                       params)
    return [_job_row(dict(row)) for row in rows]


def job(store: TraceStore, job_id: str) -> dict[str, Any]:
    """One job's aggregates (as in :func:`jobs`); ``job_id`` is a full id."""
    rows = store.query(f"{_JOBS} WHERE j.id = ? GROUP BY j.id", (job_id,))
    return _job_row(dict(rows[0]))


def _job_row(row: dict[str, Any]) -> dict[str, Any]:
    variance = row.pop("variance")
    row["std"] = math.sqrt(max(variance, 0.0)) if variance is not None else None
    end = row["ended_at"] or row.pop("last_ended", None) or row["started_at"]
    row.pop("last_ended", None)
    row["duration"] = end - row["started_at"]
    # Not ended: running while runs are still to come, unless it was cut off (Ctrl-C leaves
    # its in-flight runs cancelled and no end time).
    row["running"] = (row["ended_at"] is None and not row["cancelled"]
                      and (row["planned"] is None or row["runs"] < row["planned"]))
    row["interrupted"] = row["ended_at"] is None and not row["running"]
    return row


def tasks(store: TraceStore, job_id: str) -> list[dict[str, Any]]:
    """Per task: runs, mean reward, its spread within the task's groups, errors."""
    rows = store.query(f"""
        SELECT slug, MIN(template) AS template, COUNT(*) AS runs,
               COUNT(DISTINCT group_id) AS groups, AVG(reward) AS reward,
               AVG(reward * reward) - AVG(reward) * AVG(reward) AS variance,
               MIN(reward) AS low, MAX(reward) AS high,
               SUM(status IN {ERRORED}) AS errors, SUM(cost) AS cost
        FROM runs WHERE job_id = ? GROUP BY slug ORDER BY slug""", (job_id,))
    result = []
    for row in rows:
        item = dict(row)
        variance = item.pop("variance")
        item["std"] = math.sqrt(max(variance, 0.0)) if variance is not None else None
        result.append(item)
    return result


def histogram(store: TraceStore, job_id: str) -> list[dict[str, Any]]:
    """Rewards of completed runs in :data:`HISTOGRAM_BINS` bins over [min(0, low), max(1,
    high)]: each ``{"low", "high", "count", "height"}`` (height: percent of the tallest)."""
    bounds = store.query("SELECT MIN(reward), MAX(reward) FROM runs WHERE job_id = ? AND "
                         "reward IS NOT NULL", (job_id,))[0]
    if bounds[0] is None:
        return []
    low, high = min(0.0, bounds[0]), max(1.0, bounds[1])
    width = (high - low) / HISTOGRAM_BINS
    rows = store.query(
        "SELECT MIN(CAST((reward - ?1) / ?2 AS INTEGER), ?3) AS bin, COUNT(*) AS n "
        "FROM runs WHERE job_id = ?4 AND reward IS NOT NULL GROUP BY bin",
        (low, width, HISTOGRAM_BINS - 1, job_id))
    counts = {row["bin"]: row["n"] for row in rows}
    tallest = max(counts.values())
    return [{"low": low + i * width, "high": low + (i + 1) * width,
             "count": counts.get(i, 0), "height": 100.0 * counts.get(i, 0) / tallest}
            for i in range(HISTOGRAM_BINS)]


def errors_by_phase(store: TraceStore, job_id: str) -> list[dict[str, Any]]:
    """Errors grouped by phase and type: count and one example message and run."""
    rows = store.query(f"""
        SELECT error_phase AS phase, error_type AS type, COUNT(*) AS count,
               MIN(error_message) AS message, MIN(trace_id) AS example
        FROM runs WHERE job_id = ? AND status IN {ERRORED}
        GROUP BY error_phase, error_type ORDER BY count DESC""", (job_id,))
    return [dict(row) for row in rows]


def runs(store: TraceStore, job_id: str, listing: Listing) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's runs (sorted and filtered by ``listing``) and how many match."""
    where, params = "job_id = ?", [job_id]
    if listing.text:
        where += " AND (slug LIKE ? OR trace_id LIKE ? OR error_message LIKE ?)"
        params += [f"%{listing.text}%"] * 3
    if listing.status == "errored":
        where += f" AND status IN {ERRORED}"
    elif listing.status:
        where += " AND status = ?"
        params.append(listing.status)
    total = store.query(f"SELECT COUNT(*) FROM runs WHERE {where}", tuple(params))[0][0]
    rows = store.query(
        f"SELECT trace_id, slug, group_id, status, reward, error_phase, error_type, "
        f"error_message, started_at, ended_at, steps, cost FROM runs WHERE {where} "
        f"ORDER BY {_order(RUN_SORTS, listing)} LIMIT {PAGE_SIZE} "
        f"OFFSET {PAGE_SIZE * listing.page}", tuple(params))
    return [dict(row) for row in rows], total


def comparable(store: TraceStore, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Other jobs on the same taskset (same name, same environment), most recent first."""
    rows = store.query(
        "SELECT id, name, agent, model, started_at FROM jobs j WHERE name = ? AND id != ? "
        "AND (SELECT MIN(env) FROM runs WHERE job_id = j.id) IS ? "
        "ORDER BY started_at DESC LIMIT 50", (job["name"], job["id"], job.get("env")))
    return [dict(row) for row in rows]


def compare(store: TraceStore, first: str, second: str) -> list[dict[str, Any]]:
    """Per task of either job: mean reward and errors in each, and the difference."""
    rows = store.query(f"""
        SELECT slug,
               AVG(CASE WHEN job_id = ?1 THEN reward END) AS a,
               AVG(CASE WHEN job_id = ?2 THEN reward END) AS b,
               SUM(job_id = ?1) AS runs_a, SUM(job_id = ?2) AS runs_b,
               SUM(job_id = ?1 AND status IN {ERRORED}) AS errors_a,
               SUM(job_id = ?2 AND status IN {ERRORED}) AS errors_b
        FROM runs WHERE job_id IN (?1, ?2) GROUP BY slug ORDER BY slug""", (first, second))
    result = []
    for row in rows:
        item = dict(row)
        both = item["a"] is not None and item["b"] is not None
        item["delta"] = item["b"] - item["a"] if both else None
        result.append(item)
    return result


def status(store: TraceStore, job_id: str) -> dict[str, Any]:
    """What a job page polls: counts that change while the job runs."""
    row = job(store, job_id)
    return {"runs": row["runs"], "errors": row["errors"], "reward": row["reward"],
            "running": row["running"], "planned": row["planned"], "now": time.time()}


def _order(columns: dict[str, str], listing: Listing) -> str:
    column = columns.get(listing.sort, columns["started"])
    direction = "DESC" if listing.descending else "ASC"
    return f"{column} IS NULL, {column} {direction}"  # empty values last, either way
