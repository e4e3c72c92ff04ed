"""A runtime as a third-party package would write one, registered by tests/test_runtimes.py
under the ``hud.runtimes`` entry-point group as ``loopback``.

``--runtime loopback:LOG`` serves each environment on a real WebSocket server on 127.0.0.1
(port 0, with a token) in this process, and appends one line per rollout it opens to LOG.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hud.client import Client
from hud.runtimes import Runtime, RuntimeOptions
from hud.server import Server, ServerConfig


class LoopbackRuntime(Runtime):
    name = "loopback"
    usage = "loopback:LOG"

    def __init__(self, log: Path, *, solutions: bool = False) -> None:
        super().__init__(solutions=solutions)
        self.log = log
        self.token = secrets.token_urlsafe(8)
        self._servers: dict[int, Server] = {}
        self._stack = contextlib.AsyncExitStack()
        self._starting = asyncio.Lock()

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> LoopbackRuntime:
        if argument is None:
            raise ValueError("loopback wants a log file: loopback:LOG")
        return cls(Path(argument), solutions=options.solutions)

    async def _server(self, env: Any) -> Server:
        async with self._starting:
            if id(env) not in self._servers:
                config = ServerConfig(host="127.0.0.1", port=0, token=self.token,
                                      enable_solutions=self.solutions)
                server = await self._stack.enter_async_context(Server(env, config))
                self._servers[id(env)] = server
            return self._servers[id(env)]

    @contextlib.asynccontextmanager
    async def open(self, task: Any) -> AsyncIterator[Client]:
        server = await self._server(task.template.env)
        with self.log.open("a") as log:
            log.write(f"{task.slug} {server.url}\n")
        client = await Client.connect(server.url, token=self.token)
        try:
            yield client
        finally:
            await client.bye()
            await client.aclose()

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._servers.clear()
