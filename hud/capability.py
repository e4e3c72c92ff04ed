"""Capabilities (plug-ins): the environment-side interface, and resolving one by name.

A capability has two halves, each registered under an entry-point group, the built-in ones
exactly as a third-party package would register its own:

* ``hud.capabilities.env``: the **declaration**, by friendly name (``workspace``,
  ``browser``, ``desktop``, ``gym``, ``robot``, ``tool``, ...). It is called as
  ``declare(env, *args, **options)``: it registers the environment hooks it needs (most
  capabilities are a :class:`Service`) and, once started, publishes its binding with
  ``env.add_capability(...)``. It returns whatever the template's code drives.
* ``hud.capabilities``: the **client opener**, by protocol family (``ssh``, ``cdp``, ...):
  ``await opener(binding)`` returns a protocol client (see :meth:`hud.client.Client.open`).
  One that can run on a socket of its own may connect with
  :func:`hud.forward.connect_direct` to the daemon's connection itself (a local server hands
  it over: no tunnel in between), or elsewhere to a bare tunnel's own connection (the
  server's relay alone, not the client's forwarder as well).

::

    [project.entry-points."hud.capabilities.env"]
    plc = "my_package.plc:PLC.declare"
    [project.entry-points."hud.capabilities"]
    modbus = "my_package.plc:open_plc"

``env.use("plc", port=502)`` then declares it, and ``await client.open("modbus")`` reaches
it through the tunnel (or at its own address, for a client in the server's network
namespace: the opener gets a binding either way and must dial its URL).
``hud.testing.check_capability`` checks both halves.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from .environment import Environment
    from .protocol.messages import Binding

GROUP = "hud.capabilities.env"
CLIENT_GROUP = "hud.capabilities"

Declare = Callable[..., Any]

# Built-in capabilities whose third-party modules come with an extra of hud-runtime (see
# pyproject.toml), so a missing one names the extra to install.
EXTRAS = {"desktop": "desktop", "rfb": "desktop", "gym": "robot", "robot": "robot",
          "openpi": "robot"}

# One scan of the installed distributions per process (each scan costs milliseconds, and
# environments declare capabilities at import); a name not found scans again, for a plug-in
# installed since.
_found: dict[str, dict[str, importlib.metadata.EntryPoint]] = {}


def available(group: str = GROUP) -> dict[str, importlib.metadata.EntryPoint]:
    """Every registered capability of ``group`` (declarations by default), by name."""
    if group not in _found:
        _found[group] = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    return _found[group]


def find(name: str, group: str = GROUP) -> Any:
    """The object entry point ``name`` of ``group`` names, loaded. A ``LookupError`` lists
    what is installed."""
    entry = available(group).get(name)
    if entry is None:
        _found.pop(group, None)
        entry = available(group).get(name)
    if entry is None:
        known = ", ".join(sorted(available(group)))
        hint = known or "none; not even the built-ins: reinstall hud (pip install -e .)"
        raise LookupError(f"no capability named {name!r} is installed (entry-point group "
                          f"{group!r}: {hint})")
    try:
        return entry.load()
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(name)
        if extra is None or (exc.name or "hud").partition(".")[0] == "hud":
            raise
        raise ModuleNotFoundError(f"the {name} capability needs {exc.name}, which hud installs "
                                  f"with an extra: pip install 'hud-runtime[{extra}]'",
                                  name=exc.name) from exc


def declare(env: Environment, name: str, /, *args: Any, **options: Any) -> Any:
    """Declare capability plug-in ``name`` on ``env``: ``declare(env, *args, **options)`` of
    its ``hud.capabilities.env`` entry point; returns what that returns."""
    factory: Declare = find(name)
    return factory(env, *args, **options)


class Service:
    """A capability an environment serves with a daemon and per-task state (a workspace, a
    browser, a desktop, a robot). :meth:`attach` runs its ``start`` when the environment
    starts, its ``task`` hook around every task and its ``stop`` when it stops;
    :meth:`publish` declares its binding once ``start`` knows the address."""

    _env: Environment | None = None
    binding: Binding | None = None

    @classmethod
    def declare(cls, env: Environment, /, *args: Any, **options: Any) -> Self:
        """``cls(*args, **options)`` attached to ``env``: a ready-made entry point for the
        ``hud.capabilities.env`` group (``"pkg.module:MyService.declare"``)."""
        return cls(*args, **options).attach(env)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def task(self, scope: Any) -> Any:
        raise NotImplementedError

    def attach(self, env: Environment) -> Self:
        """Register this service's initialize, task and shutdown hooks on ``env``."""
        env.initialize(self.start)
        env.task_hook(self.task)
        env.shutdown(self.stop)
        self._env = env
        return self

    def publish(self, binding: Binding) -> None:
        """Make ``binding`` this service's, and the attached environment's capability."""
        self.binding = binding
        if self._env is not None:
            self._env.add_capability(binding)
