"""The environment side of ``openpi/0``: a daemon on 127.0.0.1 serving a simulator's episodes.

``env.gym("CartPole-v1")`` (or ``env.robot(factory, contract=...)``) builds a
:class:`RobotEndpoint` and attaches it:

* **initialize**: build one simulator (it fixes the contract), start the WebSocket daemon on
  127.0.0.1:0, publish the binding (protocol ``openpi/0``; params: the contract).
* **template**: ``episode = await robot.reset(seed=..., options=...)`` resets a simulator
  (an idle one, or a new one up to ``max_episodes``), then
  ``yield {"prompt": ..., "bindings": episode.bindings}`` hands the agent a one-time token,
  and ``yield await episode.result()`` grades it (reward 1.0 on success).
* **task end** (a task hook): every episode the task opened is cancelled, whatever way the
  task ended, and its simulator goes back to the pool (or is closed, after a crash).
  Nothing outlives its task: no slot leaks.
* **shutdown**: cancel what is left, stop the daemon, close every simulator.

A connection claims an episode with its token in its first frame (within ``claim_timeout``);
an unknown or already used token gets a fatal error and the connection closes (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from hud import ports
from hud.capability import Service
from hud.nursery import Nursery
from hud.protocol.messages import Binding
from hud.runner import Bindings, TaskScope, current_scope

from .contract import Contract
from .episode import Episode, Outcome, Rules, SuccessRule
from .simulator import Adapter, ArrayAdapter, Instance
from .wire import PROTOCOL, Claim, Error, ErrorCode, Pace, WireError, decode_from_agent, encode

if TYPE_CHECKING:
    from hud.environment import Environment

log = logging.getLogger(__name__)

Describe = Callable[[Any], tuple[Contract, Adapter]]


class RobotEndpoint(Service):
    """Serves episodes of one simulator. Build it with ``env.gym(...)``/``env.robot(...)``.

    ``describe(sim)`` gives the contract and adapter of a fresh simulator; ``rules`` the
    pace, ``max_steps``, ``action_timeout``, ``max_invalid`` and ``clip_actions``;
    ``success`` decides whether a finished episode succeeded.
    """

    def __init__(self, factory: Callable[[], Any], describe: Describe, *, name: str = "robot",
                 rules: Rules | None = None, success: SuccessRule | None = None,
                 max_episodes: int = 64, threaded: bool = True,
                 claim_timeout: float = 10.0) -> None:
        self.factory, self.describe = factory, describe
        self.name = name
        self.rules = rules or Rules()
        self.success = success or default_success
        self.max_episodes = max_episodes
        self.threaded = threaded
        self.claim_timeout = claim_timeout
        self.contract: Contract | None = None
        self.episodes: dict[str, Episode] = {}  # by token, until they end
        self._idle: list[Instance] = []
        self._open = 0
        self._server: Server | None = None
        self._claimed = 0  # the port registered in hud.ports
        self._closing = Nursery(f"{name} simulators")  # simulators being closed; see stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the robot endpoint is not started"
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    async def start(self) -> None:
        """Build the first simulator (for the contract), start the daemon, publish."""
        await self._closing.open()
        instance = await self._instance()
        self._idle.append(instance)
        await self._listen()

    async def _listen(self) -> None:
        """Start the daemon on 127.0.0.1:0 and publish the binding."""
        assert self.contract is not None
        limit = max(self.contract.max_chunk * self.contract.action.nbytes * 2, 1 << 16)
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=limit,
                                   compression=None)
        self._claimed = ports.claim(next(iter(self._server.sockets)).getsockname()[1])
        self.publish(Binding(name=self.name, protocol=PROTOCOL, url=self.url,
                               params={"contract": msgspec.to_builtins(self.contract),
                                       "pace": self.rules.pace, "credentials": "per-episode"}))

    async def stop(self) -> None:
        for episode in list(self.episodes.values()):
            episode.cancel("the environment is shutting down")
        if self._server is not None:
            ports.release(self._claimed)
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        idle, self._idle = self._idle, []
        for instance in idle:
            await instance.aclose()
        await self._closing.aclose(cancel=False)

    # -- episodes -------------------------------------------------------------------------

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None, *,
                    prompt: str | None = None, pace: Pace | None = None,
                    max_steps: int | None = None, action_timeout: float | None = None
                    ) -> Episode:
        """Reset a simulator with ``seed`` and ``options`` (Gymnasium's reset options: the
        task's parameters) and open an episode for one policy. Called from a template, the
        episode belongs to its task and ends with it."""
        if self.contract is None:
            raise RuntimeError(f"robot {self.name!r} is not started")
        if self._open >= self.max_episodes:
            raise RuntimeError(f"robot {self.name!r} already serves {self._open} episodes "
                               f"(max_episodes={self.max_episodes})")
        self._open += 1
        try:
            instance = self._idle.pop() if self._idle else await self._instance()
            try:
                first = await instance.reset(seed, options)
            except BaseException:
                await instance.aclose()  # a simulator that failed to reset is not reused
                raise
        except BaseException:
            self._open -= 1
            raise
        rules = self._rules(pace=pace, max_steps=max_steps, action_timeout=action_timeout)
        episode = Episode(self.name, instance, self.contract, rules, first,
                          success=self.success, seed=seed, prompt=prompt)
        self.episodes[episode.token] = episode
        episode.on_end(self._ended)
        scope = current_scope()
        if scope is not None:
            scope.state.setdefault(self, []).append(episode)
        return episode

    def _rules(self, **changes: Any) -> Rules:
        return dataclasses.replace(self.rules, **{k: v for k, v in changes.items()
                                                  if v is not None})

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[Bindings | None]:
        """The task hook: every episode the task opened ends with it."""
        try:
            yield None
        finally:
            for episode in scope.state.pop(self, []):
                episode.cancel()

    # -- branches (tasks.fork; see hud.forks.Branchable) -----------------------------------

    def attach(self, env: Environment) -> RobotEndpoint:
        super().attach(env)
        env.branching[self.name] = self  # the simulators live in this process: forks copy them
        return self

    async def settle(self, scope: TaskScope) -> None:
        """Before the fork: no simulator of the task may be mid-call on its thread."""
        for episode in scope.state.get(self, []):
            if episode.instance is not None:
                await episode.instance.settle()

    async def rehome(self) -> None:
        """In a branch: a daemon of its own; only the forked task's episodes come along
        (:meth:`branch`), and idle simulators stay behind (their threads did)."""
        self._closing = Nursery(f"{self.name} simulators")
        await self._closing.open()
        self.episodes, self._idle, self._open = {}, [], 0
        await self._listen()

    @contextlib.asynccontextmanager
    async def branch(self, scope: TaskScope) -> AsyncIterator[Bindings | None]:
        """In a branch, in place of :meth:`task`: the task's episodes, copied mid-way, each
        waiting for a policy of the branch's own (its token in the bindings)."""
        bindings: Bindings = {}
        for episode in scope.state.get(self, []):
            episode.rebranch()
            if episode.instance is not None:
                episode.instance.rethread()
            if not episode.ended:
                self._open += 1
                self.episodes[episode.token] = episode
                bindings.update(episode.bindings)
        async with self.task(scope):
            yield bindings

    def _ended(self, episode: Episode) -> None:
        self.episodes.pop(episode.token, None)
        if not episode.serving:
            self._release(episode)

    def _release(self, episode: Episode) -> None:
        """Give the episode's simulator back (closed, after a crash). Once per episode."""
        instance, episode.instance = episode.instance, None  # type: ignore[assignment]
        if instance is None:
            return
        self._open -= 1
        crashed = episode.status == "crashed"
        if (crashed or self._server is None) and self._closing.accepting:
            self._closing.spawn(instance.aclose())
        elif crashed or self._server is None:  # after stop(): nothing may start any more
            log.warning("%s: a simulator released after shutdown was not closed", self.name)
        else:
            self._idle.append(instance)

    async def _instance(self) -> Instance:
        def describe(sim: Any) -> Adapter:
            contract, adapter = self.describe(sim)
            if self.contract is None:
                self.contract = contract
            return adapter

        return await Instance(self.factory, threaded=self.threaded).open(describe)

    # -- connections ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async with asyncio.timeout(self.claim_timeout):
                frame = await ws.recv()
            claim = decode_from_agent(frame)
            if not isinstance(claim, Claim):
                raise WireError("the first frame must be a claim")
        except (TimeoutError, WireError) as exc:
            message = str(exc) or f"no claim within {self.claim_timeout:g} s"
            await _refuse(ws, "invalid_message", message)
            return
        except ConnectionClosed:
            return
        episode = self.episodes.get(claim.token)
        if episode is None or episode.state != "ready":
            code: ErrorCode = "unknown_token" if episode is None else "token_used"
            await _refuse(ws, code, "unknown or expired episode token" if episode is None
                          else "this episode's token was already used")
            return
        try:
            await episode.serve(ws)
        finally:
            self._release(episode)


async def _refuse(ws: ServerConnection, code: ErrorCode, message: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode(Error(code=code, message=message, fatal=True)))
        await ws.close(1008, code)


def default_success(outcome: Outcome) -> bool:
    """``is_success`` or ``success`` from the last step's info; else False."""
    for key in ("is_success", "success"):
        if key in outcome.info:
            return bool(outcome.info[key])
    return False


def robot_endpoint(factory: Callable[[], Any], contract: Contract | dict[str, Any], *,
                   name: str = "robot", success: SuccessRule | None = None,
                   max_episodes: int = 64, threaded: bool = True, **rules: Any
                   ) -> RobotEndpoint:
    """An endpoint for a simulator that already speaks ``contract`` (observations: a
    mapping of feature name to array, or one array; actions: numpy arrays). ``rules``:
    the fields of :class:`Rules`."""
    contract = msgspec.convert(contract, Contract)
    return RobotEndpoint(factory, lambda sim: (contract, ArrayAdapter(contract)), name=name,
                         rules=Rules(**rules), success=success, max_episodes=max_episodes,
                         threaded=threaded)


def declare_robot(env: Environment, factory: Callable[[], Any], /, *,
                  contract: Contract | dict[str, Any], **options: Any) -> RobotEndpoint:
    """The ``hud.capabilities.env`` entry point ``robot`` (``env.robot(factory,
    contract=...)``): serve :func:`robot_endpoint` on ``env``."""
    return robot_endpoint(factory, contract, **options).attach(env)
