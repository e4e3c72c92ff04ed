"""File editing as the providers' native editing tools define it, over a shell handle.

:class:`TextEditor` is Anthropic's text editor tool (``view`` with line numbers and
``view_range``, ``create``, ``str_replace`` with a unique match, ``insert``, ``undo_edit``);
:func:`parse_diff` and :func:`apply_diff` are the V4A diff format of OpenAI's
``apply_patch`` tool. Failures raise :class:`~hud.errors.ToolError` with a message the model
can act on, and leave the file as it was.

The shell handle is anything with the methods of
:class:`~hud.harnesses.shell_tools.Shell` (the ssh capability's client).
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

from hud.errors import ToolError

from .shell_tools import Shell, read_text, truncate
from .tool import ToolOutput

SNIPPET_LINES = 4


def numbered(lines: list[str], first: int = 1) -> str:
    """``lines`` as ``cat -n`` shows them: each after its number, right-aligned in six
    columns, and a tab."""
    return "".join(f"{n:6}\t{line}\n" for n, line in enumerate(lines, start=first))


def _lines(text: str) -> list[str]:
    """A file's lines; a final newline ends the last line rather than starting another."""
    lines = text.split("\n")
    return lines[:-1] if len(lines) > 1 and lines[-1] == "" else lines


class TextEditor:
    """Anthropic's ``str_replace_based_edit_tool`` commands on one shell. Keeps each file's
    earlier contents for ``undo_edit`` (for as long as the editor lives: one run)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.history: dict[str, list[str]] = {}

    async def __call__(self, args: dict[str, Any]) -> ToolOutput:
        command = args.get("command")
        path = args.get("path")
        if not isinstance(path, str) or not path:
            raise ToolError("missing string argument 'path'")
        handler = {"view": self.view, "create": self.create, "str_replace": self.str_replace,
                   "insert": self.insert, "undo_edit": self.undo_edit}.get(str(command))
        if handler is None:
            raise ToolError(f"unknown command {command!r}; use view, create, str_replace, "
                            "insert or undo_edit")
        return ToolOutput(await handler(path, args))

    async def view(self, path: str, args: dict[str, Any]) -> str:
        listing = await self.shell.run(
            f"if [ -d {shlex.quote(path)} ]; then find {shlex.quote(path)} -maxdepth 2 "
            "-not -path '*/.*' | sort; else exit 3; fi", timeout=30)
        if getattr(listing, "exit_status", None) == 0:
            return (f"Here are the files and directories up to 2 levels deep in {path}, "
                    f"excluding hidden items:\n{listing.stdout}")
        text = await read_text(self.shell, path)
        first, lines = 1, _lines(text)
        view_range = args.get("view_range")
        if view_range is not None:
            first, last = _view_range(view_range, len(lines))
            lines = lines[first - 1:None if last == -1 else last]
        return (f"Here's the result of running `cat -n` on {path}:\n"
                + truncate(numbered(lines, first)))

    async def create(self, path: str, args: dict[str, Any]) -> str:
        text = _string(args, "file_text")
        exists = await self.shell.run(f"test -e {shlex.quote(path)}", timeout=30)
        if getattr(exists, "exit_status", 1) == 0:
            raise ToolError(f"{path} already exists: `create` does not overwrite; use "
                            "str_replace to change it")
        parent = posixpath.dirname(path)
        if parent not in ("", ".", "/"):
            await self.shell.run(f"mkdir -p -- {shlex.quote(parent)}", timeout=30)
        await self.shell.write_file(path, text)
        self.history.setdefault(path, []).append("")
        return f"File created successfully at: {path}"

    async def str_replace(self, path: str, args: dict[str, Any]) -> str:
        old, new = _string(args, "old_str"), args.get("new_str") or ""
        text = await read_text(self.shell, path)
        count = text.count(old) if old else 0
        if count != 1:
            where = [n + 1 for n, line in enumerate(text.split("\n")) if old and old in line]
            raise ToolError(
                f"No replacement was performed: old_str did not appear verbatim in {path}"
                if count == 0 else
                f"No replacement was performed: old_str occurs {count} times in {path} "
                f"(lines {where}); include more context so that it is unique")
        edited = text.replace(old, new, 1)
        await self._write(path, text, edited)
        line = text.split(old)[0].count("\n")
        return _edited(path, edited, line, new.count("\n"))

    async def insert(self, path: str, args: dict[str, Any]) -> str:
        new = args.get("new_str", args.get("insert_text"))
        if not isinstance(new, str):
            raise ToolError("missing string argument 'new_str'")
        at = args.get("insert_line")
        text = await read_text(self.shell, path)
        lines, count = text.split("\n"), len(_lines(text))
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at <= count:
            raise ToolError(f"insert_line must be an integer from 0 to {count}, got {at!r}")
        edited = "\n".join([*lines[:at], *new.split("\n"), *lines[at:]])
        await self._write(path, text, edited)
        return _edited(path, edited, at, new.count("\n") + 1)

    async def undo_edit(self, path: str, args: dict[str, Any]) -> str:
        earlier = self.history.get(path)
        if not earlier:
            raise ToolError(f"no edit to undo for {path}")
        await self.shell.write_file(path, earlier.pop())
        return f"Last edit to {path} undone successfully."

    async def _write(self, path: str, before: str, after: str) -> None:
        await self.shell.write_file(path, after)
        self.history.setdefault(path, []).append(before)


def _view_range(value: Any, count: int) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ToolError("view_range must be two integers: [first_line, last_line]")
    first, last = value
    if not 1 <= first <= count:
        raise ToolError(f"view_range's first line {first} is not between 1 and {count}")
    if last != -1 and not first <= last <= count:
        raise ToolError(f"view_range's last line {last} must be -1 or between {first} "
                        f"and {count}")
    return first, last


def _edited(path: str, text: str, line: int, added: int) -> str:
    lines = _lines(text)
    start = max(line - SNIPPET_LINES, 0)
    snippet = lines[start:line + added + SNIPPET_LINES + 1]
    return (f"The file {path} has been edited. Here's the result of running `cat -n` on a "
            f"snippet of {path}:\n{numbered(snippet, start + 1)}"
            "Review the changes and make sure they are as expected.")


def _string(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise ToolError(f"missing string argument {key!r}")
    return value


# -- V4A patches (OpenAI's apply_patch) -------------------------------------------------------

@dataclass(slots=True)
class Chunk:
    """One ``@@`` section: an anchor line to find first, then its lines in order as
    ``(marker, text)`` with marker `` `` (context), ``-`` (removed) or ``+`` (added)."""

    anchor: str
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def before(self) -> list[str]:
        return [text for marker, text in self.lines if marker != "+"]


def parse_diff(diff: str) -> list[Chunk]:
    """The chunks of a V4A file diff (the body of an ``update_file`` operation, or of an
    ``*** Update File:`` section): lines starting with ``@@`` open a chunk (the text after
    it is an anchor line to find first), `` `` is context, ``-`` removed, ``+`` added."""
    chunks: list[Chunk] = []
    for raw in diff.split("\n"):
        if raw.startswith("@@"):
            chunks.append(Chunk(anchor=raw[2:].strip()))
            continue
        if raw == "*** End of File" or (raw == "" and not chunks):
            continue
        if not chunks:
            chunks.append(Chunk(anchor=""))
        marker = raw[:1] or " "
        if marker not in " +-":
            raise ToolError(f"invalid patch line {raw!r}: lines start with ' ', '-', '+' "
                            "or '@@'")
        chunks[-1].lines.append((marker, raw[1:]))
    for chunk in chunks:  # a trailing blank line is the diff's own end, not context
        while chunk.lines and chunk.lines[-1] == (" ", ""):
            chunk.lines.pop()
    return chunks


def apply_diff(text: str, diff: str, path: str = "the file") -> str:
    """``text`` with the V4A ``diff`` applied; a :class:`ToolError` when a chunk's context
    is not found (exactly, then ignoring trailing whitespace, then all surrounding
    whitespace) after the previous chunk. Context lines keep the file's own text."""
    lines = text.split("\n")
    at = 0
    for chunk in parse_diff(diff):
        if chunk.anchor:
            found = _find(lines, [chunk.anchor], at)
            if found is None:
                raise ToolError(f"patch anchor {chunk.anchor!r} not found in {path}")
            at = found + 1 if chunk.before[:1] != [chunk.anchor] else found
        before = chunk.before
        start = _find(lines, before, at) if before else at
        if start is None:
            raise ToolError(f"patch context not found in {path}:\n" + "\n".join(before))
        old = iter(lines[start:start + len(before)])
        replacement = []
        for marker, line in chunk.lines:
            if marker == "+":
                replacement.append(line)
            elif marker == " ":
                replacement.append(next(old))
            else:
                next(old)
        lines[start:start + len(before)] = replacement
        at = start + len(replacement)
    return "\n".join(lines)


def new_file(diff: str) -> str:
    """The content of a ``create_file`` diff: every line starts with ``+``."""
    body = [line for line in diff.split("\n") if line != ""]
    if any(not line.startswith("+") for line in body):
        raise ToolError("a new file's diff must have only '+' lines")
    return "\n".join(line[1:] for line in body) + ("\n" if body else "")


def _find(lines: list[str], needle: list[str], start: int) -> int | None:
    for fold in (lambda s: s, str.rstrip, str.strip):
        want = [fold(line) for line in needle]
        for i in range(start, len(lines) - len(needle) + 1):
            if [fold(line) for line in lines[i:i + len(needle)]] == want:
                return i
    return None
