"""``ws://HOST:PORT`` (or ``wss://``): an environment someone else serves (``hud serve``, a
container); each rollout is its own session on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..client import Client
from .base import Runtime, RuntimeOptions, end_session

if TYPE_CHECKING:
    from ..environment import Task


class UrlRuntime(Runtime):
    """Attach to an environment served at ``url``; each rollout is its own session."""

    name = "url"
    usage = "ws://HOST:PORT"

    def __init__(self, url: str, *, token: str | None = None, solutions: bool = False) -> None:
        super().__init__(solutions=solutions)
        self.url = url
        self.token = token

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> UrlRuntime:
        """The spec is the URL itself (``ws://host:port``); ``options.token`` authenticates."""
        if argument is None:
            raise ValueError(f"the URL runtime wants a whole URL, such as {cls.usage}")
        return cls(argument, token=options.token, solutions=options.solutions)

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        client = await Client.connect(self.url, token=self.token)
        try:
            yield client
        finally:
            await end_session(client)
