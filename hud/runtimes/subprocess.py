"""``subprocess``: a fresh ``hud serve`` process per rollout. Isolated, and slow to start
(an interpreter and the environment's imports per rollout; see ``pool`` for the fast one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..client import Client
from ..errors import HudConnectionError
from .base import Runtime, end_session, source_of, stop_process

if TYPE_CHECKING:
    from ..environment import Task


MAX_FORKS = 64
"""Branches one ``tasks.fork`` may make in a rollout's process (it serves that task alone)."""


class SubprocessRuntime(Runtime):
    """A new ``hud serve`` process per rollout, on 127.0.0.1 with a one-time token."""

    name = "subprocess"

    def __init__(self, target: str | None = None, *, solutions: bool = False,
                 ready_timeout: float = 60.0) -> None:
        super().__init__(solutions=solutions)
        self.target = target
        self.ready_timeout = ready_timeout

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        target = self.target or source_of(task)
        token = secrets.token_urlsafe(16)
        argv = [sys.executable, "-m", "hud", "serve", target, "--port", "0", "--quiet",
                "--max-forks", str(MAX_FORKS)]
        if self.solutions:
            argv.append("--enable-solutions")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, env={**os.environ, "HUD_TOKEN": token},
        )
        try:
            url = await _read_url(proc, self.ready_timeout, target)
            client = await Client.connect(url, token=token)
            try:
                yield client
            finally:
                await end_session(client)
        finally:
            await stop_process(proc)


async def _read_url(proc: asyncio.subprocess.Process, timeout: float, target: str) -> str:
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            line = (await proc.stdout.readline()).decode().strip()
    except TimeoutError:
        raise HudConnectionError(f"{target}: no environment ready after {timeout:g} s") from None
    if not line.startswith("ws://"):
        code = await proc.wait()
        raise HudConnectionError(f"{target}: hud serve exited with code {code} before serving "
                                 "(its error is on stderr above)")
    return line
