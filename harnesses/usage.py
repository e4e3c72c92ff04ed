"""One usage record per model call, the same for every provider, and what it cost.

A record counts tokens under these keys (absent when zero, except the first and fourth):

``input_tokens``
    every prompt token, whether the provider's cache served it or not;
``cached_input_tokens``
    of those, read from the prompt cache;
``cache_write_input_tokens``
    of those, written to the prompt cache (Anthropic bills these apart);
``output_tokens``
    every generated token, reasoning included;
``reasoning_tokens``
    of those, spent on reasoning (where the provider says).

The providers count differently, so each has its reader: Anthropic's ``input_tokens``
leaves out the cached ones (:func:`from_anthropic` adds them back); OpenAI's counts include
cached input and reasoning already; Gemini's ``candidatesTokenCount`` leaves out the
thoughts and its prompt count leaves out the tool-use prompt (:func:`from_gemini` adds both).

:class:`Prices` turns a record into US dollars from the table shipped as ``prices.json``,
overridden by ``$HUD_PRICES`` (a JSON file of the same shape) and by the harness's
``--config prices=`` (a path, or an object of rows).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TABLE = Path(__file__).with_name("prices.json")
KEYS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
        "reasoning_tokens")


def record(input: int, output: int, *, cached: int = 0, cache_write: int = 0,
           reasoning: int = 0) -> dict[str, int]:
    """A usage record (see the module doc) from its five counts."""
    counts = dict(zip(KEYS, (input, cached, cache_write, output, reasoning), strict=True))
    return {k: int(v) for k, v in counts.items() if v or k in ("input_tokens", "output_tokens")}


def from_anthropic(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Messages ``usage``: ``input_tokens`` excludes cache reads and writes."""
    usage = usage or {}
    read, write = _int(usage, "cache_read_input_tokens"), _int(usage, "cache_creation_input_tokens")
    details = usage.get("output_tokens_details") or {}
    return record(_int(usage, "input_tokens") + read + write, _int(usage, "output_tokens"),
                  cached=read, cache_write=write, reasoning=_int(details, "reasoning_tokens"))


def from_openai_responses(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Responses ``usage``: input includes cached tokens, output includes reasoning."""
    usage = usage or {}
    return record(_int(usage, "input_tokens"), _int(usage, "output_tokens"),
                  cached=_int(usage.get("input_tokens_details") or {}, "cached_tokens"),
                  reasoning=_int(usage.get("output_tokens_details") or {}, "reasoning_tokens"))


def from_chat_completions(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Chat Completions ``usage`` (as Responses, under other names); ``{}`` when absent."""
    if not usage:
        return {}
    return record(_int(usage, "prompt_tokens"), _int(usage, "completion_tokens"),
                  cached=_int(usage.get("prompt_tokens_details") or {}, "cached_tokens"),
                  reasoning=_int(usage.get("completion_tokens_details") or {},
                                 "reasoning_tokens"))


def from_gemini(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Gemini ``usage_metadata`` (snake_case, as the SDK dumps it): the tool-use prompt is
    counted apart from the prompt, and the thoughts apart from the candidates."""
    usage = usage or {}
    thoughts = _int(usage, "thoughts_token_count")
    return record(_int(usage, "prompt_token_count") + _int(usage, "tool_use_prompt_token_count"),
                  _int(usage, "candidates_token_count") + thoughts,
                  cached=_int(usage, "cached_content_token_count"), reasoning=thoughts)


def _int(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


class Prices:
    """Rows of USD per million tokens by model-id prefix (see ``prices.json``)."""

    def __init__(self, rows: Mapping[str, Mapping[str, float]]) -> None:
        self.rows = dict(rows)
        self._warned: set[str] = set()

    @classmethod
    def load(cls, override: str | Mapping[str, Any] | None = None,
             environ: Mapping[str, str] = os.environ) -> Prices:
        """The shipped table, then ``$HUD_PRICES``, then ``override`` (later rows win)."""
        rows = dict(_shipped())
        for source in (environ.get("HUD_PRICES"), override):
            rows.update(_rows(source))
        return cls(rows)

    def row(self, model: str) -> Mapping[str, float] | None:
        """The row of the longest key that prefixes ``model``; ``None`` (warned once per
        model) when none does."""
        key = max((k for k in self.rows if model.startswith(k)), key=len, default=None)
        if key is None and model not in self._warned:
            self._warned.add(model)
            log.warning("no price for model %r in %s or $HUD_PRICES: its cost is not counted",
                        model, TABLE)
        return self.rows.get(key) if key else None

    def cost(self, model: str, usage: Mapping[str, int]) -> float | None:
        """US dollars for one call's usage record; ``None`` when the model has no price."""
        row = self.row(model)
        if row is None:
            return None
        read, write = usage.get("cached_input_tokens", 0), usage.get("cache_write_input_tokens", 0)
        fresh = usage.get("input_tokens", 0) - read - write
        dollars = (fresh * row["input"] + read * row.get("cached_input", row["input"])
                   + write * row.get("cache_write", row["input"])
                   + usage.get("output_tokens", 0) * row["output"])
        return dollars / 1e6


@cache
def default_prices() -> Prices:
    """The table as :meth:`Prices.load` gives it without an override, loaded once."""
    return Prices.load()


@cache
def _shipped() -> dict[str, Any]:
    return dict(json.loads(TABLE.read_text())["models"])


def _rows(source: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The rows of a price table given as JSON text, a path to a JSON file, or a mapping
    (``{"models": {...}}`` or the rows alone); a ``ValueError`` saying which could not be read."""
    if not source:
        return {}
    if isinstance(source, str):
        try:
            text = source if source.lstrip().startswith("{") else \
                Path(source).expanduser().read_text()
            source = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the price table {source!r} ($HUD_PRICES or "
                             f"--config prices=): {exc}") from None
    if not isinstance(source, Mapping):
        raise ValueError("a price table is a JSON object of model -> {input, output, ...}")
    return dict(source.get("models", source))
