"""``inprocess``: the environment runs in this process and event loop, driven through an
in-memory transport. Fastest; rollouts share the process (session isolation only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..client import Client
from .base import Runtime, end_session, environment_of

if TYPE_CHECKING:
    from ..environment import Environment, Task
    from ..server import Server


class InProcessRuntime(Runtime):
    """One in-process server per environment, started on first use, driven in memory."""

    name = "inprocess"

    def __init__(self, *, solutions: bool = False) -> None:
        super().__init__(solutions=solutions)
        self._servers: dict[int, Server] = {}
        self._starting = asyncio.Lock()

    async def _server(self, env: Environment) -> Server:
        # Lazy: the server (and what it serves) loads only when this runtime is used.
        from ..server import Server, ServerConfig

        async with self._starting:
            server = self._servers.get(id(env))
            if server is None:
                config = ServerConfig(enable_solutions=self.solutions)
                server = Server(env, config)
                await server.start(listen=False)
                self._servers[id(env)] = server
            return server

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        env = environment_of(task)
        server = await self._server(env)
        client = await Client.over(server.connect_memory(), f"memory://{env.name}")
        try:
            yield client
        finally:
            await end_session(client)

    async def aclose(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await server.aclose()
