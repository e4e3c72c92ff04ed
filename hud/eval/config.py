"""The eval config: how a taskset runs. Every default of ``hud eval`` and of
:meth:`~hud.eval.Taskset.run` is here, and only here.

Cheap to import (the CLI reads its option defaults from it when it starts): it imports no
part of the engine until a runtime is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtimes import Runtime

WIDTH_CAP = 32
"""Rollouts at once when ``max_concurrent`` is not given: one per rollout, at most this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalConfig:
    """How to run a taskset: built once (by the CLI from its options, or by a caller) and
    passed to :meth:`~hud.eval.Taskset.run`. Raises ``ValueError`` for a setting out of range."""

    group: int = 1
    """Runs per task, sharing a group id (for group-relative advantages)."""
    max_concurrent: int | None = None
    """Rollouts at once; ``None``: see :meth:`width`."""
    max_steps: int | None = None
    """Agent steps per rollout (``None``: the harness decides)."""
    timeout: float | None = None
    """Seconds per rollout, all phases (``None``: no deadline)."""
    runtime: str = "pool"
    """The runtime's spec: ``pool``, ``inprocess``, ``subprocess``, ``ws://HOST:PORT``, or any
    registered runtime (see :mod:`hud.runtimes`)."""
    token: str | None = None
    """Access token for a runtime that attaches to a served environment."""
    retry_errors: int = 0
    """Further attempts for a rollout that failed for infrastructure reasons (see
    :data:`hud.eval.rollout.RETRIED`); the run's trace keeps every attempt."""
    warm: int = 0
    """Environments the runtime keeps started ahead of demand (``container:IMAGE``)."""
    max_starting: int = 4
    """Environments starting at once, at most (``container:IMAGE``)."""

    def __post_init__(self) -> None:
        if self.warm < 0:
            raise ValueError(f"warm must be at least 0, not {self.warm}")
        for name in ("group", "max_concurrent", "max_steps", "max_starting"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.retry_errors < 0:
            raise ValueError(f"retry_errors must be 0 or more, not {self.retry_errors}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout}")

    @classmethod
    def from_options(cls, **options: Any) -> EvalConfig:
        """From command-line options, where ``None`` means "not given": the default applies."""
        return cls(**{name: value for name, value in options.items() if value is not None})

    def width(self, rollouts: int) -> int:
        """Rollouts at once: ``max_concurrent``, else one per rollout, at most ``WIDTH_CAP``."""
        return self.max_concurrent or max(1, min(rollouts, WIDTH_CAP))

    def create_runtime(self, agent: Any, rollouts: int) -> Runtime:
        """The runtime :attr:`runtime` names, serving solutions when ``agent`` needs them and
        sized for :meth:`width`. Raises as :func:`hud.runtimes.create_runtime` does."""
        # Lazy: the runtimes import the client; this module must stay cheap for the CLI.
        from ..runtimes import RuntimeOptions, create_runtime

        options = RuntimeOptions(solutions=needs_solutions(agent), token=self.token,
                                 concurrency=self.width(rollouts), warm=self.warm,
                                 max_starting=self.max_starting)
        return create_runtime(self.runtime, options)


def needs_solutions(agent: Any) -> bool:
    """Whether ``agent`` reads reference solutions (the oracle), so its runtime must serve them."""
    return bool(getattr(agent, "needs_solutions", False))


DEFAULT = EvalConfig()
"""Every default, for callers that show them (the CLI's ``--help``)."""
