"""What both command-line paths share (the typer app and the fast path of ``hud task``):
exit codes, writing results, reading arguments. Imports nothing heavy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

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
    if message.startswith("cannot reach an environment") and "refused" in message:
        return f"{message} (is it served? start it with `hud serve env.py`)"
    return message


def emit(value: Any) -> None:
    """Write one result to stdout: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        sys.stdout.write(value if value.endswith("\n") else value + "\n")
    else:
        import msgspec

        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


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
