"""Runtimes by name: the ``hud.runtimes`` entry-point group, and the spec strings that pick one.

A spec is ``NAME`` (``pool``), ``NAME:ARGUMENT`` (``container:IMAGE``), or a URL whose scheme
is the name and which is, whole, the argument (``ws://host:port``, ``ray://host:port``). A
runtime that takes options reads them from a query at the end of its argument, which a bare
name may carry too (``ray?isolation=inprocess``: the argument is ``?isolation=inprocess``). The
built-in runtimes register in hud's own ``pyproject.toml`` exactly as a third-party package
registers one: an entry point ``NAME = "package.module:RuntimeSubclass"`` in the group.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from .base import Runtime, RuntimeOptions

GROUP = "hud.runtimes"


class UnknownRuntime(LookupError):
    """No runtime is registered under the name a spec asks for."""


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """A parsed spec: the registered ``name`` and the ``argument`` its runtime receives."""

    name: str
    argument: str | None = None

    @classmethod
    def parse(cls, text: str) -> RuntimeSpec:
        """Split ``text`` once; raises ``ValueError`` when it names no runtime."""
        scheme, sep, rest = text.partition("://")
        if sep:
            if not scheme or not rest:
                raise ValueError(f"runtime {text!r} is not a URL of the form SCHEME://HOST:PORT")
            return cls(scheme.lower(), text)
        name, sep, argument = text.partition(":")
        if "?" in name:  # a bare name with options: the query is the whole argument
            name, sep, argument = text.partition("?")
            argument = sep + argument
        if not name:
            raise ValueError(f"runtime {text!r} has no name before the colon")
        if sep and not argument:
            raise ValueError(f"runtime {text!r} has nothing after the colon")
        return cls(name, argument if sep else None)


def available() -> dict[str, importlib.metadata.EntryPoint]:
    """Every registered runtime, by name (or URL scheme)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def create_runtime(spec: str | RuntimeSpec, options: RuntimeOptions | None = None) -> Runtime:
    """The runtime ``spec`` names, built by its class's ``from_spec`` with ``options``.

    Raises :class:`UnknownRuntime` (whose message lists every registered runtime as it is
    written in a spec) and ``LookupError`` for one that cannot be loaded, ``ValueError`` for
    a malformed spec or an argument the runtime refuses, and ``TypeError`` when the entry
    point is not a :class:`Runtime` subclass.
    """
    parsed = spec if isinstance(spec, RuntimeSpec) else RuntimeSpec.parse(spec)
    registry = available()
    entry = registry.get(parsed.name)
    if entry is None and not registry:
        # hud's own metadata lists the built-ins: an install older than the group lacks them.
        raise UnknownRuntime(f"no runtimes are registered (entry-point group {GROUP!r}): "
                             "reinstall hud (pip install -e .) to register the built-in ones")
    if entry is None:
        choices = ", ".join(sorted(_usage(name, ep) for name, ep in registry.items()))
        raise UnknownRuntime(f"no runtime named {parsed.name!r}; available: {choices}")
    factory = _load(entry)
    return factory.from_spec(parsed.argument, options or RuntimeOptions())


def _load(entry: importlib.metadata.EntryPoint) -> type[Runtime]:
    try:
        factory = entry.load()
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"runtime {entry.name!r} is registered ({entry.value}) but cannot "
                          f"be loaded: {exc}") from exc
    if not (isinstance(factory, type) and issubclass(factory, Runtime)):
        raise TypeError(f"runtime {entry.name!r} ({entry.value}) is not a "
                        "hud.runtimes.Runtime subclass")
    return factory


def _usage(name: str, entry: importlib.metadata.EntryPoint) -> str:
    """How runtime ``name`` is written in a spec (``pool``, ``ws://HOST:PORT``); loading it
    is allowed to fail here, since this only decorates an error message."""
    try:
        usage = _load(entry).usage
    except Exception:
        return name
    if "://" in usage:
        return f"{name}://{usage.partition('://')[2]}"
    if ":" in usage:
        return f"{name}:{usage.partition(':')[2]}"
    return name
