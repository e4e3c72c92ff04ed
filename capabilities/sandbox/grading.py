"""The grader's commands in one sandbox, and what they leave behind.

The grader runs the agent's code (tests import it), and that code runs as the grader: it
could leave a process behind that lies in wait, as the grader, for the grader's next
command, where the separate uid does not help. So a grader command that starts while no
other runs first kills every process of the grader's uid (``kill -KILL -1`` as the grader,
which reaches its own processes only, never the sandbox's pid 1). Commands that run at the
same time share the uid: one that runs the agent's code can reach another beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sandbox import Sandbox

SWEEP = ["sh", "-c", "kill -KILL -1 2>/dev/null; true"]


class GraderCommands:
    """Counts one sandbox's running grader commands and sweeps before one starts alone,
    after any ran (only where the grader has a uid of its own: with one user, the sweep
    would kill the agent's processes)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.running = 0
        self._dirty = False  # a grader command ran since the last sweep
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def command(self, user: str) -> AsyncIterator[None]:
        """Around one command of ``user``. A failed sweep raises here, before the command
        runs: the grade is then an error, never a command beside what was left."""
        if user != "grader" or not self.sandbox.grader_apart:
            yield
            return
        async with self._lock:
            if self.running == 0 and self._dirty:
                await self._sweep()
                self._dirty = False
            self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._dirty = True

    async def _sweep(self) -> None:
        proc = await self.sandbox.spawn(SWEEP, user="grader", stdin=False)
        try:
            await proc.wait()
        finally:
            proc.close()
