from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from hud import eventloop
from hud.client import Client
from hud.environment import Environment
from hud.server import Server, ServerConfig

LOOPS = ("uvloop", "asyncio")

# No test reads or writes the user's own trace store (~/.hud/traces): what the tests run,
# in this process or in subprocesses, records into a store of this run's own unless a test
# names another. It is removed when the run ends.
OWN_TRACES = None if "HUD_TRACE_DIR" in os.environ else tempfile.mkdtemp(
    prefix="hud-test-traces-")
if OWN_TRACES is not None:
    os.environ["HUD_TRACE_DIR"] = OWN_TRACES


def chosen_loop() -> str:
    """The loop async tests run on: ``uvloop`` (the default), the loop of ``hud serve``,
    the other CLI commands and pool workers (:mod:`hud.eventloop`); ``HUD_TEST_LOOP=asyncio``
    runs asyncio's own loop instead, the one library users may bring."""
    name = os.environ.get("HUD_TEST_LOOP", "uvloop")
    if name not in LOOPS:
        raise pytest.UsageError(f"HUD_TEST_LOOP={name!r}: use one of {', '.join(LOOPS)}")
    if name == "uvloop" and eventloop.loop_factory() is None:
        raise pytest.UsageError("uvloop is not installed (pip install uvloop), "
                                "or run on asyncio's loop with HUD_TEST_LOOP=asyncio")
    return name


def pytest_configure(config: pytest.Config) -> None:
    chosen_loop()  # a mistyped HUD_TEST_LOOP stops the run before it starts


def pytest_unconfigure(config: pytest.Config) -> None:
    if OWN_TRACES is not None:
        shutil.rmtree(OWN_TRACES, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"event loop: {chosen_loop()} (HUD_TEST_LOOP)"


@pytest.fixture(scope="module")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Module-scoped, so that module-scoped async fixtures run on it too."""
    if chosen_loop() == "uvloop":
        return "asyncio", {"loop_factory": eventloop.loop_factory()}
    return "asyncio", {}


@pytest.fixture
def tunnelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients tunnel every capability, even one whose daemon they could reach at its own
    address (:attr:`hud.client.Client.tunnel_all`): for tests of the tunnels."""
    monkeypatch.setattr(Client, "tunnel_all", True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``CI=true``) everything is installed, so a skip is a failure: a missing system
    package must not pass silently. In a dev run, skips stay skips."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() == "true":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything must run: {reason}"


@contextlib.asynccontextmanager
async def serving(env: Environment, **config: Any) -> AsyncIterator[Server]:
    """A real server on 127.0.0.1, port 0."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **config}
    async with Server(env, ServerConfig(**options)) as server:
        yield server


class Raw:
    """A bare WebSocket JSON-RPC peer, for sending exactly the frames a test needs."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self) -> dict[str, Any]:
        return json.loads(await self.ws.recv())

    async def call(self, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, **extra}
        if params is not None:
            message["params"] = params
        await self.ws.send(json.dumps(message))
        return await self.recv()

    async def manifest(self, **params: Any) -> dict[str, Any]:
        reply = await self.call(
            "manifest",
            {"client": {"name": "test", "version": "0"}, "protocol_versions": ["1"], **params},
        )
        assert "result" in reply, reply
        return reply["result"]


@contextlib.asynccontextmanager
async def raw_peer(server: Server, path: str = "/v1/control", **options: Any) -> AsyncIterator[Raw]:
    async with connect(server.url + path, compression=None, **options) as ws:
        yield Raw(ws)


@contextlib.asynccontextmanager
async def shouting_daemon() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A real TCP daemon on 127.0.0.1 that upper-cases what it receives."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], writers
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()
