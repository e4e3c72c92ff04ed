"""The agent side of ``openpi/0``: claim an episode, read observations, send actions.

>>> robot = await run.client.open("robot")        # through the control port's tunnel
>>> async for obs in robot:                        # until the episode ends
...     state = obs.arrays()["observation.state"]
...     await robot.act(policy(state))             # one action, or a chunk [T, *shape]
>>> robot.result.success

:func:`open_robot` is the ``hud.capabilities`` entry point for the ``openpi`` family; its
binding carries the episode's one-time token (from the task's bindings).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from hud.errors import HudConnectionError
from hud.forward import Handed, connect_direct
from hud.protocol.messages import Binding

from .contract import Contract
from .wire import (
    Action,
    Array,
    Claim,
    End,
    EpisodeResult,
    Error,
    Observation,
    Start,
    WireError,
    decode_to_agent,
    encode,
)

if TYPE_CHECKING:
    from hud.client import Client

CONNECT_TIMEOUT = 10.0


class RobotError(HudConnectionError):
    """The episode could not be claimed, or its connection ended without an ``end``."""


class ActionRejected(ValueError):
    """The environment refused a frame (it had no effect); the episode goes on."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


class Robot:
    """One claimed episode. Read :attr:`contract`, :attr:`start` (pace, prompt, limits),
    call :meth:`observe` / :meth:`act`; after the end, :attr:`result` says how it went."""

    def __init__(self, ws: ClientConnection, start: Start, *, cast: bool = True) -> None:
        self.ws = ws
        self.start = start
        self.handed: Handed | None = None
        """The daemon's connection handed over by a local server (no tunnel), if so."""
        self.contract: Contract = start.contract
        self.cast = cast
        self.last: Observation | None = None
        self.result: EpisodeResult | None = None
        self.error: Error | None = None  # the fatal error, when the episode ended on one
        self._want = np.dtype(self.contract.action.dtype)

    @classmethod
    async def connect(cls, url: str, token: str, *, client: str = "hud",
                      contract: dict[str, Any] | None = None, cast: bool = True,
                      sock: socket.socket | None = None) -> Robot:
        """Connect to a daemon URL (a local tunnel port, usually) and claim an episode.
        ``sock``: a socket already connected to the daemon, to use instead of dialling
        ``url`` (which still names it in the handshake)."""
        max_size = _max_size(contract)
        try:
            ws = await connect(url, compression=None, max_size=max_size,
                               open_timeout=CONNECT_TIMEOUT, sock=sock)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise RobotError(f"cannot reach the robot at {url}: {exc}") from None
        try:
            await ws.send(encode(Claim(token=token, client=client)))
            reply = decode_to_agent(await ws.recv())
        except (ConnectionClosed, WireError) as exc:
            await ws.close()
            raise RobotError(f"claiming the episode failed: {exc}") from None
        if not isinstance(reply, Start):
            await ws.close()
            detail = reply.message if isinstance(reply, Error) else type(reply).__name__
            raise RobotError(f"the environment refused the episode: {detail}")
        return cls(ws, reply, cast=cast)

    @property
    def prompt(self) -> str:
        return self.start.prompt or ""

    async def observe(self) -> Observation | None:
        """The next observation; None once the episode has ended (see :attr:`result`).
        Raises :class:`ActionRejected` when the environment refused the last frame."""
        while self.result is None:
            try:
                message = decode_to_agent(await self.ws.recv())
            except ConnectionClosed as exc:
                raise self._lost(exc) from None
            if isinstance(message, Observation):
                self.last = message
                return message
            if isinstance(message, End):
                self.result = message.result
            elif isinstance(message, Error) and message.fatal:
                self.error = message
            elif isinstance(message, Error):
                raise ActionRejected(message)
        return None

    async def __aiter__(self) -> AsyncIterator[Observation]:
        while (observation := await self.observe()) is not None:
            yield observation

    async def act(self, actions: Any, *, index: int | None = None) -> None:
        """Send one action (the action feature's shape) or a chunk ``[T, *shape]``,
        answering observation ``index`` (default: the last one received). Values are cast
        to the contract's dtype when that is a same-kind cast (float64 → float32)."""
        array = np.asarray(actions)
        if self.cast and array.dtype != self._want and np.can_cast(array.dtype, self._want,
                                                                   "same_kind"):
            array = array.astype(self._want)
        if index is None:
            index = self.last.index if self.last is not None else 0
        try:
            await self.ws.send(encode(Action(index=index, actions=Array.from_numpy(array))))
        except ConnectionClosed as exc:
            raise self._lost(exc) from None

    async def aclose(self) -> None:
        """Close the connection (ending a running episode as failed). Idempotent."""
        try:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close()
        finally:
            if self.handed is not None:
                self.handed.close()  # the lifeline: the server lets go of the connection

    async def __aenter__(self) -> Robot:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _lost(self, exc: ConnectionClosed) -> RobotError:
        reason = self.error.message if self.error is not None else str(exc)
        return RobotError(f"the robot connection closed before the episode ended: {reason}")


def _max_size(contract: dict[str, Any] | None) -> int:
    """Frames up to twice the contract's observation size, plus 1 MiB for the rest."""
    if contract is None:
        return 64 * 1024 * 1024
    return 2 * msgspec.convert(contract, Contract).observation_bytes() + (1 << 20)


async def open_robot(binding: Binding) -> Robot:
    """The ``hud.capabilities`` entry point for ``openpi``: claim the episode whose token
    is in ``binding.params`` (a task's bindings put it there)."""
    token = binding.params.get("token")
    if not token:
        raise RobotError(f"capability {binding.name!r} has no episode token: start a task "
                         "whose template yields episode.bindings with its prompt")
    # a local server hands over the daemon's connection itself: no tunnel in between
    robot, handed = await connect_direct(binding, lambda sock: Robot.connect(
        binding.url, token, contract=binding.params.get("contract"), sock=sock))
    robot.handed = handed
    return robot


async def open_for(client: Client, ref: str | None = None) -> Robot:
    """The robot of ``client``'s current task: through the tunnel, or directly when the
    client talks to an in-process environment (``memory://``: the daemon is local).
    Without ``ref``: the one ``openpi`` capability the task handed a token for."""
    if ref is None:
        ours = [b.name for b in client.manifest.capabilities
                if b.protocol.split("/", 1)[0] == "openpi" and b.name in client.bindings]
        ref = ours[0] if len(ours) == 1 else "openpi"
    if not client.url.startswith("memory://"):
        robot: Robot = await client.open(ref)  # the openpi family's opener makes one
        return robot
    from hud.forward import resolve_binding

    declared = resolve_binding(client.manifest.capabilities, ref)
    params = {**declared.params, **client.bindings.get(declared.name, {})}
    return await open_robot(Binding(name=declared.name, protocol=declared.protocol,
                                    url=declared.url, params=params))
