"""The local trace store: an SQLite index of jobs and runs, plus each run's trace as files.

Layout under the root (argument, else ``$HUD_TRACE_DIR``, else ``~/.hud/traces``)::

    index.db                        SQLite (WAL): tables ``jobs`` and ``runs`` (:mod:`.schema`)
    runs/<trace_id>/trace.json      the full Trace; each step's ``files`` maps name → path
    runs/<trace_id>/<index>-<name>  the bytes of one step file
    blobs/<2 hex>/<sha256>.<ext>    every image in any trace, once (:mod:`.blobs`)

Step file paths in ``trace.json`` are relative to the directory holding it; image paths are
relative to the root. Files are written before the index row is committed: a row never
points at a missing trace. Nothing is truncated in the store (views truncate).

Exports rebuild training rows (chat messages, tools, sampled tokens) from the traces
(:mod:`.messages`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import StoreError, UnknownId
from .blobs import inline_images, write_document, write_json
from .job import group_relative
from .messages import trace_messages, training_row
from .schema import SCHEMA_VERSION, open_schema
from .trace import Trace

if TYPE_CHECKING:
    from .job import Job
    from .run import Run

__all__ = ["SCHEMA_VERSION", "TraceStore", "default_root", "trace_messages"]

INDEX_NAME = "index.db"
ERRORED = ("error", "timeout", "cancelled")

_RUN_COLUMNS = (
    "trace_id", "job_id", "env", "slug", "template", "args", "group_id", "status", "reward",
    "error_phase", "error_type", "error_message", "agent", "model", "started_at", "ended_at",
    "steps", "input_tokens", "output_tokens", "usage", "env_version", "cost", "parent_id",
    "branch_step",
)

_JOB_SUMMARY = """
SELECT j.id, j.name, j.agent, j.model, j.group_size AS "group", j.started_at, j.ended_at,
       j.planned, COUNT(r.trace_id) AS runs,
       COALESCE(SUM(r.status = 'completed'), 0) AS completed,
       COALESCE(SUM(r.status IN ('error', 'timeout', 'cancelled')), 0) AS errors,
       AVG(r.reward) AS reward,
       COALESCE(SUM(r.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(r.output_tokens), 0) AS output_tokens,
       SUM(json_extract(r.usage, '$.cost_usd')) AS cost_usd  -- NULL when no run was priced
FROM jobs j LEFT JOIN runs r ON r.job_id = j.id
"""


def default_root() -> Path:
    """``$HUD_TRACE_DIR`` when set, else ``~/.hud/traces``."""
    return Path(os.environ.get("HUD_TRACE_DIR") or Path.home() / ".hud" / "traces")

# Outside the versioned schema, created by every store that opens the index: a job's status
# (running, completed, interrupted) and its plan (what `hud eval --resume` reruns).
_JOB_STATUS = """
CREATE TABLE IF NOT EXISTS job_status (job_id TEXT PRIMARY KEY, status TEXT NOT NULL, plan TEXT)
"""
JOB_STATUSES = ("running", "completed", "interrupted")


class TraceStore:
    """An open trace store: one SQLite connection, safe to share between threads.

    Every method is synchronous and short (one transaction; ``save_run`` also writes the
    trace's files), so async code may call it directly. Several stores, in one process or
    many, may open the same root at once: SQLite's WAL mode and a busy timeout serialise
    the writers. With ``create=False`` a root without an index raises :class:`StoreError`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, create: bool = True):
        self.root = Path(root).expanduser() if root is not None else default_root()
        index = self.root / INDEX_NAME
        if not create and not index.exists():
            raise StoreError(f"no trace store at {self.root} (no {INDEX_NAME})")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(index, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._open_schema()
            self._db.execute(_JOB_STATUS)
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        open_schema(self._db, self.root)

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def begin_job(self, job: Job) -> None:
        """Record a job (again: its name, agent and model are updated)."""
        self._upsert_job(job, None)

    def end_job(self, job: Job) -> None:
        """Mark a job ended (at ``job.ended_at``, else now)."""
        self._upsert_job(job, job.ended_at or time.time())

    def _upsert_job(self, job: Job, ended_at: float | None) -> None:
        with _Transaction(self._db, self._lock) as db:
            db.execute(
                "INSERT INTO jobs (id, name, agent, model, group_size, started_at, ended_at,"
                " planned) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " name=excluded.name, agent=excluded.agent, model=excluded.model,"
                " group_size=excluded.group_size, planned=excluded.planned,"
                " ended_at=COALESCE(excluded.ended_at, jobs.ended_at)",
                (job.id, job.name, job.agent, job.model, job.group, job.started_at, ended_at,
                 job.planned),
            )

    def save_run(self, run: Run) -> None:
        """Write a run's trace files and its index row; saving the same trace id again
        replaces both. The reward is stored only for completed runs (NULL otherwise: an
        infrastructure failure is never a 0). A job id not yet begun gets a bare job row.
        """
        trace = run.trace
        if not _SAFE_ID.fullmatch(trace.id):
            raise ValueError(f"trace id {trace.id!r} is not a plain name (letters, digits, ._-)")
        trace.job_id = run.job_id
        trace.group_id = run.group_id
        directory = self.root / "runs" / trace.id
        write_json(directory / "trace.json", write_document(trace, self.root, directory))
        error = trace.error
        usage = dict(trace.usage)
        task = trace.task
        row = (
            trace.id, run.job_id, run.task.env, run.task.slug, run.task.id,
            _dumps(run.task.args), run.group_id, trace.status,
            trace.reward if trace.status == "completed" else None,
            error.phase if error else None, error.type if error else None,
            error.message if error else None, run.agent_name, run.model,
            trace.started_at, trace.ended_at, len(trace.steps),
            usage.get("input_tokens", 0), usage.get("output_tokens", 0), _dumps(usage),
            task.env_version if task else None, float(usage.get("cost_usd", 0)),
            trace.parent_id, trace.branch_step,
        )
        with _Transaction(self._db, self._lock) as db:
            if run.job_id is not None:
                db.execute("INSERT OR IGNORE INTO jobs (id, name, started_at) VALUES (?, ?, ?)",
                           (run.job_id, run.job_id, trace.started_at))
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(_RUN_COLUMNS))})", row)

    # -- reading --------------------------------------------------------------------------

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent jobs first: id, name, agent, model, group, runs, completed,
        errors, reward (mean over completed runs, ``None`` when none), input_tokens and
        output_tokens (totals), cost_usd (total, ``None`` when no run was priced),
        started/ended_at."""
        rows = self._query(_JOB_SUMMARY + " GROUP BY j.id ORDER BY j.started_at DESC LIMIT ?",
                           (limit,))
        return [self._with_status(dict(row)) for row in rows]

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's summary (as in :meth:`jobs`) plus ``traces``: its run rows, by task and
        group. ``job_id`` may be a unique prefix; else :class:`UnknownId`."""
        full = self._resolve("jobs", "id", job_id, "job")
        summary = self._with_status(
            dict(self._query(_JOB_SUMMARY + " WHERE j.id = ? GROUP BY j.id", (full,))[0]))
        rows = self._query("SELECT * FROM runs WHERE job_id = ? "
                           "ORDER BY slug, group_id, started_at", (full,))
        summary["traces"] = [_run_row(row) for row in rows]
        return summary

    def find_job(self, prefix: str) -> str:
        """The full id of the job ``prefix`` names (an id or a unique prefix); else
        :class:`UnknownId`."""
        return self._resolve("jobs", "id", prefix, "job")

    def run(self, trace_id: str) -> dict[str, Any]:
        """One run's index row plus ``trace``: its stored JSON (file paths relative to
        ``dir``, the run's directory). ``trace_id`` may be a unique prefix."""
        full = self._resolve("runs", "trace_id", trace_id, "run")
        row = _run_row(self._query("SELECT * FROM runs WHERE trace_id = ?", (full,))[0])
        row["dir"] = str(self.root / "runs" / full)
        row["trace"] = _upgraded(self._document(full), row)
        return row

    def _document(self, trace_id: str) -> dict[str, Any]:
        path = self.root / "runs" / trace_id / "trace.json"
        document: dict[str, Any] = msgspec.json.decode(path.read_bytes())
        return document

    def trace(self, trace_id: str) -> Trace:
        """Load a run's :class:`Trace` back, step files read in as bytes."""
        record = self.run(trace_id)
        directory = Path(record["dir"])
        document = inline_images(record["trace"], self.root)
        for step in document.get("steps", []):
            step["files"] = {name: (directory / path).read_bytes()
                             for name, path in step.get("files", {}).items()}
        return msgspec.convert(document, Trace)

    def export(self, job_id: str, *, normalize_std: bool = True) -> Iterator[dict[str, Any]]:
        """Training rows (:func:`~.messages.training_row`) for a job's completed runs, the
        ``advantage`` of each :func:`group_relative` over the completed runs of its group.
        Runs that errored are left out, of the rows and of every group's advantages."""
        full = self._resolve("jobs", "id", job_id, "job")
        rows = self._query("SELECT * FROM runs WHERE job_id = ? AND status = 'completed' "
                           "AND reward IS NOT NULL ORDER BY group_id, started_at", (full,))
        groups: dict[str, list[sqlite3.Row]] = {}
        for row in rows:
            groups.setdefault(row["group_id"], []).append(row)
        for members in groups.values():
            rewards = [row["reward"] for row in members]
            advantages = group_relative(rewards, normalize_std=normalize_std)
            for row, advantage in zip(members, advantages, strict=True):
                trace = inline_images(self._document(row["trace_id"]), self.root)
                yield {**training_row(trace, {**dict(row), "job_id": full}, advantage),
                       **_branch_fields(trace)}

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query on the index (the tables of :mod:`.schema`)."""
        return self._query(sql, params)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _resolve(self, table: str, column: str, prefix: str, what: str) -> str:
        if not prefix:
            raise UnknownId(f"empty {what} id")
        rows = self._query(f"SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ? "
                           "LIMIT 6", (prefix, prefix + "\U0010ffff"))
        ids = [row[0] for row in rows]
        if prefix in ids or len(ids) == 1:
            return prefix if prefix in ids else ids[0]
        if not ids:
            raise UnknownId(f"no {what} with id {prefix!r} in {self.root}")
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise UnknownId(f"{what} id prefix {prefix!r} is ambiguous: {shown}")

    # -- job status (every summary above carries it: :meth:`_with_status`) ------------------

    def set_job_status(self, job_id: str, status: str, plan: dict[str, Any] | None = None,
                       ) -> None:
        """Record a job's status (one of :data:`JOB_STATUSES`) and, when given, its plan
        (JSON: what a resumed job runs again); a plan recorded before is kept otherwise."""
        if status not in JOB_STATUSES:
            raise ValueError(f"job status {status!r} is not one of {', '.join(JOB_STATUSES)}")
        with _Transaction(self._db, self._lock) as db:
            db.execute("INSERT INTO job_status (job_id, status, plan) VALUES (?, ?, ?) "
                       "ON CONFLICT (job_id) DO UPDATE SET status=excluded.status, "
                       "plan=COALESCE(excluded.plan, job_status.plan)",
                       (job_id, status, None if plan is None else _dumps(plan)))

    def job_plan(self, job_id: str) -> dict[str, Any] | None:
        """The plan recorded with a job's status (``job_id`` in full), ``None`` if none."""
        rows = self._query("SELECT plan FROM job_status WHERE job_id = ?", (job_id,))
        return json.loads(rows[0]["plan"]) if rows and rows[0]["plan"] else None

    def _with_status(self, job: dict[str, Any]) -> dict[str, Any]:
        """``job`` with ``status``: the recorded one; for a job recorded without one,
        ``completed`` once it has an end time, else ``unfinished``."""
        rows = self._query("SELECT status FROM job_status WHERE job_id = ?", (job["id"],))
        job["status"] = rows[0]["status"] if rows else (
            "completed" if job["ended_at"] is not None else "unfinished")
        return job


class _Transaction:
    """``with``: hold the store's lock and run one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


# -- rows and documents ----------------------------------------------------------------------

_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _branch_fields(trace: dict[str, Any]) -> dict[str, Any]:
    """A branch's row names its prefix run (``tasks.fork``) and the step it branched at
    (both null in every other row: one schema for all rows); its group is its siblings, so
    its advantage is against them."""
    return {"prefix_id": trace.get("parent_id"), "branch_step": trace.get("branch_step")}


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _run_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["args"] = json.loads(record["args"])
    record["usage"] = json.loads(record["usage"])
    return record


def _upgraded(document: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A v1 document (no ``version``) completed from its index row: job, group, task and
    agent, as a v2 document holds them. A v2 document is returned as it is."""
    if document.get("version"):
        return document
    task = {"env": row["env"], "slug": row["slug"], "template": row["template"],
            "args": row["args"]}
    agent = {key: row[key] for key in ("agent", "model") if row[key] is not None}
    return {"version": 1, "job_id": row["job_id"], "group_id": row["group_id"],
            "task": task, "agent": {"name": agent.get("agent"), "model": agent.get("model")},
            **document}
