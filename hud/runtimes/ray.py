"""``ray`` and ``ray://HOST:PORT``: whole rollouts, agent and environment together, placed as
Ray tasks across a cluster.

Each rollout is one Ray task: on the node Ray picks, it runs the rollout with the agent shipped
from the driver and returns the run's trace, which the driver records in its store as each
one finishes. Model calls therefore leave from the node that holds the environment.

* Isolation: by default (``isolation=process``) every rollout's environment is a fresh
  process, forked for it from a zygote that the Ray worker keeps between rollouts (the local
  default's pool, :mod:`hud.runtimes.ray_worker`): module state, leaked tasks, a crash or a
  hang of one rollout's environment never reach the next. ``ray?isolation=inprocess`` (or
  ``ray://HOST:PORT?isolation=inprocess``) runs the environment in the Ray worker's own
  process, loaded once per worker: faster, and rollouts on a worker share its state (as
  :class:`~hud.runtimes.inprocess.InProcessRuntime` does).
* Resources: a task asks for ``cpu`` (default 1), ``memory_mb`` and ``gpu`` through
  :func:`resources` on its template function, or ``metadata.resources`` in a task file row.
* Back-pressure: the driver keeps at most as many rollouts in flight as the cluster's CPUs
  (and GPUs) can run at once, so 10,000 rows never become 10,000 pending Ray tasks.
* A node that dies (or a Ray worker process that crashes) under a rollout makes it an error in
  phase ``environment`` naming the node: never a reward. Ray does not retry it.

``ray`` joins the cluster ``RAY_ADDRESS`` names, else a running local one, else starts one in
this process; ``ray:ADDRESS`` joins the one at ``ADDRESS``; ``ray://HOST:PORT`` connects
through the Ray client. The nodes need hud, the harness and the environment's files at the
same paths as the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..eval.run import Run
from ..eval.trace import Trace
from .base import Runtime, RuntimeOptions, source_of

if TYPE_CHECKING:
    from ..client import Client
    from ..environment import Task


@dataclass(frozen=True, slots=True)
class Request:
    """What one rollout asks the cluster for."""

    cpu: float = 1.0
    memory_mb: int | None = None
    gpu: float = 0.0

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cpu, "num_gpus": self.gpu}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 1024 * 1024
        return options


def resources(*, cpu: float = 1.0, memory_mb: int | None = None,
              gpu: float = 0.0) -> Callable[[Any], Any]:
    """Put under ``@env.template()``: what each rollout of the template asks Ray for."""

    def mark(func: Any) -> Any:
        func.hud_resources = Request(cpu, memory_mb, gpu)
        return func

    return mark


def request_for(task: Task) -> Request:
    """The template's :func:`resources`, else a task file row's ``metadata.resources``."""
    marked = getattr(task.template.func, "hud_resources", None) if task.template else None
    if isinstance(marked, Request):
        return marked
    row = task.args.get("row")
    wanted = row.get("metadata", {}).get("resources") if isinstance(row, dict) else None
    if isinstance(wanted, dict):
        try:
            return Request(**wanted)
        except TypeError as exc:
            raise ValueError(f"task {task.slug!r}: metadata.resources: {exc} (fields: cpu, "
                             "memory_mb, gpu)") from None
    return Request()


class Capacity:
    """Back-pressure: rollouts wait until the cluster's CPUs and GPUs can hold them."""

    def __init__(self, cpu: float, gpu: float) -> None:
        self.free = {"cpu": cpu, "gpu": gpu}
        self.total = dict(self.free)
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, request: Request) -> Any:
        need = {"cpu": request.cpu, "gpu": request.gpu}
        for kind, amount in need.items():
            if amount > self.total[kind]:
                raise ValueError(f"a rollout asks for {amount:g} {kind.upper()}s; the "
                                 f"cluster has {self.total[kind]:g}")
        async with self._changed:
            await self._changed.wait_for(lambda: all(self.free[k] >= v for k, v in need.items()))
            for kind, amount in need.items():
                self.free[kind] -= amount
        try:
            yield
        finally:
            async with self._changed:
                for kind, amount in need.items():
                    self.free[kind] += amount
                self._changed.notify_all()


ISOLATIONS = ("process", "inprocess")
"""Where a rollout's environment runs on its node: a fresh process (the default), or the
Ray worker's own process."""


