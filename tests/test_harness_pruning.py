"""Screenshot pruning in chunks on the OpenAI Responses and Gemini harnesses, measured on the
strict stand-ins: their prompt caches match an exact prefix of the input, so pruning must
change an old turn at most once per ``keep_screenshots`` steps (pruning the oldest image
every step, as before, broke the cache on every step past the first ``keep``). Claude's
counterpart, on the played Anthropic cache, is in ``test_claude_loop.py``."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import serving
from fakes.gemini import call, reply, serve_gemini
from fakes.provider import prefix_breaks
from fakes.responses import function_call, response, serve_responses
from test_harness_claude import PIXEL

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout

pytestmark = pytest.mark.anyio
STEPS, KEEP = 12, 3


def snapshots_env() -> tuple[Environment, Any]:
    env = Environment("pruning-test", version="1.0.0")

    @env.tool()
    def snap() -> Any:
        """A screenshot."""
        from mcp.types import ImageContent

        return ImageContent(type="image", data=PIXEL, mimeType="image/png")

    @env.template()
    async def snapshots():
        yield "Take snapshots."
        yield 1.0

    return env, snapshots


PROVIDERS = {
    "openai": ("gpt-5.1", serve_responses, "/v1", "input",
               [response(None, function_call("snap", {})) for _ in range(STEPS)]
               + [response("done")]),
    "gemini": ("gemini-3.5-flash", serve_gemini, "", "contents",
               [reply(None, call("snap", {})) for _ in range(STEPS)] + [reply("done")]),
}


def images(value: Any) -> int:
    """How many screenshots a request carries (both APIs' image parts, in any nesting)."""
    if isinstance(value, list):
        return sum(images(v) for v in value)
    if isinstance(value, dict):
        own = value.get("type") == "input_image" or bool({"inlineData", "inline_data"} & set(value))
        return own + sum(images(v) for v in value.values())
    return 0


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_pruning_breaks_the_prefix_cache_once_per_keep_steps(provider: str) -> None:
    model, serve, suffix, key, script = PROVIDERS[provider]
    env, snapshots = snapshots_env()
    with serve(script) as fake:
        agent = create_agent(model, api_key="k", base_url=fake.base_url + suffix,
                             keep_screenshots=KEEP, retry_delay=0.001)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(snapshots(), agent, runtime, timeout=60)
    assert run.status == "completed" and run.answer == "done", run.error
    assert getattr(fake, "refused", getattr(fake, "violations", None)) == []
    assert len(fake.bodies) == STEPS + 1
    assert 0 < prefix_breaks(fake.bodies, key) <= STEPS // KEEP
    kept = [images(body[key]) for body in fake.bodies]
    assert max(kept) < 2 * KEEP and kept[-1] >= KEEP  # never fewer than keep screenshots
