"""The capability conformance kit: :func:`check_capability`."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ..address import control_url
from ..capability import CLIENT_GROUP, find
from ..client import Client, open_client
from ..environment import Environment
from ..forward import tunnel_url
from ..protocol.messages import Binding, StartResult
from ..server import Server, ServerConfig
from ..tunnel import daemon_address

# A protocol id is ``family/version``: ``ssh/2``, ``cdp/1.3``, ``mcp/2025-11-25``, ``openpi/0``.
PROTOCOL_ID = re.compile(r"[a-z][a-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# A binding name travels in a URL path (``/v1/tunnel/{name}``): keep it plain.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PER_TASK = ("per-task", "per-episode")
# The params a client of each built-in protocol family cannot do without (protocol/README.md):
# family -> (in the manifest's binding, in the bindings of tasks.start).
REQUIRED_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ssh": (frozenset({"user", "host_pubkey"}), frozenset({"client_key"})),
    "mcp": (frozenset({"transport"}), frozenset()),
    "cdp": (frozenset(), frozenset({"endpoint_path"})),
    "rfb": (frozenset(), frozenset({"password"})),
    "openpi": (frozenset({"contract"}), frozenset({"token"})),
}
STEP_TIMEOUT = 60.0  # a hang guard per step, never a measure of speed
TEMPLATE = "conformance_probe"

Bindings = Mapping[str, Mapping[str, Any]]
Opener = Callable[[Binding], Awaitable[Any]]


class ConformanceError(AssertionError):
    """A capability or harness broke its contract; the message names it and what broke."""


@dataclass(frozen=True, slots=True)
class CapabilityProbe:
    """What the kit needs to know of one capability.

    ``name``: the binding name it publishes. ``declare(env)``: declare it on a fresh
    environment (its env-side factory: ``lambda env: env.use("workspace", root)``); what it
    returns is the *handle* below. ``exercise(client)``: one round trip with the protocol
    client that the opener returned (run a command, call a tool, take a screenshot); it must
    raise when the round trip fails. ``setup(handle)``, optional: runs in the setup of each
    probe task and returns bindings for its prompt (a robot's episode bindings).
    ``opener``: the client opener; by default the one installed for the protocol family
    (entry-point group ``hud.capabilities``), reached as harnesses reach it,
    ``await client.open(name)``.
    """

    name: str
    declare: Callable[[Environment], Any]
    exercise: Callable[[Any], Awaitable[object]]
    setup: Callable[[Any], Awaitable[Bindings | None]] | None = None
    opener: Opener | None = None

    def environment(self) -> Environment:
        """A fresh environment with this capability and one template, ``conformance_probe``:
        its setup runs :attr:`setup`, it rewards 1.0 whatever the answer."""
        env = Environment(f"conformance-{self.name}")
        handle = self.declare(env)

        @env.template(TEMPLATE, solution=lambda: "done")
        async def probe() -> AsyncGenerator[Any, Any]:
            """Answer anything."""
            bindings = await self.setup(handle) if self.setup is not None else None
            yield {"prompt": f"conformance probe of {self.name!r}", "bindings": bindings or {}}
            yield 1.0

        return env


async def check_capability(probe: CapabilityProbe) -> None:
    """Serve ``probe``'s capability in an environment on 127.0.0.1:0 and check its contract.

    Raises :class:`ConformanceError` naming the capability and the first rule it breaks:

    1. the environment declares one binding named ``probe.name``, with a protocol id
       ``family/version``, a ``scheme://host:port`` URL and JSON params that hold no private
       key, and the manifest carries it as declared;
    2. ``tasks.start`` hands out bindings only for declared capabilities, as JSON objects,
       and some for this one when its manifest params say ``credentials`` (or ``state``)
       is ``per-task`` or ``per-episode``;
    3. the params a client of a built-in family needs (:data:`REQUIRED_PARAMS`: ``ssh``'s
       ``host_pubkey``, ``cdp``'s ``endpoint_path``, ...) are in the manifest or the start
       bindings, as that protocol puts them;
    4. a client that tunnels every capability (:attr:`~hud.client.Client.tunnel_all`, as a
       client on another host must) reaches it through the control port's tunnel (a
       loopback port, not the daemon's), its opener opens it there and ``exercise``
       succeeds;
    5. with per-task bindings: once the task ends, the client opened for it stops working
       and its credentials open nothing; a second task gets bindings of its own, which work;
    6. the tunnel refuses a name that is not declared (HTTP 404);
    7. once the environment stops, its daemons no longer accept connections.
    """
    env = probe.environment()
    async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
        declared = _declared(probe.name, env.capabilities)
        async with open_client(server.url) as client:
            # what a client elsewhere does: the opener must work on the binding it is given
            client.tunnel_all = True
            if declared not in client.manifest.capabilities:
                raise fail(probe.name, "the manifest does not carry the binding as declared")
            await _check_tasks(probe, client, declared)
        await _check_undeclared_refused(probe.name, server.url)
    await _check_stopped(probe.name, daemon_address(declared))


def fail(name: str, message: str) -> ConformanceError:
    return ConformanceError(f"capability {name!r}: {message}")


def _declared(name: str, capabilities: list[Binding]) -> Binding:
    found = [b for b in capabilities if b.name == name]
    if len(found) != 1:
        names = [b.name for b in capabilities]
        raise fail(name, f"the environment declares {len(found)} bindings of that name "
                         f"(declared: {names}); want exactly one")
    binding = found[0]
    if not NAME.fullmatch(binding.name):
        raise fail(name, "the binding name must be letters, digits, '.', '_' or '-'")
    if not PROTOCOL_ID.fullmatch(binding.protocol):
        raise fail(name, f"protocol {binding.protocol!r} is not a protocol id "
                         "'family/version' (like 'ssh/2')")
    _check_url(name, binding.url)
    params = _json_object(name, "the binding's params", binding.params)
    _check_required(binding, params, 0, "the manifest")
    if "PRIVATE KEY" in msgspec.json.encode(params).decode():
        raise fail(name, "the binding's params hold a private key: hand keys out per task, "
                         "in the bindings of tasks.start")
    return binding


def _check_required(binding: Binding, params: Mapping[str, Any], where: int, what: str
                    ) -> None:
    """The params a client of the binding's protocol family needs are there."""
    family = binding.protocol.split("/", 1)[0]
    needed = REQUIRED_PARAMS.get(family, (frozenset(), frozenset()))[where]
    missing = sorted(needed - set(params))
    if missing:
        raise fail(binding.name, f"{family} bindings need params {', '.join(missing)} in "
                                 f"{what}")


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.scheme or not parts.hostname or port is None:
        raise fail(name, f"url {url!r} is not 'scheme://host:port/...': the tunnel dials "
                         "host:port")


def _json_object(name: str, what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(name, f"{what} are {type(value).__name__}, not a JSON object")
    try:
        decoded = msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.DecodeError) as exc:
        raise fail(name, f"{what} are not JSON: {exc}") from None
    if decoded != value:
        raise fail(name, f"{what} change in a JSON round trip: {value!r} → {decoded!r}")
    return value


async def _check_tasks(probe: CapabilityProbe, client: Client, declared: Binding) -> None:
    name = probe.name
    async with contextlib.AsyncExitStack() as handles:
        first = await _start(probe, client, declared)
        reached = await client.binding(name)
        _check_tunnelled(name, declared, reached)
        handle = await _open(probe, client, handles, reached, "the first task")
        await _exercise(probe, handle, "in the first task")
        await _bounded(name, "tasks.grade", client.grade("done"))
        if not first:  # nothing per task: the daemon serves every task alike
            return
        await _check_task_ended(probe, handle, reached)
        second = await _start(probe, client, declared)
        if second == first:
            raise fail(name, "a second task got the same bindings as the first: per-task "
                             "credentials must be fresh for every task")
        again = await _open(probe, client, handles, await client.binding(name),
                            "a second task")
        await _exercise(probe, again, "in a second task")
        await _bounded(name, "tasks.grade", client.grade("done"))


async def _start(probe: CapabilityProbe, client: Client, declared: Binding
                 ) -> dict[str, Any]:
    """Start a probe task and check its bindings; returns this capability's."""
    name = probe.name
    started: StartResult = await _bounded(name, "tasks.start", client.start(TEMPLATE))
    declared_names = {b.name for b in client.manifest.capabilities}
    for key, params in started.bindings.items():
        if key not in declared_names:
            raise fail(name, f"tasks.start handed out bindings for {key!r}, which the "
                             f"manifest does not declare ({sorted(declared_names)})")
        _json_object(name, f"the start bindings of {key!r}", params)
    per_task = declared.params.get("credentials", declared.params.get("state"))
    if per_task in PER_TASK and name not in started.bindings:
        raise fail(name, f"the manifest says its state or credentials are {per_task}, but "
                         "tasks.start handed out no bindings for it")
    mine = started.bindings.get(name, {})
    _check_required(declared, mine, 1, "the bindings of tasks.start")
    return mine


def _check_tunnelled(name: str, declared: Binding, reached: Binding) -> None:
    if urlsplit(reached.url).hostname != "127.0.0.1":
        raise fail(name, f"the client reaches it at {reached.url!r}, not on a loopback port")
    if daemon_address(reached) == daemon_address(declared):
        raise fail(name, "the client dials the daemon itself, not the control port's tunnel")


async def _open(probe: CapabilityProbe, client: Client, handles: contextlib.AsyncExitStack,
                binding: Binding, when: str) -> Any:
    """The protocol client, opened as harnesses open it (``client.open``, which closes it
    with the client), or by ``probe.opener`` (closed by ``handles``)."""
    opening = client.open(probe.name) if probe.opener is None else probe.opener(binding)
    handle = await _bounded(probe.name, f"opening it in {when}", opening)
    if probe.opener is not None:
        handles.push_async_callback(handle.aclose)
    return handle


async def _exercise(probe: CapabilityProbe, handle: Any, when: str) -> None:
    await _bounded(probe.name, f"the round trip {when}", probe.exercise(handle))


async def _check_task_ended(probe: CapabilityProbe, handle: Any, stale: Binding) -> None:
    """Per-task state dies with its task: the client opened for it, and its credentials."""
    if await _succeeds(probe.exercise(handle)):
        raise fail(probe.name, "the client opened for a task still works after the task "
                               "ended: per-task state must be cleaned up with its task")
    opener = probe.opener or find(stale.protocol.split("/", 1)[0], CLIENT_GROUP)
    if await _succeeds(_open_and_exercise(probe, opener, stale)):
        raise fail(probe.name, "the credentials of a task that ended still open it: they "
                               "must be revoked when the task ends")


async def _open_and_exercise(probe: CapabilityProbe, opener: Opener, binding: Binding) -> None:
    handle = await opener(binding)
    try:
        await probe.exercise(handle)
    finally:
        with contextlib.suppress(Exception):
            await handle.aclose()


async def _succeeds(step: Awaitable[object]) -> bool:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await step
    except Exception:
        return False
    return True


async def _check_undeclared_refused(name: str, server_url: str) -> None:
    url = tunnel_url(control_url(server_url), f"{name}-undeclared")
    try:
        async with connect(url, open_timeout=STEP_TIMEOUT):
            pass
    except InvalidStatus as exc:
        if exc.response.status_code == 404:
            return
        raise fail(name, f"the tunnel answered an undeclared name with HTTP "
                         f"{exc.response.status_code}, not 404") from None
    raise fail(name, "the tunnel opened for an undeclared name")


async def _check_stopped(name: str, daemon: tuple[str, int]) -> None:
    host, port = daemon
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), STEP_TIMEOUT)
    except OSError:
        return
    writer.close()
    raise fail(name, f"its daemon at {host}:{port} still accepts connections after the "
                     "environment stopped: stop it in a shutdown hook")


async def _bounded(name: str, what: str, step: Awaitable[Any]) -> Any:
    """``step``'s result; its failure, or its hanging past :data:`STEP_TIMEOUT`, is a
    :class:`ConformanceError` saying ``what`` failed."""
    bound = asyncio.timeout(STEP_TIMEOUT)
    try:
        async with bound:
            return await step
    except ConformanceError:
        raise
    except Exception as exc:
        if bound.expired():
            raise fail(name, f"{what} did not finish within {STEP_TIMEOUT:g} s") from None
        raise fail(name, f"{what} failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
