"""The eval engine: tasksets, the eval config, rollouts, jobs and traces, and the runtimes
(from :mod:`hud.runtimes`) they run in.

The names load on first use, as ``hud``'s do: the CLI imports :mod:`hud.eval.config` for its
option defaults at every start, and that must not pull in the engine (the client, the
environment: about 80 ms). The rollout function is ``hud.eval.rollout.rollout``: a package
attribute cannot be both that function and the submodule of the same name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EvalConfig": "hud.eval.config",
    "Job": "hud.eval.job",
    "group_relative": "hud.eval.job",
    "Run": "hud.eval.run",
    "Taskset": "hud.eval.taskset",
    "Step": "hud.eval.trace",
    "Trace": "hud.eval.trace",
    "Runtime": "hud.runtimes",
    "InProcessRuntime": "hud.runtimes",
    "PoolRuntime": "hud.runtimes",
    "SubprocessRuntime": "hud.runtimes",
    "UrlRuntime": "hud.runtimes",
}

__all__ = [  # noqa: RUF022  (grouped as in _EXPORTS)
    "EvalConfig",
    "Job",
    "group_relative",
    "Run",
    "Taskset",
    "Step",
    "Trace",
    "Runtime",
    "InProcessRuntime",
    "PoolRuntime",
    "SubprocessRuntime",
    "UrlRuntime",
]

if TYPE_CHECKING:
    from ..runtimes import (
        InProcessRuntime,
        PoolRuntime,
        Runtime,
        SubprocessRuntime,
        UrlRuntime,
    )
    from .config import EvalConfig
    from .job import Job, group_relative
    from .run import Run
    from .taskset import Taskset
    from .trace import Step, Trace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hud.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
