"""The typer app behind ``hud``: every command (see :mod:`hud.cli` for the exit codes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from ..eval.config import DEFAULT, WIDTH_CAP
from .common import (
    EXIT_CONNECTION,
    EXIT_PROTOCOL,
    EXIT_TASK,
    EXIT_USAGE,
    TASK_ERRORS,
    UsageError,
    emit,
    fail,
    with_serve_hint,
)

__all__ = ["app"]

app = typer.Typer(
    name="hud",
    help="Serve agent environments, and drive their tasks by hand.\n\n"
    "Start with `hud init my-env`, then `hud check my-env/env.py`.",
    no_args_is_help=True,
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


def _run(coro: Any) -> Any:
    """Run a client coroutine, turning every hud failure into its exit code."""
    from ..errors import HudConnectionError
    from ..eventloop import run
    from ..protocol import errors

    try:
        return run(coro)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except (HudConnectionError, errors.Unauthorized) as exc:
        fail(with_serve_hint(str(exc)), EXIT_CONNECTION)
    except TASK_ERRORS as exc:
        fail(exc.message, EXIT_TASK)
    except errors.HudError as exc:
        fail(exc.message, EXIT_PROTOCOL)


def _print_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print hud's version and the protocol versions, then exit."),
    ] = None,
) -> None:
    """The ``hud`` command; ``--version`` is handled by :func:`_print_version`."""


@app.command()
def version() -> None:
    """Print hud's version and the protocol versions it speaks."""
    from ..protocol.messages import SUPPORTED_VERSIONS

    emit(f"hud {__version__} (protocol {', '.join(SUPPORTED_VERSIONS)})")


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="env.py, a directory, or module:attr.")] = ".",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free one).")
    ] = 8765,
    token: TokenOption = None,
    park_ttl: Annotated[float, typer.Option(help="Seconds a parked task survives.")] = 600.0,
    call_timeout: Annotated[
        float, typer.Option(help="Seconds each template phase may take.")
    ] = 300.0,
    max_message_size: Annotated[
        int, typer.Option(help="Largest control frame accepted (characters).")
    ] = 16 * 1024 * 1024,
    enable_solutions: Annotated[
        bool, typer.Option(envvar="HUD_ENABLE_SOLUTIONS",
                           help="Serve tasks.solve (reveals answers; for oracle runs).")
    ] = False,
    max_forks: Annotated[int, typer.Option(
        min=0, help="Serve tasks.fork, with at most this many branches per call (each a "
                    "copy of this process: for a process serving one task). 0: off.")] = 0,
    ping_interval: Annotated[float, typer.Option(
        help="Seconds between pings of each control connection; a frozen client (no pong "
             "within as long again) is dropped and its task parked. 0: no pings.")] = 30.0,
    interrupt_blocking: Annotated[float, typer.Option(
        help="Seconds a template may hold the event loop in one go (time.sleep, a blocking "
             "call) before it is interrupted with a template error. 0: never.")] = 10.0,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", help="A web origin whose pages may connect (repeatable); "
                               "others are refused."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only.")] = False,
) -> None:
    """Serve an environment. Prints its URL on stdout once it listens; logs go to stderr.

    Examples: `hud serve env.py`, `hud serve . --port 0`,
    `hud serve env.py --host 0.0.0.0 --token "$HUD_TOKEN"`.
    """
    from .serve import run_server

    code = run_server(
        target, host=host, port=port, token=token, park_ttl=park_ttl,
        call_timeout=call_timeout, max_message_size=max_message_size,
        enable_solutions=enable_solutions, allowed_origins=tuple(allow_origin or ()),
        max_forks=max_forks,
        ping_interval=ping_interval or None, ping_timeout=ping_interval or 30.0,
        interrupt_blocking=interrupt_blocking or None,
        verbose=verbose, quiet=quiet,
    )
    raise typer.Exit(code)


