"""``LLMJudgeGrader``: an answer checked against rubric criteria by a model.

Any OpenAI-compatible Chat Completions server can judge (``base_url``); the ``openai`` SDK
speaks to it. One request per criterion and per sample, concurrently (at most
``max_concurrency`` at a time); each reply is a JSON verdict ``{"met": bool,
"explanation": str}``, parsed tolerantly (:func:`parse_verdict`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import GraderError
from .grade import Grade, Grader, make_score, run_concurrently

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["Criterion", "LLMJudgeGrader", "parse_verdict"]

DEFAULT_MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You grade an answer against one criterion. Decide whether the answer meets the "
    "criterion; judge only that criterion. Reply with a JSON object and nothing else: "
    '{"met": true or false, "explanation": "one short sentence"}'
)
_RETRY_STATUS = frozenset({408, 409, 429})
_TRUE = frozenset({"true", "yes", "met", "pass", "passed", "1"})
_FALSE = frozenset({"false", "no", "unmet", "not met", "not_met", "fail", "failed", "0"})
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Criterion:
    """A rubric line. A negative ``weight`` marks a fault: "met" means the fault is present."""

    text: str
    weight: float = 1.0


def _criteria(items: Iterable[str | tuple[str, float] | Criterion]) -> list[Criterion]:
    out = []
    for item in items:
        if isinstance(item, Criterion):
            out.append(item)
        elif isinstance(item, str):
            out.append(Criterion(item))
        else:
            text, weight = item
            out.append(Criterion(str(text), float(weight)))
    if not out:
        raise ValueError("LLMJudgeGrader needs at least one criterion")
    return out


def parse_verdict(text: str) -> tuple[bool, str] | None:
    """``(met, explanation)`` from a judge's reply, or None when it holds no verdict.

    Tried in order: the reply as JSON; each ``{...}`` in it (code fences and chatter around
    the object are fine); the reply's first word (``yes``/``no``/``met``/``unmet``...). In an
    object, ``met`` may be a bool or a word like ``"yes"``; the reference's
    ``{"criterion_status": "MET"|"UNMET"}`` is understood too.
    """
    start, end = text.find("{"), text.rfind("}")
    candidates = [text, text[start : end + 1], *_OBJECT.findall(text)]
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        verdict = _verdict_of(data)
        if verdict is not None:
            return verdict
    words = re.findall(r"[a-z_]+|\d", text.lower())
    first = " ".join(words[:2]) if words[:2] == ["not", "met"] else (words[0] if words else "")
    met = _truth(first)
    return None if met is None else (met, text.strip())


def _verdict_of(data: Any) -> tuple[bool, str] | None:
    if not isinstance(data, dict):
        return None
    for key in ("met", "criterion_status", "verdict", "passed"):
        if key in data:
            met = _truth(data[key])
            if met is not None:
                return met, str(data.get("explanation", ""))
    return None


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _retry_delay(exc: Exception, attempt: int, backoff: float) -> float | None:
    """Seconds to wait before retrying after ``exc``; None when it is not worth a retry."""
    import openai

    wait = min(backoff * 2.0**attempt, 30.0)
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return wait
    if not isinstance(exc, openai.APIStatusError):
        return None
    if exc.status_code not in _RETRY_STATUS and exc.status_code < 500:
        return None
    try:
        return min(float(exc.response.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return wait


@dataclass(slots=True)
class _Judge:
    """One grading call: its client and settings."""

    client: AsyncOpenAI
    model: str
    temperature: float
    retries: int
    backoff: float
    limit: asyncio.Semaphore

    async def ask(self, messages: list[dict[str, str]]) -> tuple[bool, str]:
        """One verdict, retrying rate limits, server errors, lost connections and replies
        without a verdict, up to ``retries`` times; then :class:`GraderError`."""
        import openai

        problem = ""
        for attempt in range(self.retries + 1):
            try:
                async with self.limit:
                    reply = await self.client.chat.completions.create(
                        model=self.model, messages=messages,  # type: ignore[arg-type]
                        temperature=self.temperature,
                    )
            except openai.OpenAIError as exc:
                delay = _retry_delay(exc, attempt, self.backoff)
                if delay is None:
                    raise GraderError(f"the judge {self.model!r} failed: {exc}") from None
                problem = f"{type(exc).__name__}: {exc}"
            else:
                text = (reply.choices[0].message.content or "") if reply.choices else ""
                verdict = parse_verdict(text)
                if verdict is not None:
                    return verdict
                problem, delay = f"no verdict in the reply {text[:200]!r}", 0.0
            if attempt < self.retries:
                await asyncio.sleep(delay)
        raise GraderError(
            f"the judge {self.model!r} gave no verdict after {self.retries + 1} tries: {problem}"
        )

    async def decide(self, criterion: Criterion, prompt: str, samples: int) -> dict[str, Any]:
        """Majority vote over ``samples`` verdicts. A tie goes against the answer: a
        criterion counts as unmet, a fault as present."""
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{prompt}\n\nCriterion:\n{criterion.text}"},
        ]
        verdicts = await run_concurrently(self.ask(messages) for _ in range(samples))
        votes = [met for met, _ in verdicts]
        yes = sum(votes)
        met = yes * 2 > samples or (yes * 2 == samples and criterion.weight < 0)
        explanation = next((why for vote, why in verdicts if vote == met), "")
        return {"criterion": criterion.text, "weight": criterion.weight, "met": met,
                "votes": votes, "explanation": explanation}


class LLMJudgeGrader(Grader):
    """Scores an answer against rubric ``criteria`` with a model as judge.

    ``LLMJudgeGrader.grade(answer=..., criteria=["cites a source", ("is rude", -0.5)],
    question="", model="gpt-4o-mini", base_url=None, api_key=None, temperature=0.0,
    samples=1, retries=3)``. A criterion is a string (weight 1) or ``(text, weight)``; a
    negative weight marks a fault, a penalty when present. Criteria combine like
    :meth:`Grade.combine`: the weighted share of positive criteria met, minus the penalties
    of faults present, clamped to [0, 1]. ``samples`` > 1 asks again and takes the majority
    (use an odd number, and ``temperature`` > 0 for the samples to differ).

    ``base_url`` selects any OpenAI-compatible server (default: ``OPENAI_BASE_URL``, else
    OpenAI); the key is ``api_key``, else ``OPENAI_API_KEY``, else ``"unused"`` (local
    servers ignore it); ``model`` defaults to ``HUD_JUDGE_MODEL``, else ``gpt-4o-mini``.
    Rate limits (429), server errors (5xx), timeouts and lost connections are retried with
    exponential backoff from ``backoff`` seconds (or the server's ``Retry-After``); other
    errors, and a judge still failing after ``retries``, raise :class:`GraderError`.
    Info: ``model`` and, per criterion, ``criterion``, ``weight``, ``met``, ``votes``,
    ``explanation``.
    """

    default_name: ClassVar[str] = "judge"

    @classmethod
    async def compute(  # type: ignore[override]
        cls,
        *,
        answer: Any,
        criteria: Sequence[str | tuple[str, float] | Criterion],
        question: str = "",
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        samples: int = 1,
        retries: int = 3,
        timeout: float = 60.0,
        backoff: float = 1.0,
        max_concurrency: int = 8,
    ) -> tuple[float, dict[str, Any]]:
        from openai import AsyncOpenAI

        rubric = _criteria(criteria)
        if samples < 1 or retries < 0:
            raise ValueError("samples must be at least 1 and retries at least 0")
        model = model or os.environ.get("HUD_JUDGE_MODEL") or DEFAULT_MODEL
        key = api_key or os.environ.get("OPENAI_API_KEY") or "unused"
        prompt = _prompt(question, answer)
        async with AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout
        ) as client:
            judge = _Judge(client, model, temperature, retries, backoff,
                           asyncio.Semaphore(max_concurrency))
            results = await run_concurrently(judge.decide(c, prompt, samples) for c in rubric)
        scores = [
            make_score(1.0 if r["met"] else 0.0, name=f"criterion-{i}", weight=r["weight"])
            for i, r in enumerate(results, 1)
        ]
        return Grade.combine(scores).reward, {"model": model, "criteria": results}


def _prompt(question: str, answer: Any) -> str:
    shown = "" if answer is None else str(answer)
    return f"Question:\n{question or '(not given)'}\n\nAnswer:\n{shown}"
