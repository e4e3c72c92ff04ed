"""One simulator instance, driven from asyncio: its own thread, its adapter, its errors.

A simulator is anything with Gymnasium's API: ``reset(seed=, options=) -> (obs, info)``,
``step(action) -> (obs, reward, terminated, truncated, info)`` and ``close()`` (a real
robot's driver can offer the same). An :class:`Adapter` turns its observations into the
contract's features and the contract's actions into what ``step`` takes.

Each instance runs on a thread of its own (``threaded=True``, the default), so a slow
``step`` never stalls other sessions and simulators that need thread affinity (OpenGL
rendering, some robot SDKs) always see the same thread. Any exception from the simulator is
re-raised as :class:`SimulatorError`, which names the call and the original error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from .contract import Contract

log = logging.getLogger(__name__)
T = TypeVar("T")


class SimulatorError(RuntimeError):
    """The simulator raised; the message names the call, the step and the original error."""


class Adapter(Protocol):
    """Converts between a simulator's values and the contract's arrays."""

    def observe(self, observation: Any) -> dict[str, np.ndarray]: ...

    def act(self, action: np.ndarray) -> Any: ...


class ArrayAdapter:
    """For simulators that already speak the contract: observations are a mapping of
    feature name to array (or one array, when there is one observation feature), and
    actions are passed on as numpy arrays."""

    def __init__(self, contract: Contract) -> None:
        self.features = contract.observations
        self.dtypes = {name: np.dtype(f.dtype) for name, f in self.features.items()}

    def observe(self, observation: Any) -> dict[str, np.ndarray]:
        if not isinstance(observation, Mapping):
            if len(self.features) != 1:
                raise TypeError(f"expected a mapping with {sorted(self.features)}")
            observation = {next(iter(self.features)): observation}
        return {name: np.asarray(observation[name], dtype) for name, dtype in self.dtypes.items()}

    def act(self, action: np.ndarray) -> Any:
        return action


Step = tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]


class Instance:
    """A simulator built by ``factory`` on its own thread. Not safe for concurrent calls:
    one episode drives it at a time."""

    def __init__(self, factory: Callable[[], Any], *, threaded: bool = True) -> None:
        self._factory = factory
        self._executor = (concurrent.futures.ThreadPoolExecutor(1, "hud-robot-sim")
                          if threaded else None)
        self.sim: Any = None
        self.adapter: Adapter | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None  # the thread's call

    async def open(self, describe: Callable[[Any], Adapter]) -> Instance:
        """Build the simulator and its adapter (``describe(sim)``) on the instance's thread."""
        def build() -> None:
            self.sim = self._factory()
            self.adapter = describe(self.sim)

        try:
            await self._call("create", build)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def reset(self, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        def reset() -> dict[str, Any]:
            assert self.adapter is not None
            observation, _ = self.sim.reset(seed=seed, options=options)
            return self.adapter.observe(observation)

        return await self._call("reset", reset)

    async def step(self, action: np.ndarray) -> Step:
        def step() -> Step:
            assert self.adapter is not None
            observation, reward, terminated, truncated, info = self.sim.step(
                self.adapter.act(action))
            return (self.adapter.observe(observation), float(reward), bool(terminated),
                    bool(truncated), dict(info or {}))

        return await self._call("step", step)

    async def aclose(self) -> None:
        """Close the simulator (errors are logged) and stop the thread."""
        if self.sim is not None:
            try:
                await self._call("close", self.sim.close)
            except SimulatorError:
                log.warning("closing a simulator failed", exc_info=True)
            self.sim = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def settle(self) -> None:
        """Return once the simulator's thread runs no call, at a point where the caller can
        act before the event loop submits another (``tasks.fork`` copies it then)."""
        while self._inflight is not None and not self._inflight.done():
            await asyncio.wait([asyncio.wrap_future(self._inflight)])

    def rethread(self) -> None:
        """In a branch made by ``tasks.fork``: a thread of its own again (the copied
        executor's thread was the parent's, and did not come along)."""
        if self._executor is not None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "hud-robot-sim")
            self._inflight = None

    async def _call(self, what: str, func: Callable[[], T]) -> T:
        try:
            if self._executor is None:
                return func()
            # A cancelled caller leaves the call running; later calls queue behind it on the
            # same thread, so close() never overlaps a step.
            self._inflight = self._executor.submit(func)
            return await asyncio.wrap_future(self._inflight)
        except SimulatorError:
            raise
        except Exception as exc:
            raise SimulatorError(f"the simulator's {what}() raised {type(exc).__name__}: "
                                 f"{exc}") from exc