@app.command()
def dev(
    target: Annotated[str, typer.Argument(help="env.py, a directory, or module:attr.")] = ".",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free one).")
    ] = 8765,
    enable_solutions: Annotated[
        bool, typer.Option(help="Serve tasks.solve (reveals answers; for oracle runs).")
    ] = False,
) -> None:
    """Serve an environment and reload it when its .py files change; the URL stays the same.

    A reload ends every task (its cleanup runs); a client connected across it is told
    on its next call that the environment was reloaded and it must start again.
    Example: `hud dev env.py`, then edit env.py and run `hud task list --url ...` again.
    """
    from .dev import run_dev

    extra = ["--enable-solutions"] if enable_solutions else []
    raise typer.Exit(run_dev(target, host=host, port=port, serve_args=extra))


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
    """List task rows of a source, or the templates of a served environment (--url).

    Examples: `hud task list --source tasks.py`, `hud task list --url ws://127.0.0.1:8765`.
    """
    from .tasks import list_served, list_source

    if url is not None:
        _run(list_served(url, token, json))
    else:
        list_source(source or ".", json)


@task_app.command("describe")
def task_describe(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    json: JsonOption = False,
) -> None:
    """A served environment: its name and version, templates, and capabilities with their
    parameters (an ssh capability's host key, to pin in known_hosts).

    Example: `hud task describe --url ws://127.0.0.1:8765 --json`.
    """
    from .tasks import describe

    _run(describe(url, token, json))


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

    Example: `hud task start count_letter --args '{"word": "banana", "letter": "a"}'`.
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
    """Grade a started task: prints the reward on stdout.

    Examples: `hud task grade count_letter --answer 3`,
    `hud task grade count_letter --answer-file answer.txt --session sess-…`.
    """
    from .common import read_answer
    from .tasks import grade

    try:
        text = read_answer(answer, answer_file)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    _run(grade(task, text, session, url, token, json))


@task_app.command("status")
def task_status(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    json: JsonOption = False,
) -> None:
    """Every task a served environment holds, live or parked: one line each on stdout.

    Example: `hud task status --url ws://127.0.0.1:8765 --json`.
    """
    from .tasks import status

    _run(status(url, token, json))


@app.command("eval")
def eval_(
    source: Annotated[
        str | None, typer.Argument(help="tasks.py, env.py, a directory, or .json/.jsonl.")
    ] = None,
    agent: Annotated[
        str | None, typer.Argument(help="Harness name (oracle, nop, ...) or a model.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model for the harness.")
    ] = None,
    group: Annotated[
        int, typer.Option(min=1, help="Runs per task (sharing a group id).")
    ] = DEFAULT.group,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help=f"Rollouts at once (default: up to {WIDTH_CAP}).")
    ] = DEFAULT.max_concurrent,
    max_steps: Annotated[
        int | None,
        typer.Option(min=1, help="Agent steps per rollout (default: the harness decides)."),
    ] = DEFAULT.max_steps,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds per rollout, all phases (default: no deadline)."),
    ] = DEFAULT.timeout,
    task_ids: Annotated[
        str | None, typer.Option(help="Comma-separated slugs, template ids or positions.")
    ] = None,
    runtime: Annotated[  # None: the config's default, named in the help
        str | None,
        typer.Option(help=f"{DEFAULT.runtime} (default), inprocess, subprocess, a ws:// URL, "
                          "container:IMAGE (a fresh container per rollout), or ray / "
                          "ray://HOST:PORT (a Ray cluster; ?isolation=inprocess: faster, "
                          "environments share Ray workers' processes)."),
    ] = None,
    warm: Annotated[int | None, typer.Option(
        min=0, help="Containers kept started and ready (container:IMAGE; default: 0).")] = None,
    max_starting: Annotated[int | None, typer.Option(
        min=1, help=f"Containers starting at once (container:IMAGE; default: "
                    f"{DEFAULT.max_starting}).")] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="Harness setting key=value.")
    ] = None,
    env: Annotated[str | None, typer.Option(help="The environment of .json/.jsonl rows.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write one JSON line per run here.")] = None,
    trace_dir: Annotated[
        Path | None, typer.Option(envvar="HUD_TRACE_DIR", help="Where traces are stored.")
    ] = None,
    token: TokenOption = None,
    json: JsonOption = False,
    resume: Annotated[
        str | None, typer.Option(help="Run what job JOB (an id or prefix) did not finish, into "
                                 "that job, with its taskset, agent and settings.",
                                 metavar="JOB")
    ] = None,
    retry_errors: Annotated[
        int | None, typer.Option(min=0, help="Try a rollout again, up to N times, when it "
                                 "failed for infrastructure reasons (environment, setup, lost "
                                 "connection; never a low reward or the agent's own error).",
                                 metavar="N")
    ] = DEFAULT.retry_errors,
    otlp: Annotated[
        str | None, typer.Option(help="Send each run as an OpenTelemetry trace (GenAI "
                                 "conventions) to this OTLP/HTTP endpoint (default: "
                                 "$OTEL_EXPORTER_OTLP_ENDPOINT; unset: off).", metavar="URL")
    ] = None,
) -> None:
    """Run every task against an agent, grade each rollout, report rewards.

    Progress (done, mean reward, errors, cost, ETA) goes to stderr.
    Ctrl-C stops cleanly and marks the job interrupted (exit 130; SIGTERM: 143); twice
    quits at once.
    `--resume JOB` then runs what it did not finish.

    Exits 7 when any rollout errored (a low reward is not an error).

    Harnesses (AGENT): oracle (the reference solutions), nop (does nothing),
    claude, openai, gemini, openai_compatible, robot, robot_scripted, robot_random,
    or a plug-in's (entry-point group hud.harnesses); a model name such as
    claude-sonnet-4-6 or gpt-5.1 picks its provider's harness.

    Examples: `hud eval tasks.py oracle --group 4`,
    `hud eval tasks.py openai_compatible --config base_url=http://127.0.0.1:8000/v1 -m my-model`.
    """
    from ..eval.config import EvalConfig
    from .evaluate import EvalCommand, run_eval

    try:
        settings = EvalConfig.from_options(
            group=group, max_concurrent=max_concurrent, max_steps=max_steps, timeout=timeout,
            runtime=runtime, token=token, retry_errors=retry_errors, warm=warm,
            max_starting=max_starting)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if resume is None and (source is None or agent is None):
        fail("hud eval needs SOURCE and AGENT (or --resume JOB)", EXIT_USAGE)
    raise typer.Exit(run_eval(EvalCommand(
        source=source, agent=agent, model=model, harness_settings=tuple(config or ()),
        task_ids=task_ids, env=env, output=output, trace_dir=trace_dir, json=json,
        config=settings, resume=resume, otlp=otlp,
    )))


