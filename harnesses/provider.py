"""What the model-provider harnesses (claude, openai, gemini) share: settings from harness
config and the environment, a clear missing-key error before any environment starts, and small
adapters between the tool box and each provider's loop."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from hud.agents import Agent

from .openai_compatible.loop import RequestPolicy
from .openai_compatible.toolbox import ToolBox, ToolOutput


@dataclasses.dataclass(kw_only=True)
class ProviderSettings:
    """Settings every provider harness takes (``--config key=value``); each harness's own
    ``Settings`` adds its fields and its default model and display size."""

    api_key: str | None = None
    base_url: str | None = None
    model: str = ""
    max_steps: int | None = None
    system_prompt: str | None = None
    tool_timeout: float | None = 120.0
    agent_timeout: float | None = None
    keep_screenshots: int = 3
    display_width: int = 1280
    display_height: int = 800
    extra: dict[str, Any] | None = None
    policy: RequestPolicy = dataclasses.field(default_factory=RequestPolicy)


def settings_from(cls: Any, harness: str, model: str | None, config: Mapping[str, Any],
                  key_env: tuple[str, ...], base_env: tuple[str, ...],
                  environ: Mapping[str, str] = os.environ) -> Any:
    """A settings dataclass from harness config, with the key and base URL from the
    environment when not given; an unknown key is a ``TypeError`` naming the known ones."""
    policy_keys = {f.name for f in dataclasses.fields(RequestPolicy)}
    own_keys = {f.name for f in dataclasses.fields(cls)} - {"policy"}
    unknown = set(config) - policy_keys - own_keys
    if unknown:
        raise TypeError(f"{harness}: unknown setting(s) {sorted(unknown)}; known: "
                        f"{', '.join(sorted(own_keys | policy_keys))}")
    own = {k: v for k, v in config.items() if k in own_keys}
    if model:
        own["model"] = model
    settings = cls(**own, policy=RequestPolicy(
        **{k: v for k, v in config.items() if k in policy_keys}))
    settings.api_key = settings.api_key or next(
        (environ[name] for name in key_env if environ.get(name)), None)
    settings.base_url = settings.base_url or next(
        (environ[name] for name in base_env if environ.get(name)), None)
    return settings


class ProviderAgent(Agent):
    """Base of the provider harnesses. A subclass names its ``settings_type`` (a dataclass
    with ``api_key``, ``base_url``, ``model`` and ``policy``) and where its key and base URL
    come from in the environment (the first variable set wins)."""

    settings_type: ClassVar[Any]
    key_env: ClassVar[tuple[str, ...]]
    base_env: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, model: str | None = None, **config: Any) -> None:
        super().__init__(model=model, **config)
        self.settings = settings_from(self.settings_type, self.name, model, config,
                                      self.key_env, self.base_env)
        self.model = self.settings.model

    def check(self) -> None:
        if not self.settings.api_key:
            raise ValueError(f"{self.name} needs an API key: set {' or '.join(self.key_env)} "
                             "(or --config api_key=...)")


def calling(box: ToolBox, name: str) -> Any:
    """An async callable that calls tool ``name`` of ``box``."""
    async def call(args: dict[str, Any]) -> ToolOutput:
        return await box.call(name, args)

    return call


def describe_error(exc: Any) -> str:
    """A provider SDK error in one line: its status and message."""
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", str(exc))
    return f"{status}: {message}" if status else f"{type(exc).__name__}: {message}"
