"""The local trace store: an SQLite index of jobs and runs, plus each run's trace as files.

Layout under the root (argument, else ``$HUD_TRACE_DIR``, else ``~/.hud/traces``)::

    index.db                        SQLite (WAL): tables ``jobs`` and ``runs``
    runs/<trace_id>/trace.json      the full Trace; each step's ``files`` maps name → path
    runs/<trace_id>/<index>-<name>  the bytes of one step file (a screenshot, ...)

File paths in ``trace.json`` are relative to the directory holding it, so a run's directory
can be copied elsewhere whole. Files are written before the index row is committed: a row
never points at a missing trace.

Exports rebuild OpenAI chat messages from the trace's steps. The step kinds and ``data`` keys
they read (harnesses record their work this way; other kinds are kept in the trace but left
out of the messages):

``prompt``       ``{"prompt": str | [block], "messages"?: [{"role", "content"}]}`` — the task's
                 prompt as a user message, or the template's whole conversation when
                 ``messages`` is present. Blocks are ``{"type": "text", "text"}`` and
                 ``{"type": "image", "data": <base64>, "mime_type"}``.
``message``      ``{"role": "system" | "user" | "assistant", "content"}`` — any other turn (a
                 harness's system prompt, a user follow-up); system turns go first.
``model``        ``{"content": str | None, "tool_calls"?: [{"id", "name", "arguments"}]}`` —
                 one model turn; ``arguments`` is a dict or its JSON text.
``tool_result``  ``{"tool_call_id", "content": str | [block], "name"?}`` — the result of one
                 tool call, as the model saw it (tool errors included).
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
from .job import group_relative
from .trace import Trace

if TYPE_CHECKING:
    from .job import Job
    from .run import Run

SCHEMA_VERSION = 1
INDEX_NAME = "index.db"
ERRORED = ("error", "timeout", "cancelled")

_SCHEMA = """
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

_RUN_COLUMNS = (
    "trace_id", "job_id", "env", "slug", "template", "args", "group_id", "status", "reward",
    "error_phase", "error_type", "error_message", "agent", "model", "started_at", "ended_at",
    "steps", "input_tokens", "output_tokens", "usage",
)

_JOB_SUMMARY = """
SELECT j.id, j.name, j.agent, j.model, j.group_size AS "group", j.started_at, j.ended_at,
       COUNT(r.trace_id) AS runs,
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
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.root} holds schema v{version}; this hud reads up to "
                             f"v{SCHEMA_VERSION} (upgrade hud)")
        if version < SCHEMA_VERSION:  # IF NOT EXISTS: another store may have just made it
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}"
                                   f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")

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
                "INSERT INTO jobs (id, name, agent, model, group_size, started_at, ended_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name=excluded.name,"
                " agent=excluded.agent, model=excluded.model, group_size=excluded.group_size,"
                " ended_at=COALESCE(excluded.ended_at, jobs.ended_at)",
                (job.id, job.name, job.agent, job.model, job.group, job.started_at, ended_at),
            )

    def save_run(self, run: Run) -> None:
        """Write a run's trace files and its index row; saving the same trace id again
        replaces both. The reward is stored only for completed runs (NULL otherwise: an
        infrastructure failure is never a 0). A job id not yet begun gets a bare job row.
        """
        trace = run.trace
        if not _SAFE_ID.fullmatch(trace.id):
            raise ValueError(f"trace id {trace.id!r} is not a plain name (letters, digits, ._-)")
        directory = self.root / "runs" / trace.id
        _write_json(directory / "trace.json", _trace_document(trace, directory))
        error = trace.error
        usage = dict(trace.usage)
        row = (
            trace.id, run.job_id, run.task.env, run.task.slug, run.task.id,
            _dumps(run.task.args), run.group_id, trace.status,
            trace.reward if trace.status == "completed" else None,
            error.phase if error else None, error.type if error else None,
            error.message if error else None, run.agent_name, run.model,
            trace.started_at, trace.ended_at, len(trace.steps),
            usage.get("input_tokens", 0), usage.get("output_tokens", 0), _dumps(usage),
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

    def run(self, trace_id: str) -> dict[str, Any]:
        """One run's index row plus ``trace``: its stored JSON (file paths relative to
        ``dir``, the run's directory). ``trace_id`` may be a unique prefix."""
        full = self._resolve("runs", "trace_id", trace_id, "run")
        row = _run_row(self._query("SELECT * FROM runs WHERE trace_id = ?", (full,))[0])
        row["dir"] = str(self.root / "runs" / full)
        row["trace"] = self._document(full)
        return row

    def _document(self, trace_id: str) -> dict[str, Any]:
        path = self.root / "runs" / trace_id / "trace.json"
        document: dict[str, Any] = msgspec.json.decode(path.read_bytes())
        return document

    def trace(self, trace_id: str) -> Trace:
        """Load a run's :class:`Trace` back, step files read in as bytes."""
        record = self.run(trace_id)
        directory = Path(record["dir"])
        document = record["trace"]
        for step in document.get("steps", []):
            step["files"] = {name: (directory / path).read_bytes()
                             for name, path in step.get("files", {}).items()}
        return msgspec.convert(document, Trace)

    def export(self, job_id: str, *, normalize_std: bool = True) -> Iterator[dict[str, Any]]:
        """Training rows for a job's completed runs: trace_id, job_id, task (env, slug, id,
        args), group_id, messages (OpenAI chat format, see the module docstring), reward,
        and advantage (:func:`group_relative` over the completed runs of its group).
        Runs that errored are left out, of the rows and of every group's advantages."""
        full = self._resolve("jobs", "id", job_id, "job")
        rows = self._query("SELECT * FROM runs WHERE job_id = ? AND status = 'completed' "
                           "AND reward IS NOT NULL ORDER BY group_id, started_at", (full,))
        groups: dict[str, list[sqlite3.Row]] = {}
        for row in rows:
            groups.setdefault(row["group_id"], []).append(row)
        for group_id, members in groups.items():
            rewards = [row["reward"] for row in members]
            advantages = group_relative(rewards, normalize_std=normalize_std)
            for row, advantage in zip(members, advantages, strict=True):
                trace = self._document(row["trace_id"])
                yield {
                    "trace_id": row["trace_id"], "job_id": full,
                    "task": {"env": row["env"], "slug": row["slug"], "id": row["template"],
                             "args": json.loads(row["args"])},
                    "group_id": group_id, "messages": trace_messages(trace),
                    "reward": row["reward"], "advantage": advantage,
                }

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


