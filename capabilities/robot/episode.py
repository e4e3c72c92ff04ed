"""One episode: reset, a policy's connection, steps at the episode's pace, a result.

The environment side of the protocol after the claim (see ``protocol/openpi-0/README.md``):

* ``start``, then observation 0 (the world after reset); then one observation per step.
* **lockstep** pace: a step runs as soon as an action is queued for it, so the episode runs
  as fast as the policy answers (evals, benchmarks, training).
* **realtime** pace: the clock starts with the first action; from then on a step runs every
  ``1 / control_rate`` seconds whatever the policy does. A step with no action queued
  *holds the last action* (counted in ``late_ticks``); a late chunk lands where it belongs
  (entries for steps already taken are dropped, counted in ``dropped_actions``).
* An invalid frame is refused with a non-fatal ``error`` and has no effect;
  ``max_invalid`` refusals in a row fail the episode.
* No valid action for ``action_timeout`` seconds (lockstep: while the episode waits for
  one; realtime: since the last one) fails the episode (``policy_timeout``). So does the
  policy's connection closing before the end.
* A simulator exception ends the episode as ``crashed``: the policy gets a fatal
  ``simulator_error`` and :meth:`Episode.result` raises :class:`SimulatorError`, so the
  rollout is an environment error, never a zero. Other episodes are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .contract import ActionCheck, ActionError, Contract
from .schedule import ActionQueue, FutureIndex
from .simulator import Instance, SimulatorError
from .wire import (
    Action,
    Array,
    End,
    EpisodeResult,
    Error,
    ErrorCode,
    Observation,
    Pace,
    Start,
    Status,
    WireError,
    decode_from_agent,
    encode,
)

log = logging.getLogger(__name__)

CLOSE_CODES: dict[Status, int] = {"completed": 1000, "failed": 1000, "crashed": 1011,
                                  "cancelled": 1001}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a success rule sees of a finished episode (``info``: the last step's)."""

    terminated: bool
    truncated: bool
    steps: int
    episode_return: float
    info: dict[str, Any] = field(default_factory=dict)


SuccessRule = Callable[[Outcome], bool]


@dataclass(frozen=True, slots=True)
class Rules:
    """How an episode runs; set per robot, some overridable per episode."""

    pace: Pace = "realtime"
    max_steps: int = 1000
    action_timeout: float = 10.0
    max_invalid: int = 3
    clip_actions: bool = False


