"""One usage record per model call, the same for every provider (``hud.harnesses.usage``),
and its cost from the shipped price table and its overrides."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hud.harnesses.usage import (
    Prices,
    from_anthropic,
    from_chat_completions,
    from_gemini,
    from_openai_responses,
)

# The same call as each provider reports it: 1000 prompt tokens of which 600 read from the
# cache and 100 written to it (Anthropic only), 50 generated of which 20 reasoning.


def test_claude_input_excludes_its_cache_reads_and_writes() -> None:
    assert from_anthropic({"input_tokens": 300, "output_tokens": 50,
                           "cache_read_input_tokens": 600,
                           "cache_creation_input_tokens": 100,
                           "output_tokens_details": {"reasoning_tokens": 20}}) == {
        "input_tokens": 1000, "cached_input_tokens": 600, "cache_write_input_tokens": 100,
        "output_tokens": 50, "reasoning_tokens": 20}


def test_openai_input_includes_cache_reads_and_output_includes_reasoning() -> None:
    expected = {"input_tokens": 1000, "cached_input_tokens": 600, "output_tokens": 50,
                "reasoning_tokens": 20}
    assert from_openai_responses({
        "input_tokens": 1000, "output_tokens": 50, "total_tokens": 1050,
        "input_tokens_details": {"cached_tokens": 600},
        "output_tokens_details": {"reasoning_tokens": 20}}) == expected
    assert from_chat_completions({
        "prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 20}}) == expected
    assert from_chat_completions(None) == {}


def test_gemini_counts_thoughts_and_the_tool_use_prompt() -> None:
    assert from_gemini({"prompt_token_count": 900, "tool_use_prompt_token_count": 100,
                        "cached_content_token_count": 600, "candidates_token_count": 30,
                        "thoughts_token_count": 20, "total_token_count": 1050}) == {
        "input_tokens": 1000, "cached_input_tokens": 600, "output_tokens": 50,
        "reasoning_tokens": 20}


def test_cost_prices_each_kind_of_token() -> None:
    usage = from_anthropic({"input_tokens": 300, "output_tokens": 50,
                            "cache_read_input_tokens": 600, "cache_creation_input_tokens": 100})
    # Claude Opus 5.5: $4 in, $0.20 cache read, $5 cache write, $20 out per million tokens.
    assert Prices.load(environ={}).cost("claude-opus-5-5-20261001", usage) == pytest.approx(
        (300 * 4 + 600 * 0.20 + 100 * 5 + 50 * 20) / 1e6)


def test_prices_are_overridden_by_a_user_file_and_by_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    mine = tmp_path / "prices.json"
    mine.write_text(json.dumps({"models": {"my-model": {"input": 1.0, "output": 2.0}}}))
    assert Prices.load(environ={"HUD_PRICES": str(mine)}).cost("my-model-v2", usage) == 1.0
    config = '{"my-model": {"input": 3.0, "output": 2.0}}'
    assert Prices.load(config, environ={"HUD_PRICES": str(mine)}).cost("my-model", usage) == 3.0
    assert Prices.load(str(mine), environ={}).cost("claude-opus-5-5", usage) == 4.0  # kept
    with caplog.at_level(logging.WARNING):
        prices = Prices.load(environ={})
        assert prices.cost("nobody-knows", usage) is None
        assert prices.cost("nobody-knows", usage) is None
    assert caplog.text.count("no price for model 'nobody-knows'") == 1


def test_an_unreadable_price_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the price table .*missing\.json"):
        Prices.load(environ={"HUD_PRICES": str(tmp_path / "missing.json")})
    with pytest.raises(ValueError, match="cannot read the price table"):
        Prices.load("{not json", environ={})
