"""Runtimes: where each rollout's environment lives.

A runtime hands out a connected :class:`~hud.client.Client` per rollout and tears down after.
The built-ins, one module each, by the spec that names them (``hud eval --runtime SPEC``):

* ``pool`` (:class:`PoolRuntime`, the default): pre-forked processes, each serving exactly
  one rollout and then replaced. Isolated, and fast: start-up is paid off the critical path.
* ``inprocess`` (:class:`InProcessRuntime`): the environment runs in this process and event
  loop, driven in memory. Fastest; rollouts share the process (session isolation only).
* ``subprocess`` (:class:`SubprocessRuntime`): a fresh ``hud serve`` process per rollout.
  Isolated, and slow to start.
* ``ws://HOST:PORT`` (:class:`UrlRuntime`): an environment someone else serves.

Others register a :class:`Runtime` subclass under the ``hud.runtimes`` entry-point group
(:mod:`hud.runtimes.registry`); :func:`create_runtime` builds any of them from a spec.
"""

from .base import Runtime, RuntimeOptions
from .inprocess import InProcessRuntime
from .pool import PoolRuntime
from .registry import RuntimeSpec, UnknownRuntime, available, create_runtime
from .subprocess import SubprocessRuntime
from .url import UrlRuntime

__all__ = [
    "InProcessRuntime",
    "PoolRuntime",
    "Runtime",
    "RuntimeOptions",
    "RuntimeSpec",
    "SubprocessRuntime",
    "UnknownRuntime",
    "UrlRuntime",
    "available",
    "create_runtime",
]
