"""Answer checks: pure functions from an answer (and what was expected) to a score in [0, 1].

Every function accepts any answer: ``None`` scores 0.0 and anything else is compared through
``str()``. They never raise on a bad answer, only on a bad specification (an empty list of
substrings, an unknown ``pick``, an ``expected`` that is not one number).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

__all__ = [
    "contains",
    "contains_all",
    "contains_any",
    "exact_match",
    "f1_score",
    "find_numbers",
    "normalize_text",
    "numeric_match",
]

Pick = Literal["first", "last", "only"]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = set(string.punctuation)

# A number as people write it in an answer. Not glued to a word or to another number
# ("v1.2" and "abc123" hold none), so the digits of identifiers are not taken for values.
_NUMBER = re.compile(
    r"""
    (?<![\w.])
    (?P<sign>[-+\u2212])?
    (?P<body>
        (?:\d{1,3}(?:,\d{3})+(?!\d) | \d+) (?:\.\d*)?   # 1,234.5   1234   42.
      | \.\d+                                           # .5
    )
    (?P<exp>[eE][-+]?\d+)?
    """,
    re.VERBOSE,
)


def _text(answer: Any) -> str | None:
    return None if answer is None else str(answer)


def _choices(expected: str | Iterable[str]) -> list[str]:
    items = [expected] if isinstance(expected, str) else [str(e) for e in expected]
    if not items:
        raise ValueError("expected at least one reference answer")
    return items


def normalize_text(text: str) -> str:
    """Lowercase, Unicode NFKC, punctuation → space, drop the articles a/an/the, collapse
    whitespace. ``"The  Answer: 42!"`` → ``"answer 42"``."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(
        " " if ch in _PUNCTUATION or unicodedata.category(ch).startswith("P") else ch
        for ch in text
    )
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(
    answer: Any, expected: str | Iterable[str], *, normalize: bool = True
) -> float:
    """1.0 when the answer equals ``expected`` (or any of several accepted answers).

    With ``normalize`` (the default) both sides go through :func:`normalize_text`; without
    it, only surrounding whitespace is ignored and the comparison is case-sensitive.
    """
    text = _text(answer)
    if text is None:
        return 0.0
    prepare = normalize_text if normalize else str.strip
    got = prepare(text)
    return 1.0 if any(got == prepare(e) for e in _choices(expected)) else 0.0


def contains(answer: Any, sub: str, *, case_sensitive: bool = False) -> float:
    """1.0 when ``sub`` occurs in the answer (case-insensitively unless asked)."""
    text = _text(answer)
    if text is None:
        return 0.0
    if not case_sensitive:
        text, sub = text.casefold(), sub.casefold()
    return 1.0 if sub in text else 0.0


def _subs(subs: Iterable[str]) -> list[str]:
    items = [subs] if isinstance(subs, str) else list(subs)
    if not items:
        raise ValueError("expected at least one substring")
    return items


def contains_any(answer: Any, subs: Iterable[str], *, case_sensitive: bool = False) -> float:
    """1.0 when at least one of ``subs`` occurs in the answer."""
    items = _subs(subs)
    return max(contains(answer, s, case_sensitive=case_sensitive) for s in items)


def contains_all(answer: Any, subs: Iterable[str], *, case_sensitive: bool = False) -> float:
    """1.0 when every one of ``subs`` occurs in the answer."""
    items = _subs(subs)
    return min(contains(answer, s, case_sensitive=case_sensitive) for s in items)


def find_numbers(text: str) -> list[float]:
    """Every number in ``text``, in order of appearance.

    Understood: integers, decimals (``3.14``, ``.5``, ``42.``), thousands separators
    (``1,234,567``: commas only between groups of three digits), exponents (``6.02e23``),
    signs (``-7``, ``+7``, and the Unicode minus U+2212). Not understood: fractions (``1/2``
    reads as 1 and 2), words (``seven``), and digits glued to letters (``v1.2``, ``x86``).
    """
    numbers = []
    for match in _NUMBER.finditer(text):
        body = match["body"].replace(",", "") + (match["exp"] or "")
        value = float(body)
        numbers.append(-value if match["sign"] in ("-", "\u2212") else value)
    return numbers


def _expected_number(expected: float | int | str) -> float:
    if isinstance(expected, bool):
        raise TypeError("expected a number, got a bool")
    if isinstance(expected, (int, float)):
        return float(expected)
    found = find_numbers(expected)
    if len(found) != 1:
        raise ValueError(f"expected must hold exactly one number, got {expected!r}")
    return found[0]


def numeric_match(
    answer: Any,
    expected: float | int | str,
    *,
    tolerance: float = 0.0,
    pick: Pick = "last",
) -> float:
    """1.0 when the number taken from the answer is within ``tolerance`` of ``expected``.

    Which number is taken when the answer holds several (see :func:`find_numbers`):

    * ``"last"`` (the default): the last one, since models tend to reason first and
      conclude last (``"step 1: ... so the answer is 42"`` → 42);
    * ``"first"``: the first one, for answers that lead with the result;
    * ``"only"``: the answer must hold exactly one number; several score 0.0.

    No number scores 0.0. ``tolerance`` is absolute; values also match when they agree to
    about nine significant digits, so ``1e20`` equals ``100,000,000,000,000,000,000``.
    """
    if pick not in ("first", "last", "only"):
        raise ValueError(f"pick must be 'first', 'last' or 'only', got {pick!r}")
    target = _expected_number(expected)
    text = _text(answer)
    numbers = find_numbers(text) if text is not None else []
    if not numbers or (pick == "only" and len(numbers) > 1):
        return 0.0
    value = numbers[0] if pick == "first" else numbers[-1]
    close = abs(value - target) <= tolerance or math.isclose(value, target, rel_tol=1e-9)
    return 1.0 if close else 0.0


def f1_score(answer: Any, reference: str | Iterable[str]) -> float:
    """Token-level F1 between the normalized answer and reference (SQuAD style); with several
    references, the best. An empty answer or reference scores 0.0."""
    text = _text(answer)
    if text is None:
        return 0.0
    tokens = normalize_text(text).split()
    return max(_f1(tokens, normalize_text(r).split()) for r in _choices(reference))


def _f1(tokens: list[str], reference: list[str]) -> float:
    common = sum((Counter(tokens) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(tokens), common / len(reference)
    return 2 * precision * recall / (precision + recall)
