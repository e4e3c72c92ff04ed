"""Robot harnesses: a policy in the loop of an ``openpi/0`` episode.

* ``robot``: the policy that ``--config policy=pkg.module:make_policy`` (or
  ``path/to/file.py:make_policy``) builds;
* ``robot_scripted``: a classic controller for the robot type (CartPole, MountainCar), or
  ``policy=`` as above;
* ``robot_random``: uniform random actions within the action's bounds (a baseline).

**The policy plug-in point** (LeRobot's shape). ``make_policy(contract)`` is called once per
contract and returns a callable that maps a *batch* of observations to a batch of actions
or action chunks::

    policy(batch: dict[str, np.ndarray]) -> np.ndarray   # [B, *action] or [B, T, *action]

``batch`` holds every observation feature stacked on a new first axis, plus ``"task"``: the
B prompts. Concurrent rollouts of one harness share the policy: their requests are
coalesced into one call (up to ``batch`` of them, waiting at most ``batch_wait`` s for
stragglers), run in a worker thread when ``threaded``. A chunk is executed open-loop by
the environment; the harness asks for a new one when at most ``replan`` actions are still
queued, and sends at most ``chunk`` actions of it (LeRobot's ``n_action_steps``).

The harness's answer is a summary of the episode; the environment grades from its own
record of the episode, never from the answer.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from hud.capabilities.robot.client import ActionRejected, Robot, open_for
from hud.capabilities.robot.contract import Contract, bound_array
from hud.capabilities.robot.wire import Observation

from hud.agents import Agent
from hud.eval.run import Run

Policy = Callable[[dict[str, Any]], Any]
PolicyFactory = Callable[[Contract], Policy]


class RobotHarness(Agent):
    """Runs the configured policy (``policy=module:factory``) on the task's robot."""

    name: ClassVar[str] = "robot"
    default_threaded: ClassVar[bool] = True

    def __init__(self, *, model: str | None = None, policy: str | None = None,
                 capability: str | None = None, batch: int = 64, batch_wait: float = 0.0,
                 chunk: int | None = None, replan: int = 0, threaded: bool | None = None,
                 **config: Any) -> None:
        super().__init__(model=model, **config)
        self.policy_ref = policy
        self.capability = capability
        self.chunk, self.replan = chunk, replan
        self.batch, self.batch_wait = batch, batch_wait
        self.threaded = self.default_threaded if threaded is None else threaded
        self._batchers: dict[str, Batcher] = {}

    def check(self) -> None:
        if self.policy_ref is None and type(self).factory is RobotHarness.factory:
            raise ValueError("the robot harness needs a policy: --config "
                             "policy=pkg.module:make_policy (or path/file.py:make_policy)")
        if self.policy_ref is not None:
            load_object(self.policy_ref)

    def factory(self, contract: Contract) -> Policy:
        """The policy for ``contract`` (built once per robot type and harness)."""
        assert self.policy_ref is not None
        make: PolicyFactory = load_object(self.policy_ref)
        return make(contract)

    async def __call__(self, run: Run) -> None:
        robot = await open_for(run.client, self.capability)
        try:
            stats = await self.drive(run, robot)
        finally:
            await robot.aclose()
        result = robot.result
        summary = result.info if result is not None else {"status": "unknown"}
        run.record("episode", **summary, **stats)
        run.answer = summary

    async def drive(self, run: Run, robot: Robot) -> dict[str, Any]:
        """Infer and act on the newest observation until the episode ends (observations
        that arrive while the policy thinks are skipped, as real-time control wants);
        returns the loop's statistics."""
        contract = robot.contract
        run.record("robot", robot_type=contract.robot_type, episode=robot.start.episode,
                   pace=robot.start.pace, control_rate=contract.control_rate)
        batcher = self._batcher(contract)
        newest = Newest()
        inferences, busy = 0, 0.0
        async with asyncio.TaskGroup() as group:
            group.create_task(read(run, robot, newest))
            while (observation := await newest.get()) is not None:
                if (observation.terminated or observation.truncated
                        or observation.queued > self.replan):
                    continue
                began = time.perf_counter()
                chunk = await batcher(observation.arrays(), robot.prompt)
                busy += time.perf_counter() - began
                inferences += 1
                await robot.act(chunk[: self.chunk] if self.chunk else chunk,
                                index=observation.index)
        return {"inferences": inferences,
                "inference_ms": round(1000 * busy / inferences, 3) if inferences else None}

    def _batcher(self, contract: Contract) -> Batcher:
        key = contract.robot_type
        if key not in self._batchers:
            self._batchers[key] = Batcher(self.factory(contract), contract,
                                          max_batch=self.batch, max_wait=self.batch_wait,
                                          threaded=self.threaded)
        return self._batchers[key]


