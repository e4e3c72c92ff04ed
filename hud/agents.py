"""Agents (harnesses): the plug-in interface, and resolving one by name.

A harness drives one :class:`~hud.eval.run.Run`: it reads the prompt, opens capabilities
through ``run.client``, records its steps with ``run.record``, and sets ``run.answer``.
Harnesses register under the entry-point group ``hud.harnesses`` (the built-in ones too)::

    [project.entry-points."hud.harnesses"]
    my_agent = "my_package.agent:MyAgent"

``hud eval tasks.py my_agent`` and ``create_agent("my_agent")`` then find it by name.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from .eval.rollout import AgentCallable
    from .eval.run import Run

GROUP = "hud.harnesses"

# Model-name prefixes and the harness that speaks each family's native API.
MODEL_FAMILIES = {"claude": "claude", "gpt-": "openai", "o1": "openai", "o3": "openai",
                  "o4": "openai", "gemini": "gemini"}


class Agent:
    """Base class of harnesses. Subclasses implement :meth:`__call__`.

    ``needs_solutions`` asks the runtime to serve reference solutions (``tasks.solve``);
    only harnesses that grade the environment itself, like ``oracle``, set it.
    ``config`` holds harness settings (``hud eval --config key=value``).
    """

    name: ClassVar[str] = "agent"
    needs_solutions: ClassVar[bool] = False

    def __init__(self, *, model: str | None = None, **config: Any) -> None:
        self.model = model
        self.config = config

    async def __call__(self, run: Run) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise a clear error before any environment starts if the harness cannot run
        (a missing API key, say). The default checks nothing."""


def available() -> dict[str, importlib.metadata.EntryPoint]:
    """Every registered harness, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def create_agent(name: str, **config: Any) -> AgentCallable:
    """A harness by registered name (``oracle``, ``openai_compatible``, ...) or by model
    (``claude-…``, ``gpt-…``, ``gemini-…`` pick that family's harness, with ``model=name``).

    Returns what the harness's factory builds: an :class:`Agent`, or any ``async (run)``
    callable."""
    registry = available()
    entry = registry.get(name)
    if entry is None:
        family = next((h for prefix, h in MODEL_FAMILIES.items() if name.startswith(prefix)),
                      None)
        if family is None or family not in registry:
            known = ", ".join(sorted(registry)) or "none"
            hint = f" (the {family!r} harness is not installed)" if family else ""
            raise LookupError(f"no harness named {name!r}{hint}; registered: {known}")
        entry = registry[family]
        config.setdefault("model", name)
    factory: Callable[..., AgentCallable] = entry.load()  # what the group's contract says
    agent = factory(**config)
    if not isinstance(agent, Agent) and not callable(agent):
        raise TypeError(f"harness {name!r} ({entry.value}) did not build an agent")
    return agent