@app.command()
def check(
    source: Annotated[str, typer.Argument(help="env.py, tasks.py, a directory, or rows.")] = ".",
    task_ids: Annotated[str | None, typer.Option(help="Comma-separated slugs or ids.")] = None,
    env: Annotated[str | None, typer.Option(help="The environment of .json/.jsonl rows.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per rollout.")] = 120.0,
    json: JsonOption = False,
) -> None:
    """Check every task: the oracle must score 1 and nop must not. Exits 8 otherwise.

    An env.py without task rows is checked with each template's default arguments.
    Examples: `hud check env.py`, `hud check tasks.py --task-ids count_letter-352c4b24`.
    """
    from .evaluate import run_check

    raise typer.Exit(run_check(source, env, task_ids, json, timeout))


@app.command()
def init(
    name: Annotated[str | None, typer.Argument(help="Directory to write (default: here).")] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Write into a non-empty directory.")
    ] = False,
    template: Annotated[
        str, typer.Option("--template", "-t", help="basic (a prompt and a grade), coding "
                          "(a sandboxed shell on a repository, graded by its tests), browser "
                          "(a form in Chromium, graded from the page) or desktop (an app "
                          "on a virtual display, driven over VNC).")
    ] = "basic",
) -> None:
    """Write a minimal project (env.py, tasks.py, Dockerfile.hud, ...) that serves and grades.

    Examples: `hud init my-env && hud check my-env/env.py`, `hud init repo-env -t coding`.
    """
    from .scaffold import write_project
    from .scaffold_kinds import KINDS

    if template not in KINDS:
        fail(f"--template {template!r}: choose one of {', '.join(KINDS)}", EXIT_USAGE)
    target = Path(name) if name else Path.cwd()
    try:
        written = write_project(target, force=force, kind=template)
    except FileExistsError as exc:
        fail(str(exc), EXIT_USAGE)
    except RuntimeError as exc:  # the wheel of hud for the image did not build
        fail(str(exc), 1)
    for path in written:
        sys.stderr.write(f"wrote {path}\n")
    sys.stderr.write(f"next: cd {target} && hud serve env.py\n")


def _register_trace_commands() -> None:
    from . import build, export, traces

    traces.register(app)
    build.register(app)
    export.register(app)


_register_trace_commands()