# -- trace files ------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _trace_document(trace: Trace, directory: Path) -> dict[str, Any]:
    """The trace as JSON builtins, each step's files written to ``directory`` and replaced
    by their paths relative to it."""
    directory.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    for step in trace.steps:
        paths = {}
        for name, payload in step.files.items():
            path = f"{step.index}-{_UNSAFE.sub('_', name) or 'file'}"
            (directory / path).write_bytes(payload)
            paths[name] = path
        document: dict[str, Any] = _builtins(msgspec.structs.replace(step, files={}))
        if paths:
            document["files"] = paths
        steps.append(document)
    document = _builtins(msgspec.structs.replace(trace, steps=[]))
    document["steps"] = steps
    return document


def _builtins(value: Any) -> Any:
    # Agents record what they like in step data; what JSON cannot hold is kept as its repr.
    return msgspec.to_builtins(value, enc_hook=repr)


def _write_json(path: Path, document: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_bytes(msgspec.json.encode(document))
    os.replace(temporary, path)


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _run_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["args"] = json.loads(record["args"])
    record["usage"] = json.loads(record["usage"])
    return record


# -- training messages ------------------------------------------------------------------------


def trace_messages(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages rebuilt from a stored trace's steps (kinds: module docstring)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for step in trace.get("steps", []):
        for message in _step_messages(step.get("kind"), step.get("data", {})):
            (system if message["role"] == "system" else messages).append(message)
    return system + messages


def _step_messages(kind: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "prompt":
        turns = data.get("messages")
        if isinstance(turns, list) and turns:
            return [_chat(turn.get("role", "user"), turn.get("content")) for turn in turns]
        return [_chat("user", data.get("prompt"))]
    if kind == "message":
        return [_chat(data.get("role", "user"), data.get("content"))]
    if kind == "model":
        return [_assistant(data)]
    if kind == "tool_result":
        message = {"role": "tool", "tool_call_id": data.get("tool_call_id"),
                   "content": _content(data.get("content"))}
        if data.get("name"):
            message["name"] = data["name"]
        return [message]
    return []


def _chat(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": _content(content)}


def _assistant(data: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": _content(data.get("content"))}
    calls = data.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [{
            "id": call.get("id"), "type": "function",
            "function": {"name": call.get("name"), "arguments": _arguments(call.get("arguments"))},
        } for call in calls]
    return message


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return _dumps({} if arguments is None else arguments)


def _content(content: Any) -> Any:
    """Text stays text; content blocks become OpenAI content parts (images as data URLs)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return [_part(block) for block in content]
    return str(content)


def _part(block: Any) -> Any:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if isinstance(block, dict) and block.get("type") == "image":
        url = f"data:{block.get('mime_type', 'image/png')};base64,{block.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    return block
