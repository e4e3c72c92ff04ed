"""``hud jobs``, ``hud trace``, ``hud export``, ``hud view``: read the local trace store.

stdout carries each command's result (a table, a rendered run, JSON, JSONL); messages go to
stderr. A missing store, or an id that matches nothing (or several), is a usage error (exit 2):
exit 6 means a source could not be loaded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from ..eval.store import TraceStore

EXIT_NOT_FOUND = 2  # the id or directory on the command line names nothing
T = TypeVar("T")

DirOption = Annotated[
    Path | None,
    typer.Option("--trace-dir", "--dir", "-d", help="Trace store directory (default: "
                 "$HUD_TRACE_DIR, else ~/.hud/traces); `hud eval --trace-dir` writes there."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add the ``jobs``, ``trace``, ``export`` and ``view`` commands to ``app``."""
    app.command("jobs")(jobs)
    app.command("trace")(trace)
    app.command("export")(export)
    app.command("view")(view)


def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show one job's runs (id or prefix).")]
    = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent jobs.")] = 20,
    json: JsonOption = False,
    directory: DirOption = None,
) -> None:
    """List recent jobs with their rewards, or one job's runs."""
    with _open(directory) as store:
        result = _lookup(store.job, job_id) if job_id else store.jobs(limit)
    if json:
        _emit_json(result)
    elif isinstance(result, dict):  # one job's
        _console().print(_job_table(result))
    else:
        _console().print(_jobs_table(result))


def trace(
    trace_id: Annotated[str, typer.Argument(help="Trace id (or a unique prefix).")],
    json: Annotated[bool, typer.Option("--json", help="Print the whole stored trace as JSON "
                                                    "(task, agent, tools, every step).")]
    = False,
    directory: DirOption = None,
) -> None:
    """Render one run: task, status, reward and subscores, error and phase, every step."""
    with _open(directory) as store:
        record = _lookup(store.run, trace_id)
    if json:
        # Everything the store holds: the document's image and step file paths resolve
        # against ``stored_at`` (images: root; step files: run_dir).
        _emit_json({**record["trace"], "stored_at": {
            "root": str(Path(record["dir"]).parent.parent), "run_dir": record["dir"]}})
        return
    _console().print(_render_run(record))


def export(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write JSONL here instead of stdout.")
    ] = None,
    directory: DirOption = None,
    export_format: Annotated[str, typer.Option(
        "--format", "-f", help="jsonl (training rows, the default) or atif (one ATIF "
        "trajectory per run, written to the --output directory, default ./atif-JOB).")]
    = "jsonl",
) -> None:
    """Write a job's completed runs as training JSONL (one schema, loads in `datasets`):
    messages, tools, sampling, reward, subscores, group id, advantage, sampled tokens; or,
    with `--format atif`, every run as a Harbor ATIF trajectory file."""
    import msgspec

    if export_format == "atif":
        _export_atif(job_id, output, directory)
        return
    if export_format != "jsonl":
        _fail(f"unknown export format {export_format!r}: use jsonl or atif")
    with _open(directory) as store:
        rows = list(_lookup(lambda key: list(store.export(key)), job_id))
    lines = b"".join(msgspec.json.encode(row) + b"\n" for row in rows)
    if output is None:
        sys.stdout.buffer.write(lines)
        sys.stdout.flush()
        return
    output.write_bytes(lines)
    sys.stderr.write(f"wrote {len(rows)} rows to {output}\n")


def _export_atif(job_id: str, output: Path | None, directory: Path | None) -> None:
    """Write the ATIF files; their paths on stdout, one a line."""
    from ..eval.atif import write_trajectories

    with _open(directory) as store:
        full = _lookup(store.find_job, job_id)
        paths = write_trajectories(store, full, output or Path(f"atif-{full}"))
    sys.stdout.write("".join(f"{path}\n" for path in paths))
    sys.stdout.flush()
    sys.stderr.write(f"wrote {len(paths)} ATIF trajectories to {output or f'atif-{full}'}\n")


def view(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535,
                                      help="Port (0: any free one).")] = 8766,
    host: Annotated[str, typer.Option(help="Interface to listen on; beyond loopback a token "
                                           "is required.")] = "127.0.0.1",
    traces: Annotated[
        Path | None, typer.Option("--trace-dir", "-d", help="Trace store "
                                  "directory (default: $HUD_TRACE_DIR, else ~/.hud/traces).")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="HUD_TOKEN", help="Access "
                     "token (generated and printed when listening beyond loopback).")] = None,
) -> None:
    """Browse jobs and runs in a web browser: prints the URL on stdout, serves until Ctrl-C.

    Examples: `hud view`, `hud view --port 0 --trace-dir ./traces`,
    `hud view --host 0.0.0.0` (prints a URL with its token).
    """
    import asyncio
    import contextlib
    import signal

    from ..errors import StoreError
    from ..eventloop import loop_factory
    from ..view import serve_view

    # uvicorn stops on SIGINT or SIGTERM, then raises the signal again: make SIGTERM end as
    # Ctrl-C does, in a clean exit 0 (as `hud serve` does).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.suppress(KeyboardInterrupt), \
                asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve_view(traces, host=host, port=port, token=token))
    except StoreError as exc:
        _fail(f"{exc}; run `hud eval` first, or pass --trace-dir DIR")
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {host}:{port}: {exc}\n")
        raise typer.Exit(3) from None


# -- plumbing ---------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(EXIT_NOT_FOUND)


def _open(directory: Path | None) -> TraceStore:
    from ..errors import StoreError
    from ..eval.store import TraceStore

    try:
        return TraceStore(directory, create=False)
    except StoreError as exc:
        _fail(str(exc))


