"""Runtimes: where each rollout's environment lives.

A runtime hands out a connected :class:`~hud.client.Client` per rollout and tears down after:

* :class:`InProcessRuntime`: the environment runs in this process and event loop, driven
  through an in-memory transport. Fastest; rollouts share the process (session isolation only).
* :class:`SubprocessRuntime`: a fresh ``hud serve`` process per rollout. Isolated, and slow to
  start (an interpreter and the environment's imports per rollout).
* :class:`~hud.eval.pool.PoolRuntime`: pre-forked processes, each serving exactly one rollout
  and then replaced. Isolated, and fast: start-up is paid off the critical path.
* :class:`UrlRuntime`: an environment someone else serves (``hud serve``, a container).

Use a runtime as an async context manager around a batch (``Taskset.run`` does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..client import Client, HudConnectionError

if TYPE_CHECKING:
    from ..environment import Environment, Task
    from ..server import Server


class Runtime:
    """Base class: :meth:`open` yields a connected client for one rollout of ``task``."""

    name = "runtime"

    def __init__(self, *, solutions: bool = False) -> None:
        self.solutions = solutions

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release whatever the runtime keeps between rollouts."""

    def open(self, task: Task) -> contextlib.AbstractAsyncContextManager[Client]:
        raise NotImplementedError


class InProcessRuntime(Runtime):
    """One in-process server per environment, started on first use, driven in memory."""

    name = "inprocess"

    def __init__(self, *, solutions: bool = False) -> None:
        super().__init__(solutions=solutions)
        self._servers: dict[int, Server] = {}
        self._starting = asyncio.Lock()

    async def _server(self, env: Environment) -> Server:
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
            await _end(client)

    async def aclose(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await server.aclose()


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
        argv = [sys.executable, "-m", "hud", "serve", target, "--port", "0", "--quiet"]
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
                await _end(client)
        finally:
            await stop_process(proc)


class UrlRuntime(Runtime):
    """Attach to an environment served elsewhere; each rollout is its own session."""

    name = "url"

    def __init__(self, url: str, *, token: str | None = None, solutions: bool = False) -> None:
        super().__init__(solutions=solutions)
        self.url = url
        self.token = token

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        client = await Client.connect(self.url, token=self.token)
        try:
            yield client
        finally:
            await _end(client)


def environment_of(task: Task) -> Environment:
    """The live environment behind a task minted from a template."""
    if task.template is None:
        raise ValueError(
            f"task {task.slug!r} was loaded from data, not minted from a template: "
            "name its environment (--env) or use a URL runtime"
        )
    return task.template.env


def source_of(task: Task) -> str:
    """A ``file.py:attr`` target that serves the environment of ``task`` in a new process."""
    env = environment_of(task)
    module = sys.modules.get(task.template.func.__module__) if task.template else None
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        raise ValueError(f"cannot tell which file defines environment {env.name!r}")
    for attr, value in vars(module).items():
        if value is env:
            return f"{path}:{attr}"
    raise ValueError(f"{path} does not hold environment {env.name!r} at module level")


async def _end(client: Client) -> None:
    """Say bye (ending the session for good) and disconnect; never raises."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await client.bye()
    with contextlib.suppress(Exception):
        await client.aclose()


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


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM (graceful shutdown: cleanup and hooks run), SIGKILL after ``grace`` seconds."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def make_runtime(spec: str | None, *, solutions: bool = False, token: str | None = None,
                 **options: Any) -> Runtime:
    """Runtime from a CLI spec: ``inprocess``, ``subprocess``, ``pool`` or a ``ws://`` URL."""
    from .pool import PoolRuntime

    spec = spec or "pool"
    if "://" in spec:
        return UrlRuntime(spec, token=token, solutions=solutions)
    kinds: dict[str, type[Runtime]] = {
        "inprocess": InProcessRuntime, "subprocess": SubprocessRuntime, "pool": PoolRuntime,
    }
    if spec not in kinds:
        raise ValueError(f"unknown runtime {spec!r}: use inprocess, subprocess, pool or a URL")
    return kinds[spec](solutions=solutions, **options)
