"""Check a JSON request body against a provider SDK's own request ``TypedDict``s.

:func:`problem` walks the value and the type together: a TypedDict must have its
``Required`` keys and no others; a union of TypedDicts is told apart by its ``type``
literal; lists, dicts, literals and scalars are checked as such. It answers the first
problem as ``"path: what"`` (the API's own way of naming a field), or ``None``.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from functools import cache
from typing import Any

import typing_extensions as te

_SEQUENCES = (collections.abc.Iterable, collections.abc.Sequence, list, typing.List)  # noqa: UP006
_SCALARS = {str: str, int: int, float: (int, float), bool: bool}


def problem(value: Any, hint: Any, path: str = "body") -> str | None:
    """The first way ``value`` breaks ``hint``, or ``None``."""
    origin, args = te.get_origin(hint), te.get_args(hint)
    if hint in (Any, object) or isinstance(hint, typing.TypeVar):
        return None
    if origin in (te.Required, te.NotRequired, te.Annotated):
        return problem(value, args[0], path)
    if te.is_typeddict(hint):
        return _typeddict(value, hint, path)
    if origin in (typing.Union, types.UnionType):
        return _union(value, args, path)
    if origin is te.Literal or origin is typing.Literal:
        return None if value in args else f"{path}: Input should be one of {list(args)}"
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            return f"{path}: Input should be a valid list"
        return next(filter(None, (problem(v, args[0], f"{path}.{i}")
                                  for i, v in enumerate(value))), None)
    if origin in (dict, collections.abc.Mapping, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            return f"{path}: Input should be a valid dictionary"
        return next(filter(None, (problem(v, args[1], f"{path}.{k}")
                                  for k, v in value.items())), None) if args else None
    if hint is type(None):
        return None if value is None else f"{path}: Input should be null"
    expected = _SCALARS.get(hint)
    if expected is not None and (not isinstance(value, expected) or (
            hint is not bool and isinstance(value, bool))):
        return f"{path}: Input should be a valid {hint.__name__}"
    return None


@cache
def _hints(typed: Any) -> dict[str, Any]:
    return te.get_type_hints(typed, include_extras=True)


def _typeddict(value: Any, typed: Any, path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path}: Input should be an object"
    hints = _hints(typed)
    for key, hint in hints.items():
        if te.get_origin(hint) is te.Required and key not in value:
            return f"{path}.{key}: Field required"
    for key, item in value.items():
        if key not in hints:
            return f"{path}.{key}: Extra inputs are not permitted"
        found = problem(item, hints[key], f"{path}.{key}")
        if found:
            return found
    return None


def _union(value: Any, members: tuple[Any, ...], path: str) -> str | None:
    # The SDKs also accept their response objects as input (serialised by the SDK): those are
    # a convenience of the client, not the wire contract; the request types alone define it.
    members = tuple(m for m in members if not _response_model(m))
    for tag in ("type", "role"):  # the discriminators the SDKs' unions use
        tagged = [m for m in members if te.is_typeddict(m) and tag in _hints(m)]
        if not (isinstance(value, dict) and tagged and tag in value):
            continue
        matching = [m for m in tagged if problem(value[tag], _hints(m)[tag]) is None]
        untagged = [m for m in members if m not in tagged]  # e.g. a plain Dict[str, object]
        if not matching and not untagged:
            tags = sorted({t for m in tagged for t in _literals(_hints(m)[tag])})
            return (f"{path}: Input tag '{value[tag]}' found using '{tag}' does not match "
                    f"any of the expected tags: {', '.join(repr(t) for t in tags)}")
        members = (*matching, *untagged)
    found = [problem(value, member, path) for member in members]
    if None in found:
        return None
    return max(found, key=lambda text: len(str(text).partition(":")[0]))  # the deepest


def _literals(hint: Any) -> list[str]:
    if te.get_origin(hint) in (te.Literal, typing.Literal):
        return [a for a in te.get_args(hint) if isinstance(a, str)]
    return [t for a in te.get_args(hint) for t in _literals(a)]


def _response_model(hint: Any) -> bool:
    if te.get_origin(hint) is te.Annotated:
        return _response_model(te.get_args(hint)[0])
    if te.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_response_model(a) for a in te.get_args(hint))
    return isinstance(hint, type) and hasattr(hint, "model_fields")