class ScriptedHarness(RobotHarness):
    """A classic controller for the robot type (``policy=`` overrides it)."""

    name: ClassVar[str] = "robot_scripted"
    default_threaded: ClassVar[bool] = False

    def factory(self, contract: Contract) -> Policy:
        return super().factory(contract) if self.policy_ref else scripted_policy(contract)


class RandomHarness(RobotHarness):
    """Uniform random actions within bounds (``seed=`` makes them repeatable)."""

    name: ClassVar[str] = "robot_random"
    default_threaded: ClassVar[bool] = False

    def factory(self, contract: Contract) -> Policy:
        return RandomPolicy(contract, seed=self.config.get("seed"))


class Newest:
    """The newest observation not yet handed out; ``get`` returns None once closed."""

    def __init__(self) -> None:
        self._value: Observation | None = None
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, observation: Observation) -> None:
        self._value = observation
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> Observation | None:
        while self._value is None and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        value, self._value = self._value, None
        return value


async def read(run: Run, robot: Robot, newest: Newest) -> None:
    """Feed ``newest`` until the episode ends. A refused action is recorded and its
    observation handed out again, to be answered anew."""
    try:
        while True:
            try:
                observation = await robot.observe()
            except ActionRejected as exc:
                run.record("rejected", message=str(exc), index=exc.error.index or None)
                observation = robot.last
            if observation is None:
                return
            newest.put(observation)
    finally:
        newest.close()


# -- batching -------------------------------------------------------------------------------


class _Promoted(Exception):
    """Tells a waiting request that it now leads the batching."""


class _Request:
    __slots__ = ("future", "observation", "task")

    def __init__(self, observation: dict[str, np.ndarray], task: str) -> None:
        self.observation, self.task = observation, task
        self.future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()


class Batcher:
    """Coalesces concurrent single-observation requests into batched policy calls.

    ``await batcher(observation, task)`` returns that observation's chunk ``[T, *action]``.
    No background task: the first caller *leads*, running batches (FIFO, up to
    ``max_batch``) until its own request is answered, then hands the lead to the next
    waiting request. A cancelled leader hands over too, so no request is ever stranded.
    """

    def __init__(self, policy: Policy, contract: Contract, *, max_batch: int = 64,
                 max_wait: float = 0.0, threaded: bool = False) -> None:
        self.policy, self.max_batch, self.max_wait = policy, max_batch, max_wait
        self.threaded = threaded
        self.action_ndim = len(contract.action.shape)
        self.calls = 0  # policy calls made, for tests and statistics
        self._queue: list[_Request] = []
        self._leading = False

    async def __call__(self, observation: dict[str, np.ndarray], task: str = "") -> np.ndarray:
        request = _Request(observation, task)
        self._queue.append(request)
        if self._leading:
            try:
                return await request.future
            except _Promoted:
                request.future = asyncio.get_running_loop().create_future()
        return await self._lead(request)

    async def _lead(self, own: _Request) -> np.ndarray:
        self._leading = True
        batch: list[_Request] = []
        try:
            while not own.future.done():
                await asyncio.sleep(self.max_wait)  # let concurrent requests join
                self._queue = [r for r in self._queue if not r.future.done()]
                batch, self._queue = (self._queue[: self.max_batch],
                                      self._queue[self.max_batch:])
                await self._run(batch)
                batch = []
        finally:
            self._hand_over(own, batch)
        return own.future.result()

    def _hand_over(self, own: _Request, batch: list[_Request]) -> None:
        """Put back what a cancelled leader was running; promote the next live request."""
        self._queue[:0] = batch
        if not own.future.done():  # cancelled: nobody waits for this request any more
            own.future.cancel()
        self._queue = [r for r in self._queue if not r.future.done()]
        self._leading = bool(self._queue)
        if self._queue:
            self._queue[0].future.set_exception(_Promoted())

    async def _run(self, batch: list[_Request]) -> None:
        stacked: dict[str, Any] = {name: np.stack([r.observation[name] for r in batch])
                                   for name in batch[0].observation}
        stacked["task"] = [r.task for r in batch]
        self.calls += 1
        try:
            if self.threaded:
                output = await asyncio.to_thread(self.policy, stacked)
            else:
                output = self.policy(stacked)
            actions = np.asarray(output)
            if actions.shape[:1] != (len(batch),):
                raise ValueError(f"the policy returned shape {list(actions.shape)} for a "
                                 f"batch of {len(batch)}")
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, row in zip(batch, actions, strict=True):
            if not request.future.done():
                request.future.set_result(row if row.ndim > self.action_ndim else row[None])


