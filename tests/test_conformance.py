"""The conformance kits (``hud.testing``): every built-in capability and harness passes them,
a third-party capability registered through an entry point passes them too, and broken ones
fail with a message that names what broke."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hud import capability
from hud.agents import Agent
from hud.capability import Service
from hud.environment import Environment
from hud.eval.run import Run
from hud.protocol.messages import Binding
from hud.runner import TaskScope
from hud.testing import CapabilityProbe, ConformanceError, check_capability, check_harness

pytestmark = pytest.mark.anyio


# -- the built-in capabilities ----------------------------------------------------------------


async def run_echo(shell: Any) -> None:
    result = await shell.run("echo conformance", check=True)
    assert result.stdout == "conformance\n", result


def shell_probe(root: Path) -> CapabilityProbe:
    return CapabilityProbe(name="shell", declare=lambda env: env.use("workspace", root),
                           exercise=run_echo)


async def test_the_ssh_workspace_conforms(tmp_path: Path) -> None:
    await check_capability(shell_probe(tmp_path))


def shout(text: str) -> str:
    """Upper-case text."""
    return text.upper()


async def call_shout(tools: Any) -> None:
    result = await tools.call_tool("shout", {"text": "hi"})
    assert not result.is_error and result.content[0].text == "HI", result


async def test_mcp_tools_conform() -> None:
    await check_capability(CapabilityProbe(
        name="tools", declare=lambda env: env.use("add_tool", shout), exercise=call_shout))


async def evaluate(devtools: Any) -> None:
    assert await devtools.evaluate("6 * 7") == 42


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("HUD_CHROMIUM"),
                    reason="Chromium is not installed")
async def test_the_cdp_browser_conforms() -> None:
    await check_capability(CapabilityProbe(
        name="browser", declare=lambda env: env.use("browser"), exercise=evaluate))


async def screenshot(screen: Any) -> None:
    assert (await screen.screenshot()).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.skipif(shutil.which("Xtigervnc") is None,
                    reason="TigerVNC is not installed (apt-get install tigervnc-standalone-server)")
async def test_the_rfb_desktop_conforms() -> None:
    pytest.importorskip("asyncvnc")
    await check_capability(CapabilityProbe(
        name="screen", declare=lambda env: env.use("desktop", 320, 200),
        exercise=screenshot))


async def reset(robot: Any) -> Any:
    return (await robot.reset(seed=0)).bindings


async def act(robot: Any) -> None:
    assert await robot.observe() is not None, "the episode ended at once"
    await robot.act(0)
    assert await robot.observe() is not None, "no observation answered the action"


def cartpole_probe(**rules: Any) -> CapabilityProbe:
    pytest.importorskip("gymnasium")
    return CapabilityProbe(name="robot",
                           declare=lambda env: env.use("gym", "CartPole-v1", **rules),
                           setup=reset, exercise=act)


async def test_the_openpi_robot_conforms() -> None:
    await check_capability(cartpole_probe())


# -- the built-in harnesses -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nop", "oracle"])
async def test_the_harnesses_without_a_model_conform(name: str) -> None:
    await check_harness(name)


@pytest.mark.parametrize("name", ["robot_scripted", "robot_random"])
async def test_the_robot_harnesses_conform(name: str) -> None:
    await check_harness(name, capability=cartpole_probe(max_steps=20))


async def test_openai_compatible_conforms_against_a_local_stand_in() -> None:
    from fakes.chat_completions import call, reply, serve_chat_completions

    with serve_chat_completions(lambda body: reply(tool_calls=[call("missing", {})])) as server:
        await check_harness("openai_compatible",
                            config={"base_url": server.base_url, "model": "fake-model"})


def provider_stand_ins() -> list[tuple[str, Any, Any, str]]:
    """(harness, serve the fake, a reply that always calls a tool, base-URL suffix)."""
    from fakes import anthropic, gemini, responses

    return [
        ("claude-haiku-4-5", anthropic.serve_messages,  # the strict fake serves real models
         lambda body: anthropic.message(None, anthropic.tool_use("missing", {})), ""),
        ("gpt-fake", responses.serve_responses,
         lambda body: responses.response(None, responses.function_call("missing", {})), "/v1"),
        ("gemini-fake", gemini.serve_gemini,
         lambda body: gemini.reply(None, gemini.call("missing", {})), ""),
    ]


@pytest.mark.parametrize("index", range(3), ids=["claude", "openai", "gemini"])
async def test_the_provider_harnesses_conform_against_local_stand_ins(index: int) -> None:
    """Each stand-in calls a tool on every turn, so max_steps is what stops the harness."""
    model, serve, always_a_tool, suffix = provider_stand_ins()[index]
    with serve(always_a_tool) as fake:
        await check_harness(model, config={"api_key": "k", "base_url": fake.base_url + suffix,
                                           "retry_delay": 0.001})


# -- a third-party capability, registered through entry points ---------------------------------


class EchoDaemon(Service):
    """``echo/1``: a TCP daemon that echoes lines, for holders of a live task's token (the
    first line). The class attributes are the ways a broken plug-in can go wrong."""

    protocol: ClassVar[str] = "echo/1"
    revoke: ClassVar[bool] = True  # tokens die with their task
    hang_up: ClassVar[bool] = True  # and so do their connections
    fresh: ClassVar[bool] = True  # every task gets a new token
    stops: ClassVar[bool] = True  # the daemon stops with the environment
    garbles: ClassVar[bool] = False  # echoes something else
    params: ClassVar[dict[str, Any]] = {"credentials": "per-task"}

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.tokens: dict[str, set[asyncio.StreamWriter]] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.publish(Binding(name=self.name, protocol=self.protocol,
                             url=f"tcp://127.0.0.1:{port}", params=dict(self.params)))

    async def stop(self) -> None:
        if self.server is not None and self.stops:
            self.server.close()
            for writers in self.tokens.values():
                for writer in writers:
                    writer.close()
            await self.server.wait_closed()

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[dict[str, dict[str, Any]]]:
        token = secrets.token_hex(8) if self.fresh else "same-every-time"
        self.tokens[token] = set()
        try:
            yield {self.name: {"token": token}}
        finally:
            writers = self.tokens.pop(token) if self.revoke else self.tokens[token]
            for writer in writers if self.hang_up else ():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token = (await reader.readline()).decode().strip()
        if token not in self.tokens:
            writer.close()
            return
        self.tokens[token].add(writer)
        writer.write(b"ok\n")
        while line := await reader.readline():
            writer.write(line.upper() if self.garbles else line)
        writer.close()


class EchoClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def echo(self, text: str) -> str:
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the echo daemon hung up")
        return line.decode().rstrip("\n")

    async def aclose(self) -> None:
        self.writer.close()


async def open_echo(binding: Binding) -> EchoClient:
    """The client opener of ``echo/1``: connect, present the task's token."""
    host, port = binding.url.removeprefix("tcp://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(binding.params["token"].encode() + b"\n")
    if await reader.readline() != b"ok\n":
        writer.close()
        raise PermissionError("the echo daemon refused the token")
    return EchoClient(reader, writer)


async def round_trip(client: EchoClient) -> None:
    assert await client.echo("ping") == "ping"


@pytest.fixture
def echo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Installs a distribution whose entry points declare ``echo`` (both halves): a
    dist-info on sys.path, as pip would leave it. Returns its env-side name."""
    dist = tmp_path / "hud_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hud-echo\nVersion: 1.0\n")
    module = __name__
    (dist / "entry_points.txt").write_text(
        f"[hud.capabilities.env]\necho_daemon = {module}:EchoDaemon.declare\n\n"
        f"[hud.capabilities]\necho = {module}:open_echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(capability, "_found", {})  # forget it afterwards: it is uninstalled
    return "echo_daemon"


def echo_probe(cls: type[EchoDaemon] = EchoDaemon) -> CapabilityProbe:
    return CapabilityProbe(name="echo", declare=lambda env: cls.declare(env),
                           exercise=round_trip)


async def test_a_third_party_capability_declared_by_entry_point_conforms(echo_plugin: str
                                                                         ) -> None:
    env = Environment("plugged")
    assert isinstance(env.use(echo_plugin), EchoDaemon)  # resolved by name, like a built-in
    await check_capability(CapabilityProbe(
        name="echo", declare=lambda env: env.use(echo_plugin), exercise=round_trip))


def test_the_friendly_spellings_are_the_registered_declarations() -> None:
    """``env.workspace`` & co. resolve through the entry points a third party uses."""
    friendly = {"workspace", "browser", "desktop", "gym", "robot", "tool", "add_tool"}
    registered = capability.available()
    assert friendly | {"mcp_server"} <= set(registered)
    for name in friendly:
        assert callable(registered[name].load()), name
        assert callable(getattr(Environment, name)), name


def test_an_unknown_capability_names_what_is_installed() -> None:
    with pytest.raises(LookupError, match=r"no capability named 'nope'.*workspace"):
        Environment("e").use("nope")


class Unversioned(EchoDaemon):
    protocol = "echo"


class KeepsConnections(EchoDaemon):
    hang_up = False


class KeepsTokens(EchoDaemon):
    revoke = False


class SameToken(EchoDaemon):
    fresh = False


class Immortal(EchoDaemon):
    stops = False


class Garbles(EchoDaemon):
    garbles = True


class SetInParams(EchoDaemon):
    params = {"credentials": "per-task", "modes": {"line"}}


class PosesAsSsh(EchoDaemon):
    protocol = "ssh/2"


class TokenInManifestOnly(EchoDaemon):
    params = {"credentials": "per-episode"}

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[dict[str, dict[str, Any]]]:
        yield {}


@pytest.mark.parametrize(("broken", "message"), [
    (Unversioned, "capability 'echo': protocol 'echo' is not a protocol id"),
    (KeepsConnections, "the client opened for a task still works after the task ended"),
    (KeepsTokens, "the credentials of a task that ended still open it"),
    (SameToken, "a second task got the same bindings as the first"),
    (Garbles, r"the round trip in the first task failed: AssertionError: assert 'PING' == "),
    (SetInParams, r"the binding's params change in a JSON round trip"),
    (TokenInManifestOnly, "the manifest says its state or credentials are per-episode, but "
                          "tasks.start handed out no bindings for it"),
    (PosesAsSsh, "capability 'echo': ssh bindings need params host_pubkey, user in the "
                 "manifest"),
    (Immortal, r"its daemon at 127.0.0.1:\d+ still accepts connections after the environment "
               "stopped"),
])
async def test_a_broken_capability_fails_with_what_broke(
    echo_plugin: str, broken: type[EchoDaemon], message: str
) -> None:
    with pytest.raises(ConformanceError, match=message):
        await check_capability(echo_probe(broken))


# -- broken harnesses ---------------------------------------------------------------------------


class Raises(Agent):
    name: ClassVar[str] = "raises"

    async def __call__(self, run: Run) -> None:
        raise RuntimeError("no model today")


class SwallowsCancellation(Agent):
    name: ClassVar[str] = "swallows"

    async def __call__(self, run: Run) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.1)
        run.answer = "42"


class Chatty(Agent):
    name: ClassVar[str] = "chatty"

    async def __call__(self, run: Run) -> None:
        for _ in range((run.max_steps or 0) + 2):
            run.record("model", content="one more turn")
        run.answer = "42"


@pytest.mark.parametrize(("broken", "message"), [
    (Raises, "harness 'raises': the rollout of 'answer' did not complete \\(status 'error'; "
             "RuntimeError during agent: no model today\\)"),
    (SwallowsCancellation, "harness 'swallows': it swallowed the cancellation: the rollout "
                           "went on and ended 'completed'"),
    (Chatty, "harness 'chatty': 5 model turns with max_steps=3"),
])
async def test_a_broken_harness_fails_with_what_broke(broken: type[Agent], message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        await check_harness(broken)


async def test_a_harness_by_class_conforms() -> None:
    from hud.harnesses.nop import NopAgent

    await check_harness(NopAgent)
