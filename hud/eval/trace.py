"""What happened in one rollout, step by step: the record every run leaves behind.

A :class:`Trace` is plain data (msgspec Structs), so it serialises to JSON as it is, for the
trace store, for ``hud trace`` and for training exports. Besides its steps it holds what a
reader needs to understand them: the task, the agent and its settings, the tools offered,
the timing of each phase, the grade and the error with its phase.

Step kinds the engine and the harnesses record (``data`` keys):

``prompt``       ``{"prompt", "bindings", "messages"?}`` — the task's opening (the engine).
``message``      ``{"role", "content"}`` — another turn (a harness's system prompt).
``model``        one model call (:meth:`Trace.record_model_call`): ``content``,
                 ``tool_calls``, ``stop_reason``, ``usage``, ``request`` (a summary of what was
                 sent), ``response`` (the provider's reply); the step's ``duration`` is its
                 latency.
``tool_result``  ``{"tool_call_id", "name", "content", "is_error"}`` — in full.
``stop``         ``{"reason", "steps"}`` — why the agent loop ended.
``grade`` / ``error`` — the outcome (the engine).

Usage is one normalised record per model call and summed over the run (:data:`USAGE_KEYS`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

Status = Literal["pending", "completed", "error", "timeout", "cancelled", "branched"]
"""``branched``: a prefix that went on as its branches (``tasks.fork``); no reward of its own,
and no error either."""
Phase = Literal["environment", "setup", "agent", "grade", "cleanup"]

TRACE_VERSION = 2
"""The layout of a stored trace document (``version``); documents without one are v1."""

USAGE_KEYS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens",
              "output_tokens", "reasoning_tokens", "cost_usd")
"""The normalised usage record: tokens in (all of them, cached included), of which read from
and written to the provider's cache, out, of which reasoning, and the cost in US dollars.
Harnesses may add other keys; they are summed the same way."""


def new_id() -> str:
    return uuid.uuid4().hex


class Step(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that happened: a prompt, a model turn, a tool call or result, a grade, ...

    ``data`` is JSON; binary payloads (screenshots) go in ``files``, which the trace store
    writes next to the trace and replaces by their paths. Image blocks inside ``data``
    (``{"type": "image", "data": <base64>}``) are stored as files too.
    """

    index: int
    kind: str
    time: float
    duration: float | None = None
    data: dict[str, Any] = {}
    files: dict[str, bytes] = {}


class Failure(msgspec.Struct, kw_only=True):
    """Why a rollout did not complete: the phase it failed in, and the error."""

    phase: Phase
    type: str
    message: str


class TaskInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The task a run played: its environment (name and version), template, args and slug."""

    env: str
    slug: str
    template: str
    args: dict[str, Any] = {}
    env_version: str | None = None


class AgentInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The harness, its model, and its settings (sampling and the rest; secrets redacted)."""

    name: str | None = None
    model: str | None = None
    settings: dict[str, Any] = {}


class PhaseTiming(msgspec.Struct, kw_only=True, omit_defaults=True):
    """When one phase of the rollout began and ended (wall clock, seconds since the epoch)."""

    phase: Phase
    started_at: float
    ended_at: float | None = None


class Trace(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str = msgspec.field(default_factory=new_id)
    version: int = TRACE_VERSION
    status: Status = "pending"
    job_id: str | None = None
    group_id: str | None = None
    task: TaskInfo | None = None
    agent: AgentInfo | None = None
    tools: list[dict[str, Any]] = []
    phases: list[PhaseTiming] = []
    steps: list[Step] = []
    prompt: Any = None
    answer: Any = None
    reward: float | None = None
    subscores: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    error: Failure | None = None
    usage: dict[str, int | float] = {}  # token totals, and cost_usd when priced
    started_at: float = msgspec.field(default_factory=time.time)
    ended_at: float | None = None
    attempt: int = 1
    """Which attempt this is: a retried or resumed run continues its trace (its earlier
    attempts' steps stay, each followed by a ``retry`` or ``resume`` step)."""
    parent_id: str | None = None
    """The run this one branched from (``tasks.fork``), whose first steps it shares."""
    branch_step: int | None = None
    """How many of the parent's steps this run shares (it went on from there)."""

    def record(self, kind: str, duration: float | None = None, **data: Any) -> Step:
        """Append a step; ``files=`` (name → bytes) may carry binary payloads."""
        files = data.pop("files", {})
        step = Step(index=len(self.steps), kind=kind, time=time.time(), duration=duration,
                    data=data, files=files)
        self.steps.append(step)
        return step

    def record_model_call(self, *, latency: float | None = None,
                          content: str | None = None,
                          tool_calls: list[dict[str, Any]] | None = None,
                          stop_reason: str | None = None,
                          usage: dict[str, float] | None = None,
                          request: dict[str, Any] | None = None,
                          response: Any = None, **extra: Any) -> Step:
        """Record one model call as a ``model`` step and add its ``usage`` to the run's.

        ``request`` summarises what was sent (model, sampling settings, message count: not
        the whole conversation again); ``response`` is the provider's reply as JSON."""
        data: dict[str, Any] = {"content": content, "tool_calls": tool_calls or []}
        for key, value in (("stop_reason", stop_reason), ("usage", usage),
                           ("request", request), ("response", response)):
            if value is not None:
                data[key] = value
        if usage:
            self.add_usage(**usage)
        return self.record("model", latency, **data, **extra)

    def add_usage(self, **counts: float) -> None:
        """Add a model call's usage (``input_tokens=``, ``cost_usd=``, ...: :data:`USAGE_KEYS`)
        to the running total; token counts stay integers, a cost is a float."""
        for key, value in counts.items():
            if value is None:
                continue
            number = value if isinstance(value, float) else int(value)
            self.usage[key] = self.usage.get(key, 0) + number

    def set_tools(self, tools: list[Any]) -> None:
        """The tools the model is offered: each ``{"name", "description", "parameters"}``
        (a dict, or an object with those attributes, such as a harness's ``ToolSpec``)."""
        self.tools = [_tool(tool) for tool in tools]

    def enter_phase(self, phase: Phase) -> None:
        """Close the phase in progress (if any) and open ``phase``, both now."""
        now = time.time()
        self.end_phase(now)
        self.phases.append(PhaseTiming(phase=phase, started_at=now))

    def end_phase(self, now: float | None = None) -> None:
        """Close the phase in progress, if one is open."""
        if self.phases and self.phases[-1].ended_at is None:
            self.phases[-1].ended_at = time.time() if now is None else now


def _tool(tool: Any) -> dict[str, Any]:
    if isinstance(tool, dict):
        return dict(tool)
    return {"name": getattr(tool, "name", str(tool)),
            "description": getattr(tool, "description", ""),
            "parameters": getattr(tool, "parameters", {})}
