"""Workspace tools over an ``ssh`` capability: run a command; read, write and edit a file.

The tools drive a *shell handle*, anything with the methods of :class:`Shell` (the ssh
capability's client handle, or a :class:`hud.capabilities.sandbox.Sandbox`). Edits are exact,
unique string replacements: an edit whose ``old_string`` is missing or ambiguous fails with
a message the model can act on, and the file is left as it was.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any, Protocol

from hud.errors import ToolError

from .tool import Tool, ToolOutput, ToolSpec, sanitize_name

MAX_OUTPUT_CHARS = 30_000
DEFAULT_COMMAND_TIMEOUT = 120.0

BASH = ToolSpec(
    name="bash",
    description=(
        "Run a shell command with bash in the workspace and return its exit status, stdout "
        "and stderr. Each call starts a new shell: cd and exported variables do not carry "
        "over to the next call."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command line, run by bash -c."},
            "timeout": {"type": "number",
                        "description": "Seconds before the command is killed (default 120)."},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
)
READ_FILE = ToolSpec(
    name="read_file",
    description="Read a text file in the workspace, optionally a range of its lines.",
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "offset": {"type": "integer", "minimum": 1,
                       "description": "The first line to return, counting from 1."},
            "limit": {"type": "integer", "minimum": 1,
                      "description": "How many lines to return at most."},
        },
        "required": ["path"],
        "additionalProperties": False,
    },
)
WRITE_FILE = ToolSpec(
    name="write_file",
    description=("Write a text file in the workspace, replacing it if it exists and creating "
                 "its parent directories if needed."),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "content": {"type": "string", "description": "The whole new content of the file."},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
EDIT_FILE = ToolSpec(
    name="edit_file",
    description=("Edit a text file in the workspace by replacing one exact string with "
                 "another. old_string must occur exactly once in the file: include enough "
                 "surrounding lines to make it unique."),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "old_string": {"type": "string",
                           "description": "The exact text to replace, whitespace included."},
            "new_string": {"type": "string", "description": "The text to put in its place."},
        },
        "required": ["path", "old_string", "new_string"],
        "additionalProperties": False,
    },
)


class Shell(Protocol):
    """What the workspace tools need from a shell handle."""

    async def run(self, command: str, *, timeout: float | None = None) -> Any:
        """A finished command: ``exit_status``, ``stdout``, ``stderr`` (and ``timed_out``)."""

    async def read_file(self, path: str) -> bytes | str: ...

    async def write_file(self, path: str, data: bytes | str) -> None: ...


def shell_tools(shell: Shell, prefix: str | None = None) -> list[Tool]:
    """The four workspace tools on ``shell``; ``prefix`` qualifies their names when an
    environment offers several shells."""

    async def bash(args: dict[str, Any]) -> ToolOutput:
        command = _string(args, "command")
        timeout = float(args.get("timeout") or DEFAULT_COMMAND_TIMEOUT)
        return ToolOutput(command_report(await shell.run(command, timeout=timeout), timeout))

    async def read_file(args: dict[str, Any]) -> ToolOutput:
        text = await read_text(shell, _string(args, "path"))
        return ToolOutput(truncate(line_range(text, args.get("offset"), args.get("limit"))))

    async def write_file(args: dict[str, Any]) -> ToolOutput:
        path, text = _string(args, "path"), _string(args, "content")
        parent = posixpath.dirname(path)
        if parent not in ("", ".", "/"):
            await shell.run(f"mkdir -p -- {shlex.quote(parent)}", timeout=30)
        await shell.write_file(path, text)
        return ToolOutput(f"wrote {len(text.encode())} bytes to {path}")

    async def edit_file(args: dict[str, Any]) -> ToolOutput:
        path = _string(args, "path")
        text = await read_text(shell, path)
        edited = replace_once(text, _string(args, "old_string"), _string(args, "new_string"),
                              path)
        await shell.write_file(path, edited)
        return ToolOutput(f"edited {path}")

    functions = {"bash": bash, "read_file": read_file, "write_file": write_file,
                 "edit_file": edit_file}
    return [Tool(spec=ToolSpec(name=sanitize_name(spec.name, prefix),
                               description=spec.description, parameters=spec.parameters),
                 function=functions[spec.name])
            for spec in (BASH, READ_FILE, WRITE_FILE, EDIT_FILE)]


def replace_once(text: str, old: str, new: str, path: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced; a :class:`ToolError` when
    ``old`` is empty, missing or occurs more than once."""
    if not old:
        raise ToolError("old_string is empty; to write a whole file use write_file")
    count = text.count(old)
    if count == 0:
        raise ToolError(f"old_string was not found in {path}; read the file and copy the "
                        "text exactly, whitespace included")
    if count > 1:
        raise ToolError(f"old_string occurs {count} times in {path}; include more "
                        "surrounding text so that it occurs exactly once")
    return text.replace(old, new, 1)


def line_range(text: str, offset: Any = None, limit: Any = None) -> str:
    """Lines ``offset`` (from 1) to ``offset + limit - 1`` of ``text``; all of it by default."""
    if offset is None and limit is None:
        return text
    lines = text.splitlines(keepends=True)
    start = max(int(offset or 1), 1) - 1
    stop = None if limit is None else start + max(int(limit), 0)
    return "".join(lines[start:stop])


def command_report(result: Any, timeout: float | None = None) -> str:
    """A finished command as the model reads it: status line, then stdout and stderr."""
    if getattr(result, "timed_out", False):
        status = f"timed out after {timeout:g} s (killed)" if timeout else "timed out (killed)"
    else:
        status = f"exit status {getattr(result, 'exit_status', None)}"
    parts = [status]
    for name in ("stdout", "stderr"):
        stream = _text(getattr(result, name, "") or "")
        if stream:
            parts.append(f"[{name}]\n{truncate(stream)}")
    return "\n".join(parts)


async def read_text(shell: Shell, path: str) -> str:
    """A file's text (undecodable bytes replaced); a :class:`~hud.errors.ToolError` when it
    cannot be read."""
    try:
        data = await shell.read_file(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _text(data)


def _string(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise ToolError(f"missing string argument {key!r}")
    return value


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """Long output keeps its head and tail (errors are usually at the end)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters left out ...]\n{text[-half:]}"
