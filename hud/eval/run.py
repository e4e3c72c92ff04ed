"""A run: one rollout of one task, as the agent sees it and as the engine records it."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..protocol.messages import Fork, GradeResult, StartResult
from .trace import AgentInfo, Failure, Phase, Status, TaskInfo, Trace, new_id

if TYPE_CHECKING:
    from ..client import Client
    from ..environment import Task


class Run:
    """Handed to an agent (``await agent(run)``): the prompt, the capabilities, the answer.

    The agent reads :attr:`prompt` (or :attr:`messages`), drives capabilities through
    :attr:`client`, records what it does with :meth:`record`, and sets :attr:`answer`.
    It may check :meth:`remaining` against the rollout's deadline and :attr:`max_steps`.
    After grading, :attr:`reward` is set; a run that failed has ``reward is None`` and
    :attr:`error` says in which phase, so an infrastructure failure never reads as a 0.
    """

    def __init__(
        self,
        task: Task,
        *,
        group_id: str | None = None,
        max_steps: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self.task = task
        self.group_id = group_id or new_id()
        self.max_steps = max_steps
        self.deadline = deadline
        self.trace = Trace(group_id=self.group_id, task=_task_info(task))
        self.job_id: str | None = None
        self.agent_name: str | None = None
        self.model: str | None = None
        self.answer: Any = None
        self.memory: dict[str, Any] = {}
        """The agent's own state (its conversation): a fork (:meth:`fork`) gets a copy."""
        self._client: Client | None = None
        self._started: StartResult | None = None

    def __repr__(self) -> str:
        return f"Run({self.task.slug!r}, status={self.status!r}, reward={self.reward!r})"

    # -- what the agent reads -------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The control session with this rollout's environment (for its capabilities)."""
        if self._client is None:
            raise RuntimeError("this run has no live environment (not started, or finished)")
        return self._client

    @property
    def prompt(self) -> str | list[Any]:
        return self._start.prompt

    @property
    def prompt_text(self) -> str:
        """The prompt as plain text (text blocks joined; images left out)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        return "\n".join(getattr(block, "text", "") for block in prompt if hasattr(block, "text"))

    @property
    def messages(self) -> list[Any] | None:
        messages = self._start.messages
        return None if not isinstance(messages, list) else messages

    @property
    def bindings(self) -> dict[str, dict[str, Any]]:
        return self._start.bindings

    @property
    def _start(self) -> StartResult:
        if self._started is None:
            raise RuntimeError("the task has not been started")
        return self._started

    def remaining(self) -> float | None:
        """Seconds left before the rollout's deadline (``None``: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def record(self, kind: str, duration: float | None = None, **data: Any) -> None:
        """Record a step of the agent's work in the trace (model turns, tool calls, ...)."""
        self.trace.record(kind, duration, **data)

    def record_model_call(self, **call: Any) -> None:
        """Record one model call (see :meth:`Trace.record_model_call`): its latency, reply,
        tool calls, stop reason, usage, and a summary of the request."""
        self.trace.record_model_call(**call)

    def set_tools(self, tools: list[Any]) -> None:
        """Record the tools the model is offered (names, descriptions, JSON Schemas)."""
        self.trace.set_tools(tools)

    def set_agent_settings(self, **settings: Any) -> None:
        """Record the harness's settings (sampling: temperature, max tokens, ...) in the
        trace, merged into what the engine recorded; secrets are redacted."""
        info = self.trace.agent or AgentInfo(name=self.agent_name, model=self.model)
        info.settings = {**info.settings, **redacted(settings)}
        self.trace.agent = info

    async def fork(self, count: int = 1) -> list[Run]:
        """Branch this run's episode ``count`` ways (``tasks.fork``): runs that go on from
        here, each in a copy of the environment as it is now, with a copy of this run's
        trace and :attr:`memory`; this run goes on unchanged. Finish each branch with
        ``await hud.eval.branching.finish_branch(branch)`` (grade, end its session)."""
        # lazy: branching builds Runs, so it imports this module
        from .branching import fork_run

        return await fork_run(self, count)

    # -- what the engine reads ------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self.trace.id

    @property
    def status(self) -> Status:
        return self.trace.status

    @property
    def reward(self) -> float | None:
        return self.trace.reward

    @property
    def error(self) -> Failure | None:
        return self.trace.error

    @property
    def attempt(self) -> int:
        """1, or more for a run that was retried or resumed (the trace keeps every attempt)."""
        return self.trace.attempt

    @property
    def errored(self) -> bool:
        return self.trace.status in ("error", "timeout", "cancelled")

    # -- transitions, driven by the rollout -----------------------------------------------

    def describe_agent(self, agent: Any) -> None:
        """Take the agent's name, model and settings (``config``, secrets redacted)."""
        self.agent_name = getattr(agent, "name", type(agent).__name__)
        self.model = getattr(agent, "model", None)
        config = getattr(agent, "config", None)
        self.trace.agent = AgentInfo(name=self.agent_name, model=self.model,
                                     settings=redacted(config) if isinstance(config, dict)
                                     else {})

    def enter_phase(self, phase: Phase) -> None:
        """The rollout moved to ``phase`` (its timing goes in the trace)."""
        self.trace.enter_phase(phase)

    def attach(self, client: Client | None) -> None:
        self._client = client

    def started_from(self, parent: Run, fork: Fork) -> None:
        """A branch of ``parent``: its prompt, under the branch's session and bindings."""
        self._started = msgspec.structs.replace(parent._start, session_id=fork.session_id,
                                                bindings=fork.bindings)

    def started(self, result: StartResult) -> None:
        self._started = result
        self.trace.prompt = result.prompt if isinstance(result.prompt, str) else [
            _jsonable(block) for block in result.prompt
        ]
        extra: dict[str, Any] = {}
        if isinstance(result.messages, list):
            extra["messages"] = [_jsonable(m) for m in result.messages]
        # Only the names of per-episode bindings: their parameters may carry credentials.
        self.trace.record("prompt", prompt=self.trace.prompt, bindings=sorted(result.bindings),
                          **extra)

    def graded(self, result: GradeResult) -> None:
        trace = self.trace
        trace.answer = _jsonable(self.answer)
        trace.reward = result.reward
        trace.subscores = [_jsonable(s) for s in result.subscores] if isinstance(
            result.subscores, list) else []
        trace.info = result.info if isinstance(result.info, dict) else {}
        trace.record("grade", reward=result.reward, subscores=trace.subscores, info=trace.info)
        self._finish("completed")

    def failed(self, status: Status, phase: Phase, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        self.trace.error = Failure(phase=phase, type=type(exc).__name__, message=message)
        self.trace.answer = _jsonable(self.answer)
        self.trace.record("error", phase=phase, type=type(exc).__name__, message=message)
        self._finish(status)

    def branched(self, branches: list[Run]) -> None:
        """End a prefix run that went on as ``branches`` (:func:`~hud.eval.branching.
        branch_rollout`): no reward of its own, and not an error; a ``branched`` step names
        them."""
        self.trace.record("branched", step=len(self.trace.steps),
                          branches=[branch.trace_id for branch in branches])
        self._finish("branched")

    def _finish(self, status: Status) -> None:
        self.trace.end_phase()
        self.trace.status = status
        self.trace.ended_at = time.time()
        # A harness may set run.model once it knows it (its default model, say).
        agent = self.trace.agent or AgentInfo()
        agent.name, agent.model = self.agent_name or agent.name, self.model
        self.trace.agent = agent


# api_key, token, auth_token, client_secret, ... but not max_tokens.
_SECRET = re.compile(r"(^|_)(api_?key|key|token|secret|password|authorization|auth|"
                     r"credentials?|headers)$", re.IGNORECASE)


def redacted(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON, with the values of names that look secret replaced."""
    return {name: "<redacted>" if _SECRET.search(name) else _jsonable(value)
            for name, value in settings.items()}


def _task_info(task: Task) -> TaskInfo:
    template = getattr(task, "template", None)
    env = getattr(template, "env", None)
    return TaskInfo(env=task.env, slug=task.slug, template=task.id, args=dict(task.args),
                    env_version=getattr(env, "version", None))


def _jsonable(value: Any) -> Any:
    import msgspec

    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return repr(value)
