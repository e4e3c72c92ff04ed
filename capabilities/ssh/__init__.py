"""``ssh/2``: a sandboxed shell per task (:class:`Workspace`) and its client (:class:`Shell`).

Environment side: ``ws = env.workspace(root)``; see :mod:`.workspace`. Harness side:
``shell = await client.open("shell")``; see :mod:`.client`. The names load lazily, so
declaring a workspace does not import asyncssh until the environment starts.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh still defines its DSA key support, which cryptography deprecates: importing it
# warns 5 lines per process about keys hud never makes. Only those warnings, only asyncssh's
# (the submodules that import asyncssh all load through this package).
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh\.")

if TYPE_CHECKING:
    from .client import Shell, open_shell
    from .workspace import Workspace

__all__ = ["Shell", "Workspace", "open_shell"]

_EXPORTS = {"Shell": ".client", "open_shell": ".client", "Workspace": ".workspace"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
