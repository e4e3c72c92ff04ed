"""Claude's ``bash`` tool: one persistent bash session on the workspace's shell.

As Anthropic's bash tool documents (https://platform.claude.com/docs/en/agents-and-tools/
tool-use/bash-tool), the session keeps its state between calls: ``cd``, exported variables
and shell functions carry over; ``{"restart": true}`` ends it and the next command starts a
fresh one. Each command runs with stdin from ``/dev/null`` (a command waiting for input would
hang the session), is given ``timeout`` seconds less a moment (then the session is killed,
the model is told its state is gone, and the next command starts afresh), and its output is
cut to ``limit`` characters, head and tail kept.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from hud.errors import ToolError

from ..shell_tools import MAX_OUTPUT_CHARS, command_report, truncate
from ..tool import ToolOutput

RESTARTED = "tool has been restarted."
MARGIN = 0.25


@dataclass(slots=True)
class Finished:
    """One command's outcome, in the shape :func:`command_report` reads."""

    exit_status: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


class BashSession:
    """The tool's function (``await session(args)``) over a shell handle that can
    ``create_process`` (the ssh capability's); :meth:`aclose` ends the session."""

    def __init__(self, shell: Any, timeout: float | None = None,
                 limit: int = MAX_OUTPUT_CHARS) -> None:
        self.shell = shell
        # A moment inside the loop's own limit for the call, so that the session reports
        # its timeout (and restart) itself rather than being cancelled.
        self.timeout = None if timeout is None else max(timeout - MARGIN, timeout / 2)
        self.limit = limit
        self._process: Any = None
        self._lock = asyncio.Lock()  # one command at a time: they share one shell

    async def __call__(self, args: dict[str, Any]) -> ToolOutput:
        if args.get("restart"):
            await self.aclose()
            return ToolOutput(RESTARTED)
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("missing string argument 'command' (or restart: true)")
        async with self._lock:
            try:
                done = await self._run(command)
            except BaseException:  # cancelled mid-command: its output would leak into the next
                await asyncio.shield(self.aclose())
                raise
        report = command_report(done, self.timeout)
        if done.timed_out:
            report += ("\nthe shell session was killed and restarted: the working directory "
                       "and variables are back to their start")
        return ToolOutput(report, is_error=done.timed_out)

    async def _run(self, command: str) -> Finished:
        if self._process is None:
            self._process = await self.shell.create_process(
                "exec bash --noprofile --norc", encoding="utf-8", errors="replace")
        marker = f"__hud_done_{secrets.token_hex(8)}"
        self._process.stdin.write(_script(command, marker))
        try:
            async with asyncio.timeout(self.timeout):
                (status, out), (_, err) = await asyncio.gather(
                    _read_to(self._process.stdout, marker), _read_to(self._process.stderr, marker))
        except TimeoutError:
            await self.aclose()
            return Finished(None, "", "", timed_out=True)
        if status is None:  # the shell itself ended (``exit``): the next call starts anew
            await self.aclose()
        return Finished(status, truncate(out, self.limit), truncate(err, self.limit))

    async def aclose(self) -> None:
        """End the session (the daemon kills what it was running)."""
        process, self._process = self._process, None
        if process is not None:
            process.close()
            await process.wait_closed()


def _script(command: str, marker: str) -> str:
    """``command`` run by ``eval`` in the session's own shell (so ``cd`` and ``export`` last;
    a quoted here-document keeps it verbatim, and its syntax errors stay its own), then the
    marker on both streams, with the status on stdout."""
    return (f"eval \"$(cat <<'{marker}'\n{command}\n{marker}\n)\" < /dev/null\n"
            f"printf '\\n{marker} %d\\n' \"$?\"; printf '\\n{marker}\\n' >&2\n")


async def _read_to(stream: Any, marker: str) -> tuple[int | None, str]:
    """Read ``stream`` up to the marker line: the status it carries and the text before it
    (without the newline the marker's ``printf`` put first). ``None`` at end of stream."""
    lines: list[str] = []
    while line := await stream.readline():
        if line.startswith(marker):
            text = "".join(lines)
            status = line[len(marker):].strip()
            return int(status) if status else 0, text[:-1] if text.endswith("\n") else text
        lines.append(line)
    return None, "".join(lines)