class RayRuntime(Runtime):
    """Rollouts as Ray tasks on the cluster at ``address`` (see the module docstring)."""

    name = "ray"
    usage = "ray://HOST:PORT"

    def __init__(self, address: str | None = None, *, solutions: bool = False,
                 isolation: str = "process") -> None:
        super().__init__(solutions=solutions)
        if isolation not in ISOLATIONS:
            raise ValueError(f"ray: isolation must be {' or '.join(ISOLATIONS)}, not "
                             f"{isolation!r}")
        self.address = address
        self.isolation = isolation
        self.capacity: Capacity | None = None
        self._remote: Any = None
        self._owns = False  # whether this runtime called ray.init (and so shuts Ray down)
        self._connect = asyncio.Lock()

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> RayRuntime:
        """``ray`` (``RAY_ADDRESS``, a running local cluster, or a new one), ``ray:ADDRESS``
        or ``ray://…``, each optionally ending in ``?isolation=process|inprocess``."""
        if importlib.util.find_spec("ray") is None:
            raise ValueError("the ray runtime needs Ray: pip install 'hud-runtime[ray]'")
        address, _, query = (argument or "").partition("?")
        try:
            settings = dict(urllib.parse.parse_qsl(query, strict_parsing=bool(query)))
        except ValueError:
            raise ValueError(f"ray: options are KEY=VALUE pairs joined by '&', not {query!r}"
                             ) from None
        unknown = sorted(set(settings) - {"isolation"})
        if unknown:
            raise ValueError(f"ray: unknown option {unknown[0]!r} (the one option is "
                             f"isolation={'|'.join(ISOLATIONS)})")
        return cls(address or None, solutions=options.solutions,
                   isolation=settings.get("isolation", "process"))

    async def _connected(self) -> Any:
        async with self._connect:
            if self._remote is None:
                self._remote = await asyncio.to_thread(self._init)
            return self._remote

    def _init(self) -> Any:
        import ray

        from .ray_worker import run_remote

        self._owns = not ray.is_initialized()
        if self._owns:
            address = self.address or os.environ.get("RAY_ADDRESS")
            try:
                _join(ray, address or "auto")
            except ConnectionError:
                if address:
                    raise
                ray.init(logging_level=logging.WARNING, log_to_driver=False)  # a local cluster
        total: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        self.capacity = Capacity(total.get("CPU", 0.0), total.get("GPU", 0.0))
        return ray.remote(max_retries=0)(run_remote)

    def open(self, task: Task) -> contextlib.AbstractAsyncContextManager[Client]:
        raise TypeError("the ray runtime runs whole rollouts (Runtime.rollout), not "
                        "environments for a local agent")

    async def rollout(self, task: Task, agent: Any, *, group_id: str | None = None,
                      timeout: float | None = None, max_steps: int | None = None,
                      on_start: Callable[[Run], object] | None = None) -> Run:
        """Run one rollout on the cluster; like :func:`hud.eval.rollout.rollout`, it never
        raises for the rollout's own failures, a dead node among them."""
        run = Run(task, group_id=group_id, max_steps=max_steps)
        run.agent_name = getattr(agent, "name", type(agent).__name__)
        run.model = getattr(agent, "model", None)
        if on_start is not None:
            on_start(run)
        try:
            remote = await self._connected()
            request = request_for(task)
            assert self.capacity is not None
            async with self.capacity.hold(request):
                ref = remote.options(**request.ray_options()).remote(
                    source_of(task), task.to_dict(), agent, run.group_id, timeout, max_steps,
                    self.solutions, self.isolation)
                encoded = await _result(ref)
        except asyncio.CancelledError:
            run.failed("cancelled", "environment", asyncio.CancelledError("rollout cancelled"))
            raise
        except Exception as exc:
            run.failed("error", "environment", _infrastructure(exc))
            return run
        run.trace = msgspec.msgpack.decode(encoded, type=Trace)
        return run

    async def aclose(self) -> None:
        """Leaves the cluster if this runtime joined it (a cluster it started stops with it);
        a Ray session the caller opened stays open."""
        if self._remote is not None and self._owns:
            import ray

            await asyncio.to_thread(ray.shutdown)
        self._remote = None


JOIN_ATTEMPTS = 3


def _join(ray: Any, address: str) -> None:
    """``ray.init(address)``. Ray's client proxy (``ray://``) sometimes fails to start the
    server it starts for each client ("Initialization failure from server", a
    ``ConnectionAbortedError``); a second try gets a fresh one, so that is tried again."""
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        except ConnectionAbortedError:
            if attempt == JOIN_ATTEMPTS:
                raise
            ray.shutdown()
            time.sleep(attempt)


async def _result(ref: Any) -> bytes:
    future = getattr(ref, "future", None)
    if future is not None:  # the Ray client's refs are not awaitable
        return bytes(await asyncio.wrap_future(future()))
    return bytes(await ref)


def _infrastructure(exc: Exception) -> Exception:
    """A Ray failure in the user's terms: which node died, or what Ray said."""
    from ray import exceptions

    if isinstance(exc, exceptions.NodeDiedError | exceptions.WorkerCrashedError
                  | exceptions.LocalRayletDiedError | exceptions.ObjectLostError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ConnectionError(f"ray: the node or worker running this rollout died "
                               f"({type(exc).__name__}: {first}); no reward was recorded")
    return exc