# -- built-in policies ----------------------------------------------------------------------


class RandomPolicy:
    """Uniform in the action's bounds (integers for integer dtypes; a standard normal where
    a float action is unbounded)."""

    def __init__(self, contract: Contract, seed: int | None = None) -> None:
        feature = contract.action
        self.shape, self.dtype = tuple(feature.shape), np.dtype(feature.dtype)
        self.low = bound_array(feature.low, feature.shape, -np.inf)
        self.high = bound_array(feature.high, feature.shape, np.inf)
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, Any]) -> np.ndarray:
        size = (len(batch["task"]), *self.shape)
        low = np.broadcast_to(-np.inf if self.low is None else self.low, self.shape)
        high = np.broadcast_to(np.inf if self.high is None else self.high, self.shape)
        if self.dtype.kind in "iub":
            return self.rng.integers(low, high + 1, size=size).astype(self.dtype)
        finite = np.isfinite(low) & np.isfinite(high)
        normal = self.rng.standard_normal(size)
        uniform = self.rng.uniform(np.where(finite, low, 0), np.where(finite, high, 1), size)
        return np.where(finite, uniform, normal).astype(self.dtype)


def cartpole(batch: dict[str, Any]) -> np.ndarray:
    """Push toward where the pole is falling (a linear state feedback; holds 500 steps)."""
    x, x_dot, theta, theta_dot = np.asarray(batch["observation.state"]).T
    push: np.ndarray = 0.05 * x + 0.3 * x_dot + 10 * theta + 1.5 * theta_dot > 0
    return push.astype(np.int64)


def mountain_car(batch: dict[str, Any]) -> np.ndarray:
    """Push along the velocity: pumps energy until the car reaches the flag."""
    velocity = np.asarray(batch["observation.state"])[:, 1]
    return np.where(velocity >= 0, 2, 0).astype(np.int64)


CONTROLLERS: dict[str, Policy] = {
    "gymnasium/CartPole-v0": cartpole,
    "gymnasium/CartPole-v1": cartpole,
    "gymnasium/MountainCar-v0": mountain_car,
}


def scripted_policy(contract: Contract) -> Policy:
    try:
        return CONTROLLERS[contract.robot_type]
    except KeyError:
        known = ", ".join(sorted(CONTROLLERS))
        raise LookupError(f"no scripted controller for robot type {contract.robot_type!r} "
                          f"(known: {known}); pass --config policy=module:make_policy") from None


def load_object(ref: str) -> Any:
    """``pkg.module:attr`` or ``path/to/file.py:attr``."""
    where, sep, attr = ref.rpartition(":")
    if not sep or not attr:
        raise ValueError(f"policy {ref!r}: expected module:attr or file.py:attr")
    if where.endswith(".py"):
        module = _import_file(Path(where).resolve(), ref)
    else:
        module = importlib.import_module(where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"policy {ref!r}: {where} has no attribute {attr!r}") from None


def _import_file(path: Path, ref: str) -> Any:
    """Import a policy file once (under a name of its own, kept in ``sys.modules``)."""
    name = f"_hud_policy_{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise ValueError(f"policy {ref!r}: no such file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