class Episode:
    """One episode of one simulator instance. The template creates it (``robot.reset``),
    hands :attr:`bindings` to the agent, and reads :meth:`result`."""

    def __init__(self, capability: str, instance: Instance, contract: Contract, rules: Rules,
                 first: dict[str, np.ndarray], *, success: SuccessRule,
                 seed: int | None = None, prompt: str | None = None) -> None:
        self.id = "ep-" + secrets.token_hex(8)
        self.token = secrets.token_urlsafe(18)
        self.capability, self.instance, self.contract, self.rules = (capability, instance,
                                                                     contract, rules)
        self.seed, self.prompt, self.success_rule = seed, prompt, success
        self.state = "ready"  # ready → running → ended
        self.index = 0
        self.episode_return = 0.0
        self.late_ticks = self.invalid_actions = self._streak = 0
        self.queue = ActionQueue()
        self.check = ActionCheck(contract.action, max_chunk=contract.max_chunk,
                                 clip=rules.clip_actions)
        self._latest = first  # the observation the policy saw last (a branch starts there)
        self._last: Any = None
        self._last_action_at = 0.0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._result: EpisodeResult | None = None
        self._code: ErrorCode | None = None
        self.serving = False
        self._on_end: list[Callable[[Episode], None]] = []

    def __repr__(self) -> str:
        return f"Episode({self.id}, {self.state}, step {self.index})"

    @property
    def bindings(self) -> dict[str, dict[str, Any]]:
        """The per-episode bindings to yield with the prompt: the one-time token."""
        return {self.capability: {"token": self.token, "episode": self.id}}

    @property
    def ended(self) -> bool:
        return self._result is not None

    @property
    def status(self) -> Status | None:
        """How the episode ended (None while it runs)."""
        return None if self._result is None else self._result.status

    async def result(self) -> EpisodeResult:
        """Wait for the episode to end and return how it went. An episode no policy ever
        claimed ends now, as failed. Raises :class:`SimulatorError` if the simulator
        crashed."""
        if self.state == "ready":
            self._end("failed", "no policy connected to the episode")
        await self._done.wait()
        assert self._result is not None
        if self._result.status == "crashed":
            raise SimulatorError(self._result.reason)
        return self._result

    def cancel(self, reason: str = "the task ended before the episode did") -> None:
        """End the episode now, if it has not ended (a policy still connected is told)."""
        self._end("cancelled", reason)

    def rebranch(self) -> None:
        """In a branch made by ``tasks.fork``: this copy of the episode waits for a policy
        of its own (a new id and token), from the step it had reached; actions queued for
        the original's policy are dropped. Its events are made anew: the copied ones may be
        bound to the parent's event loop."""
        self.id, self.token = "ep-" + secrets.token_hex(8), secrets.token_urlsafe(18)
        self._wake, self._done = asyncio.Event(), asyncio.Event()
        self.queue, self.serving = ActionQueue(), False
        if self._result is not None:
            self._done.set()
        else:
            self.state = "ready"

    def on_end(self, callback: Callable[[Episode], None]) -> None:
        self._on_end.append(callback)

    # -- serving the policy ---------------------------------------------------------------

    async def serve(self, ws: ServerConnection) -> None:
        """Run the claimed episode over ``ws`` until it ends; then send ``end`` and close."""
        self.state = "running"
        self.serving = True
        self._last_action_at = asyncio.get_running_loop().time()
        receiver = asyncio.create_task(self._receive(ws), name=f"hud-robot-recv-{self.id}")
        try:
            await self._send(ws, self._start())
            await self._send(ws, self._observation(self._latest, 0.0, False, False))
            await (self._lockstep(ws) if self.rules.pace == "lockstep" else self._realtime(ws))
        except ConnectionClosed:
            self._end("failed", f"the policy disconnected at step {self.index}")
        except asyncio.CancelledError:
            self._end("cancelled", "the robot daemon stopped")
            raise
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            self.serving = False
            await self._goodbye(ws)

    def _start(self) -> Start:
        start = Start(episode=self.id, contract=self.contract, pace=self.rules.pace,
                      max_steps=self.rules.max_steps, action_timeout=self.rules.action_timeout)
        if self.prompt is not None:
            start.prompt = self.prompt
        if self.seed is not None:
            start.seed = self.seed
        return start

    async def _lockstep(self, ws: ServerConnection) -> None:
        """Step whenever the action for the next step is queued."""
        loop = asyncio.get_running_loop()
        while not self.ended:
            action = self.queue.pop(self.index)
            if action is not None:
                await self._step(ws, action)
            else:
                await self._await_action(loop.time() + self.rules.action_timeout)

    async def _realtime(self, ws: ServerConnection) -> None:
        """Step every ``1 / control_rate`` s from the first action on, holding the last
        action when none is queued."""
        loop = asyncio.get_running_loop()
        await self._await_action(self._last_action_at + self.rules.action_timeout)
        period = 1.0 / self.contract.control_rate
        tick = loop.time()
        while not self.ended:
            if loop.time() >= self._last_action_at + self.rules.action_timeout:
                self._timeout()
                break
            action = self.queue.pop(self.index)
            if action is None:
                action = self._last
                self.late_ticks += 1
            await self._step(ws, action)
            tick = max(tick + period, loop.time() - period)  # never burst to catch up
            await self._pause(tick - loop.time(), self._done)

    async def _await_action(self, deadline: float) -> None:
        """Wait until something is queued or the episode ends; fail it at ``deadline``."""
        loop = asyncio.get_running_loop()
        while not self.ended and not self.queue:
            if loop.time() >= deadline:
                self._timeout()
            else:
                await self._pause(deadline - loop.time())

    async def _pause(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep up to ``seconds``; woken early by ``event`` (default: an action arriving,
        or the episode's end)."""
        event = event or self._wake
        if event is self._wake:
            event.clear()
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # no extra task, unlike wait_for
                    await event.wait()

    async def _step(self, ws: ServerConnection, action: Any) -> None:
        try:
            observation, reward, terminated, truncated, info = await self.instance.step(action)
        except SimulatorError as exc:
            self._end("crashed", f"{exc} (episode {self.id}, step {self.index})",
                      code="simulator_error")
            return
        self._last, self._latest = action, observation
        self.index += 1
        self.episode_return += reward
        truncated = truncated or (self.index >= self.rules.max_steps and not terminated)
        if terminated or truncated:
            self._complete(terminated, truncated, info)
        await self._send(ws, self._observation(observation, reward, terminated, truncated))

    def _observation(self, data: dict[str, np.ndarray], reward: float, terminated: bool,
                     truncated: bool) -> Observation:
        arrays = {name: Array.from_numpy(value) for name, value in data.items()}
        return Observation(index=self.index, data=arrays, reward=reward, terminated=terminated,
                           truncated=truncated, queued=len(self.queue))

    async def _receive(self, ws: ServerConnection) -> None:
        try:
            async for frame in ws:
                await self._on_frame(ws, frame)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must end the episode, not strand it
            log.exception("robot episode %s: receiving failed", self.id)
            self._end("crashed", f"the robot endpoint failed: {exc!r}", code="simulator_error")
        detail = f" (close code {ws.close_code})" if ws.close_code is not None else ""
        self._end("failed", f"the policy disconnected at step {self.index}{detail}")

    async def _on_frame(self, ws: ServerConnection, frame: bytes | str) -> None:
        index: int | None = None
        try:
            message = decode_from_agent(frame)
            if not isinstance(message, Action):
                raise WireError("this connection has claimed its episode; send actions")
            index = message.index
            chunk = self.check(message.actions.to_numpy())
            self.queue.replace(index, chunk, self.index)
        except WireError as exc:
            await self._refuse(ws, "invalid_message", str(exc), index)
            return
        except (ActionError, FutureIndex) as exc:
            await self._refuse(ws, "invalid_action", str(exc), index)
            return
        self._streak = 0
        self._last_action_at = asyncio.get_running_loop().time()
        self._wake.set()

    async def _refuse(self, ws: ServerConnection, code: ErrorCode, message: str,
                      index: int | None) -> None:
        self.invalid_actions += 1
        self._streak += 1
        error = Error(code=code, message=message)
        if index is not None:
            error.index = index
        await self._send(ws, error)
        if self._streak >= self.rules.max_invalid:
            self._end("failed", f"{self._streak} invalid actions in a row; the last: {message}")

    async def _send(self, ws: ServerConnection, message: Any) -> None:
        await ws.send(encode(message))

    async def _goodbye(self, ws: ServerConnection) -> None:
        result = self._result
        assert result is not None
        with contextlib.suppress(ConnectionClosed):
            if self._code is not None:
                await self._send(ws, Error(code=self._code, message=result.reason, fatal=True))
            await self._send(ws, End(result=result))
        await ws.close(CLOSE_CODES[result.status], result.status)

    # -- ending ---------------------------------------------------------------------------

    def _timeout(self) -> None:
        self._end("failed", f"the policy sent no valid action for "
                            f"{self.rules.action_timeout:g} s (at step {self.index})",
                  code="policy_timeout")

    def _complete(self, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        outcome = Outcome(terminated, truncated, self.index, self.episode_return, info)
        try:
            success = bool(self.success_rule(outcome))
        except Exception as exc:
            self._end("crashed", f"the success rule raised {type(exc).__name__}: {exc}",
                      code="simulator_error")
            return
        how = "terminated" if terminated else "truncated"
        self._end("completed", f"{how} after {self.index} steps", success=success,
                  terminated=terminated, truncated=truncated)

    def _end(self, status: Status, reason: str, *, success: bool = False,
             terminated: bool = False, truncated: bool = False,
             code: ErrorCode | None = None) -> None:
        """Record how the episode ended; the first call wins. ``code``: the fatal error
        the policy is sent before ``end``."""
        if self._result is not None:
            return
        self._code = code
        self._result = EpisodeResult(
            episode=self.id, status=status, success=success, reason=reason,
            episode_return=self.episode_return, steps=self.index, terminated=terminated,
            truncated=truncated, late_ticks=self.late_ticks,
            dropped_actions=self.queue.dropped, invalid_actions=self.invalid_actions)
        self.state = "ended"
        self._wake.set()
        self._done.set()
        for callback in self._on_end:
            callback(self)

