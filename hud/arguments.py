"""Template arguments and answers: typed by the template's hints, checked by msgspec.

A template's signature becomes a msgspec Struct type once, when the template is registered.
That one type validates arguments when a task is minted and again on the server, applies
defaults, and yields the JSON Schema published in the manifest, so the three never disagree.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import re
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from .protocol.codec import split_validation_error
from .protocol.errors import InvalidParams

log = logging.getLogger(__name__)

_SCALARS = (str, int, float, bool, type(None))


def _schemable(annotation: Any) -> bool:
    try:
        msgspec.json.schema(annotation)
    except (TypeError, ValueError):
        return False
    return True


def _default(value: Any) -> Any:
    if isinstance(value, _SCALARS) or value == () or value == frozenset():
        return value
    if isinstance(value, (list, dict, set)) and not value:
        return value  # msgspec copies empty mutable defaults itself
    return msgspec.field(default_factory=lambda: copy.deepcopy(value))


class Arguments:
    """The argument contract of one template function."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.template = name
        self.signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        fields: list[tuple[Any, ...]] = []
        self.open_ended = False
        for param in self.signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                self.open_ended = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"template {name!r}: *{param.name} is not supported")
            annotation = hints.get(param.name, Any)
            if not _schemable(annotation):
                log.warning(
                    "template %r: argument %r has a type msgspec cannot check (%r); "
                    "it is accepted as any JSON value",
                    name,
                    param.name,
                    annotation,
                )
                annotation = Any
            if param.default is param.empty:
                fields.append((param.name, annotation))
            else:
                fields.append((param.name, annotation, _default(param.default)))
        self.type = msgspec.defstruct(
            name,
            fields,
            kw_only=True,
            forbid_unknown_fields=not self.open_ended,
        )
        self.names = tuple(f[0] for f in fields)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Positional and keyword arguments of a call, as one mapping (arity checked)."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidParams(str(exc), {"path": "$.params.args"}) from None
        mapping = dict(bound.arguments)
        for param in self.signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                mapping.update(mapping.pop(param.name, {}))
        return mapping

    def validate(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check ``args`` against the hints and apply defaults.

        Returns the keyword arguments to call the template with (typed values) and their
        JSON form (for the wire and for task rows). Raises :class:`InvalidParams` naming the
        JSON path of the first bad argument.
        """
        if not isinstance(args, dict):
            raise InvalidParams("args must be an object", {"path": "$.params.args"})
        try:
            value = msgspec.convert(args, self.type)
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc, "$.params.args")
            raise InvalidParams(self.explain(message, path), {"path": path}) from None
        kwargs = {name: getattr(value, name) for name in self.names}
        if self.open_ended:
            kwargs.update({k: v for k, v in args.items() if k not in kwargs})
        return kwargs, msgspec.to_builtins(kwargs)

    def explain(self, message: str, path: str) -> str:
        """msgspec's ``message`` at ``path`` in the words of the template's signature: which
        argument of which template, the type it wants, and a "did you mean" for a typo."""
        where = f"template {self.template!r}"
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
        if unknown and path == "$.params.args":
            name = unknown.group(1)
            close = difflib.get_close_matches(name, self.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(self.names) or "none"
            return f"{where} has no argument {name!r}{hint}; its arguments: {known}"
        missing = re.fullmatch(r"Object missing required field `(.+)`", message)
        if missing and path == "$.params.args":
            return f"{where}: argument {missing.group(1)!r} is required (it has no default)"
        argument, _, inner = path.removeprefix("$.params.args.").partition(".")
        if path.startswith("$.params.args.") and argument in self.names:
            wrong = re.fullmatch(r"Expected `(.+)`, got `(.+)`", message)
            said = f"must be {wrong.group(1)}, not {wrong.group(2)}" if wrong else message
            at = f" (at {path})" if inner else ""
            return f"{where}: argument {argument!r} {said}{at}"
        return f"{where}: invalid arguments: {message} at {path}"

    def schema(self, title: str, description: str) -> dict[str, Any]:
        """The JSON Schema of the arguments, inlined (shared types under ``$defs``)."""
        return inline_schema(self.type, title=title, description=description)


def inline_schema(tp: Any, **annotations: str) -> dict[str, Any]:
    """JSON Schema for ``tp`` with the top-level reference resolved in place."""
    (root,), components = msgspec.json.schema_components([tp], ref_template="#/$defs/{name}")
    ref = root.get("$ref", "")
    if ref.startswith("#/$defs/"):
        root = components.pop(ref.removeprefix("#/$defs/"))
    schema: dict[str, Any] = {**root, **{k: v for k, v in annotations.items() if v}}
    if components:
        schema["$defs"] = components
    return schema


class AnswerType:
    """Parses an agent's answer into the template's declared ``returns=`` type."""

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self.passthrough = tp is Any or tp is None
        self.decoder = None if self.passthrough else msgspec.json.Decoder(tp)

    def schema(self) -> dict[str, Any]:
        return {} if self.passthrough else inline_schema(self.type)

    def parse(self, answer: Any) -> Any:
        """The answer as the declared type; raises :class:`InvalidParams` at ``$.params.answer``."""
        if self.passthrough:
            return answer
        try:
            if isinstance(answer, str) and self.type is not str:
                try:
                    assert self.decoder is not None
                    return self.decoder.decode(answer)
                except msgspec.ValidationError:
                    raise
                except msgspec.DecodeError:
                    pass  # not JSON: let convert judge the plain string
            return msgspec.convert(answer, self.type)
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc, "$.params.answer")
            raise InvalidParams(f"invalid answer: {message} at {path}", {"path": path}) from None