def _lookup(find: Callable[[str], T], key: str) -> T:
    from ..errors import UnknownId

    try:
        return find(key)
    except UnknownId as exc:
        _fail(str(exc))


def _emit_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def _console() -> Any:
    """A console on stdout; when piped (and no ``COLUMNS``), wide enough not to wrap ids."""
    import os

    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=200 if piped else None)


def _jobs_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table("job", "name", "agent", "model", "status", "runs", "errors", "reward",
                  "tokens in/out", "cost", "started")
    for row in rows:
        table.add_row(row["id"][:12], row["name"], row["agent"] or "", row["model"] or "",
                      row["status"], str(row["runs"]), _errors(row["errors"]),
                      _reward(row["reward"]), f"{row['input_tokens']}/{row['output_tokens']}",
                      _cost(row["cost_usd"]), _when(row["started_at"]))
    if not rows:
        table.caption = "no jobs yet"
    return table


def _job_table(job: dict[str, Any]) -> Any:
    from rich.table import Table

    title = (f"{job['name']} ({job['id']}, {job['status']}): {job['runs']} runs, "
             f"{job['errors']} errors, reward {_reward(job['reward'])}, "
             f"cost {_cost(job['cost_usd'])}")
    table = Table("trace", "task", "group", "status", "reward", "error", "steps", "seconds",
                  "cost", title=title)
    for run in job["traces"]:
        error = f"{run['error_phase']}: {run['error_type']}" if run["error_phase"] else ""
        seconds = (f"{run['ended_at'] - run['started_at']:.2f}" if run["ended_at"] else "")
        table.add_row(run["trace_id"][:12], run["slug"], run["group_id"][:8], run["status"],
                      _reward(run["reward"]), error, str(run["steps"]), seconds,
                      _cost(run["usage"].get("cost_usd")))
    return table


def _reward(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cost(dollars: float | None) -> str:
    return "-" if dollars is None else f"${dollars:.4f}"


def _errors(count: int) -> str:
    return f"[red]{count}[/red]" if count else "0"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


# -- one run ----------------------------------------------------------------------------------


def _render_run(record: dict[str, Any]) -> Any:
    """A run as rich renderables: a summary grid, subscores, the error, then every step."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    doc = record["trace"]
    head = Table.grid(padding=(0, 2))
    head.add_row("trace", record["trace_id"])
    head.add_row("task", f"{escape(record['slug'])}  ({record['env']}:{record['template']} "
                 f"{escape(_short(record['args'], 200))})")
    head.add_row("job / group", f"{record['job_id'] or '-'} / {record['group_id']}")
    head.add_row("agent", f"{record['agent'] or '-'}  model {record['model'] or '-'}")
    color = "green" if record["status"] == "completed" else "red"
    head.add_row("status", f"[{color}]{record['status']}[/{color}]  reward "
                 f"{_reward(record['reward'])}  {_seconds(record)}")
    if doc.get("phases"):
        head.add_row("phases", " · ".join(
            f"{p['phase']} {p['ended_at'] - p['started_at']:.2f}s"
            for p in doc["phases"] if p.get("ended_at") is not None))
    if doc.get("tools"):
        head.add_row("tools", escape(", ".join(str(t.get("name")) for t in doc["tools"])))
    if doc.get("usage"):
        head.add_row("usage", escape(_short(doc["usage"], 200)))
    if "answer" in doc:
        head.add_row("answer", escape(_short(doc["answer"], 300)))
    parts: list[Any] = [head]
    if doc.get("subscores"):
        scores = Table("subscore", "score", "weight")
        for item in doc["subscores"]:
            scores.add_row(escape(str(item.get("name"))), f"{item.get('score', 0):.3f}",
                           f"{item.get('weight', 1.0):g}")
        parts.append(scores)
    if record["error_phase"]:
        parts.append(f"[red]error in {record['error_phase']}: {record['error_type']}: "
                     f"{escape(record['error_message'] or '')}[/red]")
    parts.append(_steps_table(doc, record["started_at"]))
    return Group(*parts)


def _steps_table(doc: dict[str, Any], started_at: float) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table("#", "kind", "at", "took", "detail", "files")
    for step in doc.get("steps", []):
        took = step.get("duration")
        table.add_row(str(step["index"]), step["kind"], f"+{step['time'] - started_at:.3f}s",
                      "" if took is None else f"{took:.3f}s",
                      escape(_detail(step["kind"], step.get("data", {}))),
                      escape(" ".join(step.get("files", {}).values())))
    return table


def _detail(kind: str, data: dict[str, Any]) -> str:
    """One step's data in a line or two: the parts a reader looks for first, by kind."""
    if kind == "prompt":
        return _short(data.get("prompt"), 300)
    if kind == "model":
        calls = [f"{c.get('name')}({_short(c.get('arguments'), 80)})"
                 for c in data.get("tool_calls") or []]
        return " ".join(filter(None, [_short(data.get("content") or "", 240), *calls]))
    if kind == "tool_result":
        return _short(data.get("content"), 300)
    if kind == "grade":
        names = ", ".join(f"{s.get('name')}={s.get('score')}" for s in data.get("subscores", []))
        return f"reward {data.get('reward')}" + (f" ({names})" if names else "")
    if kind == "error":
        return f"{data.get('phase')}: {data.get('type')}: {data.get('message')}"
    return _short(data, 300)


def _short(value: Any, limit: int) -> str:
    import msgspec

    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(record: dict[str, Any]) -> str:
    if record["ended_at"] is None:
        return ""
    return f"in {record['ended_at'] - record['started_at']:.2f}s"
