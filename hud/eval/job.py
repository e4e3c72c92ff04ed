"""A job: every run of one evaluation, grouped by task; and GRPO group advantages."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from .run import Run
from .trace import new_id


class Job:
    """The runs of one ``Taskset.run`` call, in expansion order (task x group)."""

    def __init__(self, name: str = "job", *, group: int = 1, agent: str | None = None,
                 model: str | None = None, id: str | None = None) -> None:
        self.id = id or new_id()
        self.name = name
        self.group = group
        self.agent = agent
        self.model = model
        self.runs: list[Run] = []
        self.planned: int | None = None
        """How many rollouts the job will run, once known (a running job's progress)."""
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.plan: dict[str, Any] | None = None
        """What a resumed job runs again (JSON; the CLI's ``hud eval`` records its own)."""

    def __repr__(self) -> str:
        return f"Job({self.name!r}, runs={len(self.runs)}, reward={self.reward})"

    @property
    def results(self) -> dict[str, list[Run]]:
        """Each task's slug → its runs (a group of ``group`` runs sharing a group id)."""
        grouped: dict[str, list[Run]] = {}
        for run in self.runs:
            grouped.setdefault(run.task.slug, []).append(run)
        return grouped

    @property
    def errors(self) -> list[Run]:
        """Runs that did not complete (error, timeout, cancelled): they carry no reward."""
        return [run for run in self.runs if run.errored]

    @property
    def reward(self) -> float | None:
        """Mean reward over the runs that completed; ``None`` when none did."""
        rewards = [run.reward for run in self.runs if run.reward is not None]
        return statistics.fmean(rewards) if rewards else None

    def summary(self) -> list[dict[str, Any]]:
        """One row per task: runs, mean and spread of rewards over completed runs, errors."""
        rows = []
        for slug, runs in self.results.items():
            rewards = [r.reward for r in runs if r.reward is not None]
            rows.append({
                "slug": slug,
                "template": runs[0].task.id,
                "runs": len(runs),
                "mean": statistics.fmean(rewards) if rewards else None,
                "std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0 if rewards
                else None,
                "errors": sum(1 for r in runs if r.errored),
            })
        return rows


def group_relative(
    rewards: Sequence[float], *, normalize_std: bool = True, eps: float = 1e-6
) -> list[float]:
    """GRPO advantages of one group: each reward minus the group mean, divided by the group's
    (population) standard deviation when ``normalize_std`` and it exceeds ``eps``.

    Rewards of runs that errored are not rewards: leave those runs out (a ``None`` is an error).
    """
    values = list(rewards)
    if any(r is None or not math.isfinite(r) for r in values):
        raise ValueError("group_relative needs finite rewards; leave out runs that errored")
    if not values:
        return []
    mean = statistics.fmean(values)
    advantages = [r - mean for r in values]
    if normalize_std:
        std = statistics.pstdev(values)
        if std > eps:
            advantages = [a / std for a in advantages]
    return advantages
