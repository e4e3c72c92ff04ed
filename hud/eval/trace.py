"""What happened in one rollout, step by step: the record every run leaves behind.

A :class:`Trace` is plain data (msgspec Structs), so it serialises to JSON as it is, for the
trace store, for ``hud trace`` and for training exports.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

Status = Literal["pending", "completed", "error", "timeout", "cancelled"]
Phase = Literal["environment", "setup", "agent", "grade", "cleanup"]


def new_id() -> str:
    return uuid.uuid4().hex


class Step(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that happened: a prompt, a model turn, a tool call or result, a grade, ...

    ``data`` is JSON; binary payloads (screenshots) go in ``files``, which the trace store
    writes next to the trace and replaces by their paths.
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


class Trace(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str = msgspec.field(default_factory=new_id)
    status: Status = "pending"
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

    def record(self, kind: str, duration: float | None = None, **data: Any) -> Step:
        """Append a step; ``files=`` (name → bytes) may carry binary payloads."""
        files = data.pop("files", {})
        step = Step(index=len(self.steps), kind=kind, time=time.time(), duration=duration,
                    data=data, files=files)
        self.steps.append(step)
        return step

    def add_usage(self, **counts: int | float) -> None:
        """Add token counts (``input_tokens=``, ``output_tokens=``, ...) and dollars
        (``cost_usd=``) to the running totals."""
        for key, value in counts.items():
            self.usage[key] = self.usage.get(key, 0) + value
