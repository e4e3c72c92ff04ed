"""``openai_compatible``: any Chat Completions server, with tools from the environment.

Settings (``hud eval ... openai_compatible --config key=value``; the same as keyword
arguments in Python):

``base_url``         the server's API root, ``http://host:port/v1`` (else ``$OPENAI_BASE_URL``)
``api_key``          else ``$OPENAI_API_KEY``, else ``"unused"`` (local servers need none)
``model``            else the first model the server lists at ``/models``
``max_steps``        model turns at most (else the run's ``max_steps``, else 30)
``temperature``, ``max_tokens``, ``extra_body`` (extra request fields, a JSON object)
``logprobs``         ``true``: ask for the sampled tokens with their log-probabilities
                     (``logprobs``, ``top_logprobs``) and their ids (vLLM's
                     ``return_token_ids`` and ``return_tokens_as_token_ids``; llama.cpp's
                     server gives ids with its logprobs); recorded on each ``model`` step and
                     exported by ``hud export``. Off by default: OpenAI's own API refuses
                     the vLLM fields.
``top_logprobs``     alternatives per token with ``logprobs`` (default 1; llama.cpp's server
                     returns no logprobs at all with 0)
``tool_choice``      ``auto``, ``required``, ``none`` or a function (sent when there are tools)
``system_prompt``    a system message before the prompt
``tool_timeout``     seconds for one tool call (none by default: the rollout's deadline bounds it)
``max_retries``, ``retry_delay``, ``max_retry_delay``, ``request_timeout``  see
                     :class:`~hud.harnesses.retry.RequestPolicy`

Tools: for each ``ssh`` capability, ``bash``, ``read_file``, ``write_file`` and
``edit_file``; for each ``mcp`` capability, one tool per MCP tool. Names are qualified
(``capability__tool``) when an environment offers several capabilities of one kind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import openai

from hud.agents import Agent
from hud.errors import ModelAPIError

from ..mcp_tools import mcp_tools
from ..provider import split_config
from ..retry import RequestPolicy
from ..shell_tools import shell_tools
from ..toolbox import ToolBox
from ..workbench import open_capability
from .loop import ChatModel, LoopSettings, converse

if TYPE_CHECKING:
    from hud.eval.run import Run

log = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 30
DEFAULT_API_KEY = "unused"


@dataclasses.dataclass(slots=True, kw_only=True)
class Settings:
    """The harness's settings, checked: see the module doc."""

    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    max_steps: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    tool_timeout: float | None = None
    extra_body: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 1
    policy: RequestPolicy = dataclasses.field(default_factory=RequestPolicy)

    @classmethod
    def from_config(cls, model: str | None, config: Mapping[str, Any],
                    environ: Mapping[str, str] = os.environ) -> Settings:
        """Settings from harness config; unknown keys and wrong types are a ``TypeError``."""
        own, policy = split_config("openai_compatible", cls, config)
        settings = cls(**{**own, "model": own.get("model") or model}, policy=policy)
        settings.base_url = settings.base_url or environ.get("OPENAI_BASE_URL")
        settings.api_key = settings.api_key or environ.get("OPENAI_API_KEY") or DEFAULT_API_KEY
        settings._check_types()
        return settings

    def _check_types(self) -> None:
        expected: dict[str, type | tuple[type, ...]] = {
            "max_steps": int, "max_tokens": int, "temperature": (int, float),
            "tool_timeout": (int, float), "extra_body": dict, "tool_choice": (str, dict),
            "system_prompt": str, "base_url": str, "api_key": str, "model": str,
            "top_logprobs": int,
        }
        if not isinstance(self.logprobs, bool):
            raise TypeError(f"openai_compatible: logprobs must be true or false, "
                            f"got {self.logprobs!r}")
        for name, kind in expected.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise TypeError(f"openai_compatible: {name} must be {_kind_name(kind)}, "
                                f"got {value!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TypeError(f"openai_compatible: max_steps must be at least 1, "
                            f"got {self.max_steps}")

    def request_fields(self) -> dict[str, Any]:
        """Fields sent with every request (besides ``messages`` and ``tools``)."""
        fields: dict[str, Any] = {"model": self.model}
        for name in ("temperature", "max_tokens", "extra_body"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        if self.logprobs:
            fields.update(logprobs=True, top_logprobs=self.top_logprobs)
            # vLLM's extensions (docs.vllm.ai, OpenAI-compatible server): the sampled ids
            # beside the choice, and ids in place of token strings on older versions;
            # servers without them ignore unknown fields (llama.cpp, llama-cpp-python).
            fields["extra_body"] = {"return_token_ids": True,
                                    "return_tokens_as_token_ids": True,
                                    **(self.extra_body or {})}
        return fields


class OpenAICompatibleAgent(Agent):
    """A Chat Completions agent loop; see the module doc for settings and tools."""

    name: ClassVar[str] = "openai_compatible"

    def __init__(self, *, model: str | None = None, **config: Any) -> None:
        super().__init__(model=model, **config)
        self.settings = Settings.from_config(model, config)

    def check(self) -> None:
        if not self.settings.base_url:
            raise ValueError(
                "openai_compatible needs the server's URL: --config base_url=http://HOST:PORT/v1 "
                "(or set OPENAI_BASE_URL)")

    async def __call__(self, run: Run) -> None:
        self.check()
        settings = self.settings
        client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key,
                                    max_retries=0)  # retries are ours: bounded, recorded
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(client.close)
            toolbox = await self.open_tools(run, stack)
            model = settings.model or await self._default_model(client)
            self.model = run.model = model
            loop_settings = LoopSettings(
                max_steps=settings.max_steps or run.max_steps or DEFAULT_MAX_STEPS,
                system_prompt=settings.system_prompt, tool_timeout=settings.tool_timeout,
                request={**settings.request_fields(), "model": model},
                tool_choice=settings.tool_choice)
            await converse(run, ChatModel(client, settings.policy), toolbox, loop_settings)

    async def open_tools(self, run: Run, stack: contextlib.AsyncExitStack) -> ToolBox:
        """Tools for the capabilities the environment offers (closed by ``stack``).
        Override to give the loop other tools."""
        return await open_toolbox(run.client, stack)

    async def _default_model(self, client: openai.AsyncOpenAI) -> str:
        try:
            listed = [m.id async for m in client.models.list()]
        except openai.APIError as exc:
            raise ModelAPIError(f"no model given and {self.settings.base_url}/models failed "
                                f"({exc.message}): pass --model or --config model=...") from exc
        if not listed:
            raise ModelAPIError(f"no model given and {self.settings.base_url}/models lists "
                                "none: pass --model")
        self.settings.model = listed[0]
        return listed[0]


async def open_toolbox(client: Any, stack: contextlib.AsyncExitStack) -> ToolBox:
    """Open every ``ssh`` and ``mcp`` capability in the client's manifest and build their
    tools; capabilities of other kinds are left alone."""
    kinds: dict[str, list[Any]] = {"ssh": [], "mcp": []}
    for binding in client.manifest.capabilities:
        family = binding.protocol.partition("/")[0]
        if family in kinds:
            kinds[family].append(binding)
        else:
            log.debug("openai_compatible has no tools for %s (%s)", binding.name,
                      binding.protocol)
    toolbox = ToolBox()
    for binding in kinds["ssh"]:
        handle = await open_capability(client, binding, stack)
        prefix = binding.name if len(kinds["ssh"]) > 1 else None
        for tool in shell_tools(handle, prefix):
            toolbox.add(tool)
    for binding in kinds["mcp"]:
        handle = await open_capability(client, binding, stack)
        prefix = binding.name if len(kinds["mcp"]) > 1 else None
        for tool in await mcp_tools(handle, prefix):
            toolbox.add(tool)
    return toolbox


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"int": "an integer", "float": "a number", "str": "a string",
                        "dict": "a JSON object"}[k.__name__] for k in kinds)
