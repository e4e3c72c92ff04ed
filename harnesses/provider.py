"""What the model-provider harnesses (claude, openai, gemini) share: settings from harness
config and the environment, a clear missing-key error before any environment starts, and the
run itself (open the SDK's client and every capability, then :func:`~.dialogue.converse`),
for which each harness supplies its client and its :class:`~.dialogue.Dialect`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hud.agents import Agent

from .dialogue import Dialect, Limits, converse
from .retry import RequestPolicy
from .toolbox import ToolBox
from .usage import Prices
from .workbench import Workbench, open_workbench

if TYPE_CHECKING:
    from hud.eval.run import Run

DEFAULT_MAX_STEPS = 50
# What a harness does with a provider's safety check (OpenAI's pending_safety_checks,
# Gemini's safety_decision): run the call and acknowledge it, or end the run before it.
SAFETY_POLICIES = ("acknowledge", "stop")


def check_choice(harness: str, setting: str, value: Any, known: Sequence[str]) -> None:
    """A ``ValueError``, in the same words for every harness, unless ``value`` is one of
    ``known`` (``safety``, ``tool_version``...)."""
    if value not in known:
        raise ValueError(f"{harness}: {setting} must be one of {', '.join(known)}, "
                         f"not {value!r}")


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
    prices: str | dict[str, Any] | None = None  # see hud.harnesses.usage.Prices.load
    policy: RequestPolicy = dataclasses.field(default_factory=RequestPolicy)

    def limits(self, run_max_steps: int | None) -> Limits:
        """The loop's limits: ``max_steps`` is ours, else the run's, else 50."""
        return Limits(max_steps=self.max_steps or run_max_steps or DEFAULT_MAX_STEPS,
                      tool_timeout=self.tool_timeout, agent_timeout=self.agent_timeout,
                      keep_screenshots=self.keep_screenshots)


def split_config(harness: str, cls: Any, config: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], RequestPolicy]:
    """``config`` as the fields of the settings dataclass ``cls`` and the request policy;
    an unknown key is a ``TypeError`` naming the known ones."""
    policy_keys = {f.name for f in dataclasses.fields(RequestPolicy)}
    own_keys = {f.name for f in dataclasses.fields(cls)} - {"policy"}
    unknown = set(config) - policy_keys - own_keys
    if unknown:
        raise TypeError(f"{harness}: unknown setting(s) {sorted(unknown)}; known: "
                        f"{', '.join(sorted(own_keys | policy_keys))}")
    own = {k: v for k, v in config.items() if k in own_keys}
    return own, RequestPolicy(**{k: v for k, v in config.items() if k in policy_keys})


def settings_from(cls: Any, harness: str, model: str | None, config: Mapping[str, Any],
                  key_env: tuple[str, ...], base_env: tuple[str, ...],
                  environ: Mapping[str, str] = os.environ) -> Any:
    """A settings dataclass from harness config (see :func:`split_config`), with the key and
    base URL from the environment when not given."""
    own, policy = split_config(harness, cls, config)
    if model:
        own["model"] = model
    settings = cls(**own, policy=policy)
    settings.api_key = settings.api_key or next(
        (environ[name] for name in key_env if environ.get(name)), None)
    settings.base_url = settings.base_url or next(
        (environ[name] for name in base_env if environ.get(name)), None)
    return settings


class ProviderAgent(Agent):
    """Base of the provider harnesses. A subclass names its ``settings_type`` (a
    :class:`ProviderSettings` dataclass) and where its key and base URL come from in the
    environment (the first variable set wins), and supplies :meth:`open_client` and
    :meth:`start`."""

    settings_type: ClassVar[Any]
    key_env: ClassVar[tuple[str, ...]]
    base_env: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, model: str | None = None, **config: Any) -> None:
        super().__init__(model=model, **config)
        self.settings = settings_from(self.settings_type, self.name, model, config,
                                      self.key_env, self.base_env)
        self.model = self.settings.model

    def check(self) -> None:
        """Refuse, before any environment starts, a run the provider would refuse: no API
        key, or an ``extra`` field that is not a field of the provider's request."""
        if not self.settings.api_key:
            raise ValueError(f"{self.name} needs an API key: set {' or '.join(self.key_env)} "
                             "(or --config api_key=...)")
        fields = self.request_fields()
        unknown = sorted(set(self.settings.extra or {}) - (fields or set()))
        if fields is not None and unknown:
            raise ValueError(f"{self.name}: --config extra has {', '.join(unknown)}, which the "
                             f"provider's request does not take; it takes "
                             f"{', '.join(sorted(fields))}")

    def request_fields(self) -> frozenset[str] | None:
        """The fields ``extra`` may set: those of the installed SDK's request type, less
        the ones the harness writes itself; None (the default) leaves ``extra`` unchecked."""
        return None

    def request_settings(self) -> dict[str, Any]:
        """What the requests carry besides the conversation and tools (the sampling settings:
        ``max_tokens``, ``temperature``...), recorded in the trace's agent settings."""
        return dict(self.settings.extra or {})

    async def __call__(self, run: Run) -> None:
        """Open the client and every capability the environment offers (all closed when the
        run ends), then converse to the answer."""
        self.check()
        settings = self.settings
        run.model = settings.model
        async with contextlib.AsyncExitStack() as stack:
            client = self.open_client(stack)
            bench = await open_workbench(run.client, stack,
                                         (settings.display_width, settings.display_height))
            dialect, toolbox, messages = self.start(run, client, bench)
            run.set_tools(toolbox.specs)
            run.set_agent_settings(**self.request_settings())
            # kept in run.memory: a branch of this run (run.fork) goes on from this conversation
            if "messages" in run.memory:
                messages = run.memory["messages"]
            else:
                run.memory["messages"] = messages
                if settings.system_prompt:
                    run.record("message", role="system", content=settings.system_prompt)
            await converse(run, dialect, toolbox, messages, settings.limits(run.max_steps),
                           Prices.load(settings.prices))

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        """The provider SDK's async client, with its own retries off (ours are bounded and
        recorded) and its close pushed on ``stack``."""
        raise NotImplementedError

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[Dialect, ToolBox, list[Any]]:
        """The dialect for ``client``, the tools for ``bench`` and the opening messages."""
        raise NotImplementedError


def describe_error(exc: Any) -> str:
    """A provider SDK error in one line: its status and message."""
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", str(exc))
    return f"{status}: {message}" if status else f"{type(exc).__name__}: {message}"
