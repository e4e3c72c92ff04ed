"""What both command-line paths share (the typer app and the fast path of ``hud task``):
exit codes, writing results, reading arguments. Imports nothing heavy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ..protocol import errors

EXIT_USAGE, EXIT_CONNECTION, EXIT_PROTOCOL, EXIT_TASK, EXIT_ENVIRONMENT = 2, 3, 4, 5, 6

# Errors about the task itself (exit 5); every other protocol error is exit 4.
TASK_ERRORS = (
    errors.UnknownTask, errors.NoTaskInProgress, errors.AmbiguousSessions,
    errors.TemplateError, errors.UnknownSession, errors.SessionBusy, errors.Cancelled,
)


class UsageError(Exception):
    """A command line that cannot be acted on (exit 2)."""


def fail(message: str, code: int) -> NoReturn:
    """Say what went wrong on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(code)


def with_serve_hint(message: str) -> str:
    """A connection failure's message, plus what to do when nothing listens there."""
    if message.startswith("cannot reach an environment") and "refused" in message \
            and " the proxy " not in message:  # (the proxy's fault: hud.proxy names it)
        return f"{message} (is it served? start it with `hud serve env.py`)"
    return message


_results: TextIO | None = None  # the real stdout, once user code's prints go to stderr


def user_prints_to_stderr() -> None:
    """Before running user code (a task file, an environment, a harness): from here on what
    it prints, and what programs it starts print, goes to stderr (file descriptor 1 is made
    a copy of 2), so that stdout holds only this command's results, written through
    :func:`results`, which keeps the real stdout."""
    global _results
    if _results is not None:
        return
    try:
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # streams without descriptors: leave them
        return
    sys.stdout.flush()
    _results = os.fdopen(os.dup(out), "w", encoding=sys.stdout.encoding,
                         errors=sys.stdout.errors)
    os.dup2(err, out)


def results() -> TextIO:
    """Where a command writes its results: stdout (see :func:`user_prints_to_stderr`)."""
    return _results if _results is not None else sys.stdout


def emit(value: Any) -> None:
    """Write one result to stdout: strings as they are, anything else as JSON."""
    out = results()
    if isinstance(value, str):
        out.write(value if value.endswith("\n") else value + "\n")
    else:
        import msgspec

        out.write(msgspec.json.encode(value).decode() + "\n")
    out.flush()


def prompt_text(prompt: Any) -> Any:
    """A prompt as printed by ``hud task start``: text as it is, content blocks as JSON."""
    if isinstance(prompt, str):
        return prompt
    import msgspec

    return msgspec.to_builtins(prompt)


def parse_args_json(raw: str) -> dict[str, Any]:
    import msgspec

    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--args must be a JSON object")
    return value


def read_answer(answer: str | None, answer_file: str | Path | None) -> str:
    """The answer from ``--answer`` or ``--answer-file`` (``-``: stdin); exactly one."""
    if (answer is None) == (answer_file is None):
        raise UsageError("give exactly one of --answer and --answer-file")
    if answer is not None:
        return answer
    if str(answer_file) == "-":
        return sys.stdin.read()
    try:
        return Path(str(answer_file)).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --answer-file: {exc}") from None
