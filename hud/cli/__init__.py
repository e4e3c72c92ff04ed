"""The ``hud`` command line. Thin: parse, build a config, make one call into the library.

stdout carries only results (a prompt, a reward, JSON); messages and logs go to stderr.
Each command imports what it needs inside its body, so ``hud task start`` never pays for
the server, and ``hud serve`` never pays for the client.

Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 connection, 4 protocol, 5 task,
6 environment (the source could not be loaded).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .. import __version__

EXIT_USAGE, EXIT_CONNECTION, EXIT_PROTOCOL, EXIT_TASK, EXIT_ENVIRONMENT = 2, 3, 4, 5, 6

app = typer.Typer(
    name="hud",
    help="Serve agent environments, and drive their tasks by hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
task_app = typer.Typer(help="List, start and grade tasks.", no_args_is_help=True)
app.add_typer(task_app, name="task")

UrlOption = Annotated[
    str,
    typer.Option("--url", "-u", envvar="HUD_URL", help="The environment's address."),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="HUD_TOKEN", help="Access token (or set HUD_TOKEN)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")]
DEFAULT_URL = "ws://127.0.0.1:8765"


def main() -> None:
    app()


def fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _run(coro: Any) -> Any:
    """Run a client coroutine, turning every hud failure into its exit code."""
    import asyncio

    from ..client import HudConnectionError
    from ..protocol import errors

    task_errors = (
        errors.UnknownTask, errors.NoTaskInProgress, errors.AmbiguousSessions,
        errors.TemplateError, errors.UnknownSession, errors.SessionBusy, errors.Cancelled,
    )
    try:
        return asyncio.run(coro)
    except (HudConnectionError, errors.Unauthorized) as exc:
        fail(str(exc), EXIT_CONNECTION)
    except task_errors as exc:
        fail(exc.message, EXIT_TASK)
    except errors.HudError as exc:
        fail(exc.message, EXIT_PROTOCOL)


def _emit(value: Any) -> None:
    """Write one result to stdout: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        sys.stdout.write(value if value.endswith("\n") else value + "\n")
    else:
        import msgspec

        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


@app.command()
def version() -> None:
    """Print hud's version and the protocol versions it speaks."""
    from ..protocol.messages import SUPPORTED_VERSIONS

    _emit(f"hud {__version__} (protocol {', '.join(SUPPORTED_VERSIONS)})")


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="env.py, a directory, or module:attr.")] = ".",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port (0: any free one).")] = 8765,
    token: TokenOption = None,
    park_ttl: Annotated[float, typer.Option(help="Seconds a parked task survives.")] = 600.0,
    call_timeout: Annotated[
        float, typer.Option(help="Seconds each template phase may take.")
    ] = 300.0,
    max_message_size: Annotated[
        int, typer.Option(help="Largest control frame accepted (characters).")
    ] = 16 * 1024 * 1024,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve an environment. Prints its URL on stdout once it listens; logs go to stderr."""
    from .serve import run_server

    code = run_server(
        target, host=host, port=port, token=token, park_ttl=park_ttl,
        call_timeout=call_timeout, max_message_size=max_message_size, verbose=verbose,
    )
    raise typer.Exit(code)


@task_app.command("list")
def task_list(
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="tasks.py, env.py or a directory.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", "-u", help="List a served environment's templates.")
    ] = None,
    token: TokenOption = None,
    json: JsonOption = False,
) -> None:
    """List task rows of a source, or the templates of a served environment (--url)."""
    from .tasks import list_served, list_source

    if url is not None:
        _run(list_served(url, token, json))
    else:
        list_source(source or ".", json)


@task_app.command("start")
def task_start(
    task: Annotated[str, typer.Argument(help="Template id (or a task slug with --source).")],
    args: Annotated[str, typer.Option("--args", "-a", help="Arguments as a JSON object.")] = "{}",
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="Resolve TASK as a slug here.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    json: JsonOption = False,
) -> None:
    """Start a task: prints the prompt on stdout and the session id on stderr.

    The task stays parked on the server until `hud task grade` (or its expiry).
    """
    from .tasks import start

    _run(start(task, args, source, url, token, json))


@task_app.command("grade")
def task_grade(
    task: Annotated[str, typer.Argument(help="Template id of the task being graded.")],
    answer: Annotated[str | None, typer.Option("--answer", help="The answer text.")] = None,
    answer_file: Annotated[
        Path | None, typer.Option("--answer-file", help="Read the answer from a file ('-': stdin).")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session id printed by `hud task start`.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    json: JsonOption = False,
) -> None:
    """Grade a started task: prints the reward on stdout."""
    from .tasks import grade, read_answer

    text = read_answer(answer, answer_file)
    _run(grade(task, text, session, url, token, json))


@app.command()
def init(
    name: Annotated[str | None, typer.Argument(help="Directory to write (default: here).")] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Write into a non-empty directory.")
    ] = False,
) -> None:
    """Write a minimal project (env.py, tasks.py, Dockerfile.hud, ...) that serves and grades."""
    from .scaffold import write_project

    target = Path(name) if name else Path.cwd()
    try:
        written = write_project(target, force=force)
    except FileExistsError as exc:
        fail(str(exc), EXIT_USAGE)
    for path in written:
        sys.stderr.write(f"wrote {path}\n")
    sys.stderr.write(f"next: cd {target} && hud serve env.py\n")
