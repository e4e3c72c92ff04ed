"""Retries on every provider harness (``hud.harnesses.retry``), through each real SDK and its
stand-in: 408, 409, 429, 5xx and 529 are retried, a ``Retry-After`` is honoured in full up to
the rollout's deadline (not cut at 30 s), one past the deadline fails at once, saying so; a
dropped connection and a timed-out request are retried."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import serving
from fakes import anthropic, gemini, responses
from fakes.provider import Fault, failure
from hud.harnesses import retry

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run

pytestmark = pytest.mark.anyio
# (model, serve the stand-in, a reply that answers "red", base-URL suffix)
PROVIDERS: dict[str, tuple[str, Callable[..., Any], Callable[[str], Any], str]] = {
    "claude": ("claude-sonnet-4-6", anthropic.serve_messages, anthropic.message, ""),
    "openai": ("gpt-5.1", responses.serve_responses, responses.response, "/v1"),
    "gemini": ("gemini-2.5-pro", gemini.serve_gemini, gemini.reply, ""),
}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept."""
    waited: list[float] = []

    async def record(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(retry, "_sleep", record)
    return waited


async def play(provider: str, script: list[Any], timeout: float = 60, **config: Any
               ) -> tuple[Run, Any]:
    model, serve, _, suffix = PROVIDERS[provider]
    env = Environment("retry-test", version="1.0.0")

    @env.template()
    async def colour():
        answer = yield "Colour?"
        yield 1.0 if answer == "red" else 0.0

    with serve(script) as fake:
        agent = create_agent(model, api_key="k", base_url=fake.base_url + suffix,
                             retry_delay=0.001, max_retries=6, **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(colour(), agent, runtime, timeout=timeout)
    return run, fake


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_busy_replies_are_retried_and_retry_after_is_honoured(
        provider: str, waits: list[float]) -> None:
    done = PROVIDERS[provider][2]("red")
    script = [failure(408), failure(409), failure(429, headers={"retry-after": "45"}),
              failure(500), failure(529), failure(503, headers={"retry-after-ms": "1500"}),
              done]
    run, fake = await play(provider, script)
    assert run.status == "completed" and run.reward == 1.0, run.error
    retried = [s.data for s in run.trace.steps if s.kind == "retry"]
    assert [r["error"].split(":")[0].split()[0] for r in retried] == [
        "408", "409", "429", "500", "529", "503"]
    assert waits[2] == 45 and waits[5] == 1.5  # in full: the cap was 30 s
    assert len(fake.requests) == 7


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_a_retry_after_past_the_deadline_fails_at_once(
        provider: str, waits: list[float]) -> None:
    script = [failure(429, "slow down", headers={"retry-after": "120"}),
              PROVIDERS[provider][2]("red")]
    run, fake = await play(provider, script, timeout=30)
    assert run.status == "error" and run.error is not None
    assert "past the rollout's deadline" in run.error.message
    assert waits == [] and len(fake.requests) == 1


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_dropped_connections_and_timeouts_are_retried(
        provider: str, waits: list[float]) -> None:
    script = [Fault(drop=True), Fault(delay=3, drop=True), PROVIDERS[provider][2]("red")]
    run, fake = await play(provider, script, request_timeout=1)
    assert run.status == "completed" and run.reward == 1.0, run.error
    assert len([s for s in run.trace.steps if s.kind == "retry"]) == 2
    assert len(fake.requests) == 3
