"""The harness conformance kit: :func:`check_harness`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ..agents import Agent, create_agent
from ..environment import Environment, Task
from ..eval.rollout import AgentCallable, rollout
from ..eval.run import Run
from ..eval.taskset import Taskset
from ..runtimes.base import Runtime
from ..runtimes.inprocess import InProcessRuntime
from .capability import STEP_TIMEOUT, CapabilityProbe, ConformanceError

ANSWER = "42"
PROMPT = "What is six times seven? Reply with the number only, then stop."


class Probe:
    """The kit's tiny environment: four templates, and what their tasks saw.

    * ``answer``: asks for 42 (reward 1.0 for it, else 0.0); its solution answers 42;
    * ``fails_in_setup`` and ``fails_in_grade``: raise in that phase, on purpose;
    * ``waits``: its solution waits until cancelled; its cleanup is recorded in
      :attr:`cleaned`.

    With ``capability``, the environment declares it too, and every task that gets past
    setup hands out its :attr:`CapabilityProbe.setup` bindings.
    """

    def __init__(self, capability: CapabilityProbe | None = None) -> None:
        self.env = Environment("conformance-harness")
        self.cleaned = asyncio.Event()
        self.handle = capability.declare(self.env) if capability is not None else None
        self.capability = capability
        self._templates()

    def task(self, template: str) -> Task:
        return self.env.templates[template].task()

    async def _bindings(self) -> Any:
        if self.capability is None or self.capability.setup is None:
            return {}
        return await self.capability.setup(self.handle) or {}

    def _templates(self) -> None:
        env, probe = self.env, self

        @env.template(solution=lambda: ANSWER)
        async def answer() -> AsyncGenerator[Any, Any]:
            reply = yield {"prompt": PROMPT, "bindings": await probe._bindings()}
            yield 1.0 if str(reply).strip() == ANSWER else 0.0

        @env.template(solution=lambda: ANSWER)
        async def fails_in_setup() -> AsyncGenerator[Any, Any]:
            raise RuntimeError("this task's setup fails on purpose (conformance kit)")
            yield  # an async generator, as templates are

        @env.template(solution=lambda: ANSWER)
        async def fails_in_grade() -> AsyncGenerator[Any, Any]:
            yield {"prompt": PROMPT, "bindings": await probe._bindings()}
            raise RuntimeError("this task's grading fails on purpose (conformance kit)")

        @env.template(solution=asyncio.Event().wait)
        async def waits() -> AsyncGenerator[Any, Any]:
            try:
                yield {"prompt": PROMPT, "bindings": await probe._bindings()}
                yield 1.0
            finally:
                probe.cleaned.set()


async def check_harness(
    harness: str | type[Agent] | AgentCallable,
    *,
    config: dict[str, Any] | None = None,
    capability: CapabilityProbe | None = None,
    max_steps: int = 3,
    runtime: Callable[..., Runtime] = InProcessRuntime,
) -> None:
    """Run ``harness`` on the kit's tiny environment (:class:`Probe`) through the code path
    of ``hud eval`` (``create_agent``, ``agent.check()``, ``Taskset.run``) and check its
    contract.

    ``harness``: a registered name (entry-point group ``hud.harnesses``), an
    :class:`~hud.agents.Agent` class (built with ``config``), or an agent. ``capability``:
    one the harness needs (a robot, say), declared in the tiny environment. ``runtime``:
    the runtime class (called with ``solutions=``); in-process by default.

    Raises :class:`ConformanceError` naming the harness and the first rule it breaks:

    1. on ``answer`` the rollout completes and is graded: status ``completed``, a reward in
       [0, 1], no error, and the trace records the prompt and the grade;
    2. it takes at most ``max_steps`` model turns (trace steps of kind ``model``);
    3. a task failing in ``setup`` or ``grade`` is recorded as an error of that phase, with
       no reward; the harness is not run when setup failed;
    4. cancelling the rollout while the harness runs ends it: ``CancelledError`` comes out
       of the rollout (the harness does not swallow it), the run is ``cancelled``, and the
       task's cleanup runs in the environment.
    """
    agent = _build(harness, config or {})
    label = f"harness {getattr(agent, 'name', type(agent).__name__)!r}"
    probe = Probe(capability)
    solutions = bool(getattr(agent, "needs_solutions", False))

    def make() -> Runtime:
        return runtime(solutions=solutions)

    graded = await _run(agent, probe.task("answer"), make(), max_steps)
    _check_graded(label, graded, max_steps)
    for phase in ("setup", "grade"):
        _check_failed(label, await _run(agent, probe.task(f"fails_in_{phase}"), make(),
                                        max_steps), phase)
    await _check_cancellation(label, agent, probe, make())


def _build(harness: str | type[Agent] | AgentCallable, config: dict[str, Any]) -> Any:
    """The agent, built and checked as ``hud eval`` builds it."""
    if isinstance(harness, str):
        agent: Any = create_agent(harness, **config)
    elif isinstance(harness, type):
        agent = harness(**config)
    else:
        agent = harness
    if not callable(agent):
        raise ConformanceError(f"harness {harness!r} did not build a callable agent")
    check = getattr(agent, "check", None)
    if check is not None:
        check()
    return agent


async def _run(agent: Any, task: Task, runtime: Runtime, max_steps: int) -> Run:
    job = await Taskset([task], name="conformance").run(
        agent, runtime=runtime, max_steps=max_steps, timeout=STEP_TIMEOUT)
    (run,) = job.runs
    return run


def _check_graded(label: str, run: Run, max_steps: int) -> None:
    if run.status != "completed" or run.error is not None:
        error = run.error
        where = (f"{error.type} during {error.phase}: {error.message}" if error is not None
                 else "no error recorded")
        raise ConformanceError(f"{label}: the rollout of 'answer' did not complete "
                               f"(status {run.status!r}; {where})")
    if run.reward is None or not 0.0 <= run.reward <= 1.0:
        raise ConformanceError(f"{label}: the rollout of 'answer' has reward {run.reward!r}, "
                               "not one in [0, 1]")
    kinds = [step.kind for step in run.trace.steps]
    if "prompt" not in kinds or "grade" not in kinds:
        raise ConformanceError(f"{label}: the trace lacks the prompt or the grade ({kinds})")
    turns = kinds.count("model")
    if turns > max_steps:
        raise ConformanceError(f"{label}: {turns} model turns with max_steps={max_steps}")


def _check_failed(label: str, run: Run, phase: str) -> None:
    error = run.error
    if run.status != "error" or error is None or error.phase != phase:
        got = f"{error.type} during {error.phase}" if error is not None else "no error"
        raise ConformanceError(f"{label}: a task failing in {phase} must end as an error of "
                               f"phase {phase!r}; got status {run.status!r}, {got}")
    if run.reward is not None:
        raise ConformanceError(f"{label}: a task failing in {phase} has reward {run.reward!r}; "
                               "an error carries none")
    if phase == "setup" and any(step.kind != "error" for step in run.trace.steps):
        raise ConformanceError(f"{label}: it ran although the task's setup failed")


async def _check_cancellation(label: str, agent: Any, probe: Probe, runtime: Runtime) -> None:
    """Cancel the rollout as the harness starts: the cancellation arrives at the harness's
    first wait (at the grade's, for a harness that never waits)."""
    runs: list[Run] = []

    async def cancelled_at_once(run: Run) -> None:
        runs.append(run)
        task = asyncio.current_task()
        assert task is not None  # the rollout's task runs this coroutine
        task.cancel()
        await agent(run)

    async with runtime:
        attempt = asyncio.create_task(rollout(
            probe.task("waits"), _named(cancelled_at_once, agent), runtime, max_steps=3))
        done, _ = await asyncio.wait({attempt}, timeout=STEP_TIMEOUT)
        if not done:
            attempt.cancel()
            raise ConformanceError(f"{label}: still running {STEP_TIMEOUT:g} s after the "
                                   "rollout was cancelled")
        if not runs:
            raise ConformanceError(f"{label}: the rollout to cancel ended before the harness "
                                   f"ran: {attempt.exception()!r}")
        if not attempt.cancelled():
            raise ConformanceError(f"{label}: it swallowed the cancellation: the rollout went "
                                   f"on and ended {runs[0].status!r}")
        if runs[0].status != "cancelled":
            raise ConformanceError(f"{label}: a cancelled rollout is recorded as "
                                   f"{runs[0].status!r}, not 'cancelled'")
        await _within(probe.cleaned.wait(), f"{label}: the cancelled task's cleanup did not run")


def _named(call: AgentCallable, agent: Any) -> AgentCallable:
    """``call``, wearing ``agent``'s name and model (the rollout records them)."""
    call.name = getattr(agent, "name", type(agent).__name__)  # type: ignore[attr-defined]
    call.model = getattr(agent, "model", None)  # type: ignore[attr-defined]
    return call


async def _within(step: Any, message: str) -> None:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await step
    except TimeoutError:
        raise ConformanceError(message) from None
