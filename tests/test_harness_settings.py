"""Settings that every provider harness (``claude``, ``openai``, ``gemini``) takes the same
way: the documented sampling settings reach the provider's request and are recorded in the
trace's agent settings; ``--config extra`` fields the request does not take, a bad
``safety`` or ``tool_version``, are refused before any environment starts, in the same
words on every harness."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import serving
from fakes.anthropic import message, serve_messages
from fakes.gemini import reply, serve_gemini
from fakes.responses import response, serve_responses

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout

# harness: (model, stand-in, its base URL's suffix, the script, sampling settings given,
# what the request body carries, what the trace's agent settings record)
SAMPLING: dict[str, tuple[str, Any, str, list[Any], dict[str, Any], dict[str, Any],
                          dict[str, Any]]] = {
    "claude": ("claude-opus-4-6", serve_messages, "", [message("hi")],
               {"max_tokens": 1000, "extra": {"output_config": {"effort": "low"}}},
               {"max_tokens": 1000, "output_config": {"effort": "low"}},
               {"max_tokens": 1000, "output_config": {"effort": "low"}}),
    "openai": ("gpt-5.1", serve_responses, "/v1", [response("hi")],
               {"max_output_tokens": 500, "extra": {"temperature": 0.2, "top_p": 0.9}},
               {"max_output_tokens": 500, "temperature": 0.2, "top_p": 0.9},
               {"max_output_tokens": 500, "temperature": 0.2, "top_p": 0.9}),
    "gemini": ("gemini-2.5-pro", serve_gemini, "", [reply("hi")],
               {"extra": {"temperature": 0.2, "top_p": 0.9, "max_output_tokens": 500}},
               {"generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 500}},
               {"temperature": 0.2, "top_p": 0.9, "max_output_tokens": 500}),
}
MODELS = {"claude": "claude-opus-4-6", "openai": "gpt-5.1", "gemini": "gemini-2.5-pro"}


def hello_env() -> tuple[Environment, Any]:
    env = Environment("settings-test", version="1.0.0")

    @env.template()
    async def hello():
        yield "Say hi."
        yield 1.0

    return env, hello


@pytest.mark.anyio
@pytest.mark.parametrize("harness", sorted(SAMPLING))
async def test_sampling_settings_reach_the_request_and_the_trace(harness: str) -> None:
    model, serve, suffix, script, given, sent, recorded = SAMPLING[harness]
    env, hello = hello_env()
    with serve(script) as fake:
        agent = create_agent(model, api_key="k", base_url=fake.base_url + suffix, **given)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(hello(), agent, runtime, timeout=60)
    assert run.status == "completed" and run.answer == "hi", run.error
    (body,) = fake.bodies
    assert {key: body.get(key) for key in sent} == sent
    assert run.trace.agent is not None
    settings = run.trace.agent.settings
    assert {key: settings.get(key) for key in recorded} == recorded


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k"])
def test_claude_refuses_sampling_parameters_the_messages_api_refuses(field: str) -> None:
    """The installed SDK speaks anthropic-version 2026-10-21, which has no sampling
    parameters: before, ``temperature`` reached ``messages.create()`` and the run died on
    its ``TypeError`` ("unexpected keyword argument") after the environment had started."""
    agent = create_agent("claude-sonnet-4-6", api_key="k", extra={field: 0.5})
    with pytest.raises(ValueError, match=f"claude: --config extra sets {field}, which the "
                                         "Messages API refuses .*anthropic-version 2026-10-21"):
        agent.check()


@pytest.mark.parametrize("harness", sorted(MODELS))
def test_an_extra_field_the_request_does_not_take_is_refused_up_front(harness: str) -> None:
    agent = create_agent(MODELS[harness], api_key="k", extra={"temprature": 0.5})
    with pytest.raises(ValueError, match=f"{harness}: --config extra has temprature, which "
                                         "the provider's request does not take; it takes"):
        agent.check()


CHOICES = [("openai", "safety", "ask", "acknowledge, stop"),
           ("gemini", "safety", "ask", "acknowledge, stop"),
           ("openai", "tool_version", "v9", "computer, computer_use_preview"),
           ("gemini", "tool_version", "v9", "2025-10, 2026-06"),
           ("claude", "tool_version", "v9", "bash_20250124, computer_20250124")]


@pytest.mark.parametrize(("harness", "setting", "value", "known"), CHOICES)
def test_a_bad_choice_is_refused_in_the_same_words_on_every_harness(
        harness: str, setting: str, value: str, known: str) -> None:
    with pytest.raises(ValueError, match=f"^{harness}: {setting} must be one of {known}.*, "
                                         f"not '{value}'$"):
        create_agent(MODELS[harness], api_key="k", **{setting: value}).check()
