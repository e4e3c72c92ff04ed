"""The trace store's SQLite schema, by version, and the migrations between versions.

``PRAGMA user_version`` holds the version. A store is migrated forward in one transaction when
a newer hud opens it; a store newer than this hud is refused (its reader would misread it).

* v1: ``jobs`` and ``runs``; trace documents without ``version`` (images inline as base64).
* v2: ``jobs.planned`` (rollouts the job will run: a running job's progress),
  ``runs.env_version`` and ``runs.cost``; trace documents carry the task, agent, tools and
  phases, and images are files under ``blobs/`` (v1 documents are still read as they are).
"""

from __future__ import annotations

import sqlite3

from ..errors import StoreError

SCHEMA_VERSION = 2

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

MIGRATIONS = {1: V1_TO_V2}
"""From version N to N + 1."""


def open_schema(db: sqlite3.Connection, where: object) -> None:
    """Create the newest schema in an empty index, or migrate an older one; raise
    :class:`StoreError` for a newer one. Safe against another process doing the same."""
    db.execute("BEGIN IMMEDIATE")  # the version is read and changed under one write lock
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where} holds schema v{version}; this hud reads up to "
                             f"v{SCHEMA_VERSION} (upgrade hud)")
        if version == 0:
            _script(db, V1)
            version = 1
        while version < SCHEMA_VERSION:
            _script(db, MIGRATIONS[version])
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
