"""The strict fake Messages API refuses what the real API refuses, with the real error body,
through the real ``anthropic`` SDK; and it plays the prompt cache."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from fakes.anthropic import message, serve_messages, tool_use

USER = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
CALL = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}
BASH = {"type": "bash_20250124", "name": "bash"}
COMPUTER = {"type": "computer_20251124", "name": "computer", "display_width_px": 800,
            "display_height_px": 600}


def refused(model: str = "claude-opus-4-6", betas: list[str] | None = None,
            **body: Any) -> anthropic.APIStatusError:
    """The SDK's error for one request that the fake must refuse (its script is empty)."""
    body = {"max_tokens": 100, "messages": [USER], **body}
    with serve_messages([]) as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as caught:
            if betas:
                client.beta.messages.create(model=model, betas=betas, **body)
            else:
                client.messages.create(model=model, **body)
    error = caught.value
    assert isinstance(error.body, dict) and error.body["type"] == "error"
    assert fake.bodies and len(fake.refusals) == 1
    return error


def test_an_unknown_model_is_not_found() -> None:
    error = refused("claude-3-7-sonnet-20250219")
    assert error.status_code == 404 and error.body["error"] == {  # type: ignore[index]
        "type": "not_found_error", "message": "model: claude-3-7-sonnet-20250219"}


def test_an_output_only_field_is_refused() -> None:
    call = {**CALL, "created_by": "model"}
    error = refused(messages=[USER, {"role": "assistant", "content": [call]},
                              {"role": "user", "content": [RESULT]}], tools=[BASH])
    assert error.status_code == 400
    assert error.body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "messages.1.content.0.created_by: Extra inputs are not permitted"}


def test_a_tool_use_without_its_result_is_refused() -> None:
    error = refused(messages=[USER, {"role": "assistant", "content": [CALL]},
                              {"role": "user", "content": [{"type": "text", "text": "go"}]}],
                    tools=[BASH])
    assert "`tool_use` ids were found without `tool_result` blocks immediately after: " \
           "toolu_1" in error.message


def test_results_must_come_first_and_answer_a_call() -> None:
    late = [{"type": "text", "text": "here"}, RESULT]
    error = refused(messages=[USER, {"role": "assistant", "content": [CALL]},
                              {"role": "user", "content": late}], tools=[BASH])
    assert "without `tool_result` blocks immediately after" in error.message
    error = refused(messages=[USER, {"role": "assistant", "content": [
        {"type": "text", "text": "ok"}]}, {"role": "user", "content": [RESULT]}], tools=[BASH])
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1" in error.message


def test_tool_versions_follow_the_model_and_need_their_beta() -> None:
    error = refused("claude-sonnet-5-5", ["computer-use-2025-11-24"], tools=[COMPUTER])
    assert "'computer_20251124' is not supported on claude-sonnet-5-5" in error.message
    error = refused("claude-opus-4-6", ["some-other-beta-2026-01-01"], tools=[COMPUTER])
    assert "requires the beta header 'anthropic-beta: computer-use-2025-11-24'" in error.message
    error = refused("claude-opus-4-6", tools=[COMPUTER])  # not a GA tool type at all
    assert error.status_code == 400 and error.message.startswith("400 tools.0")
    error = refused("claude-opus-4-6", tools=[{"type": "computer_toolset_20260801"}])
    assert "'computer_toolset_20260801' is not supported on claude-opus-4-6" in error.message


def test_the_prompt_cache_reads_back_a_stable_prefix() -> None:
    body = {"max_tokens": 100, "tools": [{**BASH, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "a long prompt " * 50,
                 "cache_control": {"type": "ephemeral"}}]}]}
    with serve_messages([message("one"), message("two")]) as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)
        first = client.messages.create(model="claude-haiku-4-5", **body).usage
        second = client.messages.create(model="claude-haiku-4-5", **body).usage
    assert first.cache_read_input_tokens == 0 and first.cache_creation_input_tokens > 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0 and fake.cache.breaks() == 0


def test_a_toolset_member_call_reads_back_through_the_sdk() -> None:
    with serve_messages([message(None, tool_use("left_click", {"coordinate": [1, 2]},
                                                toolset="computer"))]) as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)
        reply = client.messages.create(model="claude-opus-5-5", max_tokens=100,
                                       messages=[USER],  # type: ignore[list-item]
                                       tools=[{"type": "computer_toolset_20260801"}])
    block = reply.to_dict()["content"][0]
    assert (block["name"], block["toolset_name"]) == ("left_click", "computer")
