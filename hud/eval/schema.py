"""The trace store's SQLite schema, by version, and the migrations between versions.

``PRAGMA user_version`` holds the version. A store is migrated forward in one transaction when
a newer hud opens it; a store newer than this hud is refused (its reader would misread it).

* v1: ``jobs`` and ``runs``; trace documents without ``version`` (images inline as base64).
* v2: ``jobs.planned`` (rollouts the job will run: a running job's progress),
  ``runs.env_version`` and ``runs.cost``; trace documents carry the task, agent, tools and
  phases, and images are files under ``blobs/`` (v1 documents are still read as they are).
* v3: ``runs.parent_id`` and ``runs.branch_step`` (a branch of ``tasks.fork``: its prefix run
  and how many of the prefix's steps it shares, as its trace holds them), indexed by job and
  parent so ``hud view`` draws a job's trees in one query. Branches saved under v2 are filled
  in from their trace documents (a branch's group id is its prefix's trace id: only those are
  read).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError

SCHEMA_VERSION = 3

V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, agent TEXT, model TEXT,
    group_size INTEGER NOT NULL DEFAULT 1, started_at REAL NOT NULL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS runs (
    trace_id TEXT PRIMARY KEY, job_id TEXT,
    env TEXT NOT NULL, slug TEXT NOT NULL, template TEXT NOT NULL, args TEXT NOT NULL,
    group_id TEXT NOT NULL, status TEXT NOT NULL,
    reward REAL,  -- NULL unless status = 'completed'
    error_phase TEXT, error_type TEXT, error_message TEXT, agent TEXT, model TEXT,
    started_at REAL NOT NULL, ended_at REAL, steps INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    usage TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, group_id);
CREATE INDEX IF NOT EXISTS jobs_by_start ON jobs (started_at);
"""

V1_TO_V2 = """
ALTER TABLE jobs ADD COLUMN planned INTEGER;
ALTER TABLE runs ADD COLUMN env_version TEXT;
ALTER TABLE runs ADD COLUMN cost REAL NOT NULL DEFAULT 0;
UPDATE runs SET cost = COALESCE(json_extract(usage, '$.cost_usd'), 0);
CREATE INDEX IF NOT EXISTS runs_by_job_slug ON runs (job_id, slug);
"""

V2_TO_V3 = """
ALTER TABLE runs ADD COLUMN parent_id TEXT;
ALTER TABLE runs ADD COLUMN branch_step INTEGER;
CREATE INDEX IF NOT EXISTS runs_by_parent ON runs (job_id, parent_id);
"""


def _v2_to_v3(db: sqlite3.Connection, root: Path) -> None:
    _script(db, V2_TO_V3)
    branches = db.execute("SELECT b.trace_id FROM runs b JOIN runs p "
                          "ON p.trace_id = b.group_id").fetchall()
    for (trace_id,) in map(tuple, branches):
        path = root / "runs" / trace_id / "trace.json"
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # a run without its document: its row stays as it was
        if document.get("parent_id"):
            db.execute("UPDATE runs SET parent_id = ?, branch_step = ? WHERE trace_id = ?",
                       (document["parent_id"], document.get("branch_step"), trace_id))


Migration = Callable[[sqlite3.Connection, Path], None]
MIGRATIONS: dict[int, Migration] = {
    1: lambda db, root: _script(db, V1_TO_V2),
    2: _v2_to_v3,
}
"""From version N to N + 1, in the store at ``root``."""


def open_schema(db: sqlite3.Connection, root: Path) -> None:
    """Create the newest schema in an empty index, or migrate an older one; raise
    :class:`StoreError` for a newer one. Safe against another process doing the same."""
    db.execute("BEGIN IMMEDIATE")  # the version is read and changed under one write lock
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{root} holds schema v{version}; this hud reads up to "
                             f"v{SCHEMA_VERSION} (upgrade hud)")
        if version == 0:
            _script(db, V1)
            version = 1
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db, root)
            version += 1
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _script(db: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the transaction first: run the statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
