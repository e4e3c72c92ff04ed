"""Scores, the :class:`Grader` base, and :class:`Grade`, which combines weighted scores.

A :class:`Score` is a wire :class:`~hud.protocol.messages.Subscore` (``name``, ``score``,
``weight``) plus a local ``info`` dict. A :class:`Grade` is what a template yields as its
reward: ``reward``, ``subscores`` and ``info``, the fields the task runner reads.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable
from typing import Any, ClassVar, TypeVar

import msgspec

from ..errors import GraderError
from ..protocol.messages import Subscore

__all__ = ["Grade", "Grader", "GraderError", "Score", "make_score", "run_concurrently"]

T = TypeVar("T")


class Score(Subscore, kw_only=True):
    """One grader's result: ``score`` in [0, 1], its ``weight`` in the grade, and ``info``.

    ``info`` stays local to the environment except as collected into :attr:`Grade.info`; the
    wire carries ``name``, ``score`` and ``weight``. A Score can be yielded as a reward on its
    own (``reward`` is its ``score``).
    """

    info: dict[str, Any] = {}

    @property
    def reward(self) -> float:
        return self.score


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def make_score(
    value: float, *, name: str, weight: float = 1.0, info: dict[str, Any] | None = None
) -> Score:
    """A checked :class:`Score`: ``value`` must be a finite number in [0, 1], ``weight``
    finite (negative for a penalty, 0 to report without counting)."""
    score = _finite(value, f"score of {name!r}")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score of {name!r} must be in [0, 1], got {score!r}")
    return Score(
        name=name, score=score, weight=_finite(weight, f"weight of {name!r}"), info=info or {}
    )


class Grader:
    """Base of the graders. A subclass implements :meth:`compute`; users call :meth:`grade`.

    >>> class Always(Grader):
    ...     default_name = "always"
    ...     @classmethod
    ...     async def compute(cls, *, value: float) -> float:
    ...         return value
    >>> # await Always.grade(value=1.0, weight=0.5) → Score(name="always", score=1.0, ...)
    """

    default_name: ClassVar[str] = "grader"

    @classmethod
    async def compute(cls, **kwargs: Any) -> float | tuple[float, dict[str, Any]] | Score:
        """Return a score in [0, 1], a ``(score, info)`` pair, or a :class:`Score`."""
        raise NotImplementedError

    @classmethod
    async def grade(cls, weight: float = 1.0, *, name: str | None = None, **kwargs: Any) -> Score:
        """Run :meth:`compute` with ``kwargs`` and return its :class:`Score`, named ``name``
        (default: the class's ``default_name``) and weighted ``weight`` (default 1.0)."""
        result = await cls.compute(**kwargs)
        label = name or cls.default_name
        if isinstance(result, Score):
            return make_score(result.score, name=label, weight=weight, info=result.info)
        if isinstance(result, tuple):
            value, info = result
            return make_score(value, name=label, weight=weight, info=info)
        return make_score(result, name=label, weight=weight)


class Grade(msgspec.Struct, kw_only=True):
    """A reward with named subscores; yield it from a template as is.

    Combining (:meth:`combine`, :meth:`gather`): positive weights are normalized to sum to 1
    and give a weighted mean; a negative weight is a penalty, ``weight * score`` subtracted
    as given (not normalized); weight 0 reports a score without counting it. With no positive
    weight the base is 1.0, so penalties alone count down from full marks. The reward is
    clamped to [0, 1]. Subscores carry the normalized weights, so with any positive weight
    ``reward == clamp(sum(s.score * s.weight for s in subscores))``. Duplicate names become
    ``name``, ``name-2``, ``name-3``...; ``info["subscores"]`` maps each name to its info.
    """

    reward: float
    subscores: list[Score] = []
    info: dict[str, Any] = {}

    @classmethod
    def combine(cls, scores: Iterable[Score]) -> Grade:
        """Combine finished scores (see the class docstring). At least one is needed."""
        items = _deduplicated([_checked(s) for s in scores])
        if not items:
            raise ValueError("a grade needs at least one score")
        positive = sum(s.weight for s in items if s.weight > 0)
        items = [_normalized(s, positive) for s in items]
        total = sum(s.score * s.weight for s in items) + (0.0 if positive else 1.0)
        total = round(total, 12)  # 0.7 + 0.3 - 0.5 is 0.5, not 0.49999999999999994
        details = {s.name: s.info for s in items if s.info}
        info: dict[str, Any] = {"subscores": details} if details else {}
        return cls(reward=min(1.0, max(0.0, total)), subscores=items, info=info)

    @classmethod
    async def gather(cls, *items: Score | Awaitable[Score]) -> Grade:
        """Await the graders concurrently, then :meth:`combine` their scores in the order
        given. If a grader raises, the others are cancelled and its exception propagates."""
        return cls.combine(await run_concurrently(_resolved(item) for item in items))


async def run_concurrently(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all at once and return their results in order. On the first failure the rest
    are cancelled (and awaited) and that failure is raised as itself.

    Not a TaskGroup: one raises the failure wrapped in an ``ExceptionGroup``, and on Python
    3.11 and 3.12 leaves the awaiting task's ``cancelling()`` count raised when a child fails
    (the template-step runner no longer takes that for the caller's cancellation: see
    :func:`hud.steps.cancel_caller`)."""
    tasks = [asyncio.ensure_future(_awaited(a)) for a in awaitables]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # those still running: one failed, or we were cancelled
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable



async def _resolved(item: Score | Awaitable[Score]) -> Score:
    if isinstance(item, Score):
        return item
    if not isinstance(item, Awaitable):
        raise TypeError(f"expected a grader's Score or awaitable, got {type(item).__name__}")
    return await item


def _checked(score: Score) -> Score:
    if not isinstance(score, Score):
        raise TypeError(f"expected a grader's Score, got {type(score).__name__}")
    return make_score(score.score, name=score.name, weight=score.weight, info=score.info)


def _deduplicated(scores: list[Score]) -> list[Score]:
    seen: set[str] = set()
    out = []
    for score in scores:
        name, n = score.name, 1
        while name in seen:
            n += 1
            name = f"{score.name}-{n}"
        seen.add(name)
        out.append(score if name == score.name else msgspec.structs.replace(score, name=name))
    return out


def _normalized(score: Score, positive: float) -> Score:
    if score.weight <= 0 or positive == 0:
        return score
    return msgspec.structs.replace(score, weight=score.weight / positive)
