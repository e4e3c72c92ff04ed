"""Request bodies checked against a provider SDK's own request types (its ``TypedDict``s).

The SDKs generate these types from the providers' OpenAPI specs, so a body the types refuse is
one the API refuses: a missing required key, a key the type does not have (an output-only
field such as ``created_by`` sent back as input), a value of the wrong kind. :func:`violation`
names the first one by its JSON path, the way the APIs do (``input[2].created_by``).
"""

from __future__ import annotations

import collections.abc
import functools
import types
import typing
from typing import Any, NotRequired, Required

from typing_extensions import ReadOnly, is_typeddict

_WRAPPERS = {Required, NotRequired, ReadOnly}
_SEQUENCES = {list, tuple, collections.abc.Iterable, collections.abc.Sequence}


def violation(value: Any, kind: Any, path: str = "") -> tuple[str, str, str] | None:
    """The first way ``value`` breaks type ``kind``: ``(code, param, message)``, or None.
    ``code`` is ``unknown_parameter``, ``missing_required_parameter`` or ``invalid_type``."""
    kind = unwrap(kind)
    if kind in (Any, object):
        return None
    if is_typeddict(kind):
        return _typeddict(value, kind, path)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        ok = value in typing.get_args(kind)
        return None if ok else _bad(path, f"one of {list(typing.get_args(kind))}", value)
    if origin in (typing.Union, types.UnionType):
        return _union(value, typing.get_args(kind), path)
    if origin in _SEQUENCES or getattr(origin, "__name__", "") == "SequenceNotStr":
        return _sequence(value, kind, path)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return _bad(path, "an object", value)
        item = typing.get_args(kind)[1] if typing.get_args(kind) else Any
        return _first(violation(v, item, f"{path}.{k}") for k, v in value.items())
    return _scalar(value, kind, path)


def unwrap(kind: Any) -> Any:
    while True:
        origin = typing.get_origin(kind)
        if origin in _WRAPPERS or origin is typing.Annotated:
            kind = typing.get_args(kind)[0]
        else:
            return kind


@functools.cache
def typeddict_fields(kind: Any) -> tuple[dict[str, Any], frozenset[str]]:
    hints = typing.get_type_hints(kind, include_extras=True)
    required = {name for name, hint in hints.items()
                if typing.get_origin(hint) is Required
                or (kind.__total__ and typing.get_origin(hint) is not NotRequired)}
    return hints, frozenset(required)


def _typeddict(value: Any, kind: Any, path: str) -> tuple[str, str, str] | None:
    if not isinstance(value, dict):
        return _bad(path, "an object", value)
    hints, required = typeddict_fields(kind)
    for key in value:
        if key not in hints:
            where = f"{path}.{key}" if path else key
            return "unknown_parameter", where, f"Unknown parameter: '{where}'."
    for key in sorted(required - set(value)):
        where = f"{path}.{key}" if path else key
        return "missing_required_parameter", where, f"Missing required parameter: '{where}'."
    return _first(violation(v, hints[k], f"{path}.{k}" if path else k) for k, v in value.items())


def _union(value: Any, options: tuple[Any, ...], path: str) -> tuple[str, str, str] | None:
    if value is None and type(None) in options:
        return None
    options = tuple(o for o in options if o is not type(None))
    tagged = [o for o in options if _tag_matches(unwrap(o), value)]
    if tagged:  # an untagged plain mapping beside the tagged shapes (Anthropic's InputSchema)
        tagged += [o for o in options if typing.get_origin(unwrap(o)) in (dict,
                                                                         collections.abc.Mapping)]
    failures = [violation(value, option, path) for option in tagged or options]
    if any(f is None for f in failures):
        return None
    found = [f for f in failures if f is not None]
    deepest = max(found, key=lambda f: len(f[1]))  # the option that matched furthest
    return deepest if len(deepest[1]) > len(path) else _bad(
        path, "one of the documented shapes", value)


def _tag_matches(kind: Any, value: Any) -> bool:
    """Whether ``value``'s tag (``type``, else ``role``) is the literal tag of the TypedDict
    ``kind``: a tagged union is checked against its tag's member only."""
    if not (is_typeddict(kind) and isinstance(value, dict)):
        return False
    hints = typeddict_fields(kind)[0]
    for key in ("type", "role"):
        tag = unwrap(hints.get(key, Any))
        if key in value and typing.get_origin(tag) is typing.Literal:
            return value[key] in typing.get_args(tag)
    return False


def _sequence(value: Any, kind: Any, path: str) -> tuple[str, str, str] | None:
    if not isinstance(value, list):
        return _bad(path, "an array", value)
    args = typing.get_args(kind)
    item = args[0] if args else Any
    return _first(violation(v, item, f"{path}[{i}]") for i, v in enumerate(value))


def _scalar(value: Any, kind: Any, path: str) -> tuple[str, str, str] | None:
    if kind is type(None):
        return None if value is None else _bad(path, "null", value)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(kind, type):
        ok = isinstance(value, kind)
    else:
        ok = True  # a type this checker does not model (a Protocol, a TypeVar): no claim
    return None if ok else _bad(path, getattr(kind, "__name__", str(kind)), value)


def _bad(path: str, expected: str, value: Any) -> tuple[str, str, str]:
    return ("invalid_type", path, f"Invalid type for '{path}': expected {expected}, but got "
            f"{type(value).__name__} ({str(value)[:80]!r}).")


def _first(found: collections.abc.Iterable[tuple[str, str, str] | None]
           ) -> tuple[str, str, str] | None:
    return next((f for f in found if f is not None), None)
