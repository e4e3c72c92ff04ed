"""``hud export-tasks SOURCE --format harbor DIR``: our tasks in another framework's format.

Progress (one line per task written) goes to stderr; stdout gets the directories written,
one a line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import EXIT_USAGE, fail

FORMATS = ("harbor",)


def register(app: typer.Typer) -> None:
    app.command("export-tasks")(export_tasks)


def export_tasks(
    source: Annotated[str, typer.Argument(help="tasks.py, env.py or a directory.")],
    directory: Annotated[Path, typer.Argument(help="Where to write the task directories.")],
    format: Annotated[str, typer.Option("--format", help="harbor (the only one so far).")
                      ] = "harbor",
    image: Annotated[str | None, typer.Option(
        "--image", help="The environment's image (default: NAME:VERSION, as `hud build` "
        "tags it).")] = None,
    task_ids: Annotated[str | None, typer.Option(help="Comma-separated slugs or ids.")] = None,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds for the agent and for the tests (task.toml).")] = None,
) -> None:
    """Write every task as a Harbor task directory (DIR/SLUG/: task.toml, instruction.md,
    environment/Dockerfile, tests/test.sh, solution/solve.sh).

    Example: `hud build examples/letter_count && hud export-tasks examples/letter_count/tasks.py
    --format harbor harbor-tasks`.
    """
    from ..eventloop import run
    from ..harbor.export import export_harbor
    from .common import results
    from .evaluate import load_taskset

    if format not in FORMATS:
        fail(f"--format {format!r}: choose one of {', '.join(FORMATS)}", EXIT_USAGE)
    tasks = list(load_taskset(source, None, task_ids))
    if directory.exists() and any(directory.iterdir()):
        fail(f"{directory} is not empty: export into a new directory", EXIT_USAGE)
    written = run(export_harbor(tasks, directory, image or _default_image(tasks), timeout))
    for path in written:
        sys.stderr.write(f"wrote {path}\n")
        results().write(f"{path}\n")
    results().flush()


def _default_image(tasks: list[Any]) -> str:
    """``NAME:VERSION`` of the tasks' environment, normalised as ``hud build`` does."""
    env = tasks[0].template.env
    name = re.sub(r"[^a-z0-9._-]+", "-", env.name.lower()).strip("-._") or "hud-env"
    version = re.sub(r"[^A-Za-z0-9._-]+", "-", env.version) or "latest"
    return f"{name}:{version}"
