"""Harbor tasks: read a Harbor dataset as an environment (``hud eval DIR AGENT``), and
write hud tasks as Harbor task directories (``hud export-tasks --format harbor``).

Its names load on first use: :func:`hud.loader` asks every target whether it is a Harbor
dataset, and the answer needs :mod:`hud.harbor.task` alone, not the container runtime
behind :func:`harbor_environment`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .environment import harbor_environment
    from .task import HarborTask, is_harbor_source, read_dataset

__all__ = ["HarborTask", "harbor_environment", "is_harbor_source", "read_dataset"]

_HOMES = {"HarborTask": "task", "is_harbor_source": "task", "read_dataset": "task",
          "harbor_environment": "environment"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
