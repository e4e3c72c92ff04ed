"""hud: a protocol-first runtime for agent environments.

The public names load lazily, so ``import hud`` (and the CLI's hot paths) stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Environment": "hud.environment",
    "Template": "hud.environment",
    "Task": "hud.environment",
    "Binding": "hud.protocol.messages",
    "Client": "hud.client",
    "open_client": "hud.client",
    "HudConnectionError": "hud.errors",
    "Server": "hud.server",
    "ServerConfig": "hud.server",
    "HudError": "hud.protocol.errors",
    "TemplateError": "hud.protocol.errors",
    "load_environment": "hud.loader",
}

__all__ = [  # noqa: RUF022  (grouped as in _EXPORTS)
    "__version__",
    "Environment",
    "Template",
    "Task",
    "Binding",
    "Client",
    "open_client",
    "HudConnectionError",
    "Server",
    "ServerConfig",
    "HudError",
    "TemplateError",
    "load_environment",
]

if TYPE_CHECKING:
    from .client import Client, open_client
    from .environment import Environment, Task, Template
    from .errors import HudConnectionError
    from .loader import load_environment
    from .protocol.errors import HudError, TemplateError
    from .protocol.messages import Binding
    from .server import Server, ServerConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hud' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
