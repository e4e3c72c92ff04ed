"""Generates the JSON Schema files of protocol v1 from the wire Structs in :mod:`.messages`.

The files under ``protocol/v1/`` are the language-neutral contract; this module is the only
thing that writes them, so they cannot drift from the types:

* ``envelope.schema.json``: the JSON-RPC 2.0 request, response, error response and error object;
* ``<method>.schema.json``: one per method in ``METHODS``, its params and result types plus a
  ``Request`` and a ``Response`` envelope narrowed to that method;
* ``errors.json``: the error table, from ``ERRORS``.

Three tables of ``protocol/README.md`` are rendered here too, each between its markers
(``<!-- errors:begin -->`` and ``<!-- errors:end -->``, ``methods:``, ``types:``): the error
table, the methods with their members, and the types they share. A member that may be absent
from a message (optional, or left out when it has its default value) is marked ``?``.

Run ``python -m hud.protocol.schema --write`` after changing a Struct or an error, and
``--check`` in CI: it exits 1 and names every file that differs from what the types say.
Like the rest of the protocol core this imports no I/O framework.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .errors import ERRORS, HudError
from .messages import (
    PROTOCOL_VERSION,
    ErrorObject,
    ErrorResponse,
    Request,
    Response,
)
from .methods import METHODS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = f"https://hud.dev/protocol/v{PROTOCOL_VERSION}/"
REF_TEMPLATE = "#/$defs/{name}"
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
"""``protocol/`` of the source checkout this module lives in."""
FIX_COMMAND = "python -m hud.protocol.schema --write"
TABLE_BEGIN = "<!-- errors:begin -->"
TABLE_END = "<!-- errors:end -->"
METHODS_BEGIN = "<!-- methods:begin -->"
METHODS_END = "<!-- methods:end -->"
TYPES_BEGIN = "<!-- types:begin -->"
TYPES_END = "<!-- types:end -->"

# OpenAPI's keyword, which msgspec adds to tagged unions: not JSON Schema, so strict validators
# (ajv's strict mode) reject it. Each member's tag is an `enum` already, so nothing is lost.
_NOT_JSON_SCHEMA = frozenset({"discriminator"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_DATA = frozenset({"default", "enum", "const", "examples"})

# Built with a default member, so the generated schema would not require it; but a Struct
# without omit_defaults always encodes every member, so on the wire it is always there.
_ALWAYS_ENCODED = (Response, ErrorResponse)

# --- the documents ---------------------------------------------------------------------------


def envelope_schema() -> dict[str, Any]:
    """The JSON-RPC 2.0 envelope: what every control frame is, before ``params`` is decoded."""
    defs = _components([_schema_view(Request), Response, ErrorResponse, ErrorObject])
    return _document(
        "envelope",
        "One control frame of protocol v1: a JSON-RPC 2.0 request, response or error "
        "response. `params` and `result` are described per method, in <method>.schema.json.",
        defs,
        {
            "request": "Request",
            "response": "Response",
            "error_response": "ErrorResponse",
            "error": "ErrorObject",
        },
        one_of=["Request", "Response", "ErrorResponse"],
    )


def method_schema(method: str) -> dict[str, Any]:
    """Params and result of ``method``, and the request and response envelopes that carry them."""
    params, result = METHODS[method].params, METHODS[method].result
    defs = _components([params, result])
    envelope = _components([_schema_view(Request), Response])
    defs["Request"] = _narrow_request(envelope["Request"], method, params.__name__, defs)
    defs["Response"] = _narrow_response(envelope["Response"], method, result.__name__)
    summary = _clean(params.__doc__ or "")
    return _document(
        method,
        f"The `{method}` method: request params `{params.__name__}`, result `{result.__name__}`."
        + (f" {summary}" if summary else ""),
        defs,
        {
            "method": method,
            "params": params.__name__,
            "result": result.__name__,
            "request": "Request",
            "response": "Response",
        },
        one_of=["Request", "Response"],
    )


def error_table() -> dict[str, Any]:
    """Every error code of the protocol, in the order of ``ERRORS``."""
    return {
        "protocol_version": PROTOCOL_VERSION,
        "errors": [
            {"code": cls.code, "kind": cls.kind, "class": cls.__name__, "meaning": _meaning(cls)}
            for cls in ERRORS
        ],
    }


def render_error_table(table: dict[str, Any]) -> str:
    """The error table as the Markdown table that ``protocol/README.md`` carries."""
    lines = ["| code | kind | class | meaning |", "| --- | --- | --- | --- |"]
    for row in table["errors"]:
        meaning = row["meaning"].replace("|", "\\|")
        lines.append(f"| {row['code']} | `{row['kind']}` | `{row['class']}` | {meaning} |")
    return "\n".join(lines) + "\n"


def render_method_table() -> str:
    """Every method with the members of its params and result, ``?`` on those that may be
    absent, as the Markdown table of ``protocol/README.md``."""
    lines = ["| method | params | result |", "| --- | --- | --- |"]
    for method, spec in METHODS.items():
        params, result = spec.params, spec.result
        defs = method_schema(method)["$defs"]
        lines.append(f"| `{method}` | {_members(defs[params.__name__], 'none')} | "
                     f"{_members(defs[result.__name__], 'none (`{}`)')} |")
    return "\n".join(lines) + "\n"


def render_type_table() -> str:
    """The types that methods' params and results are made of, with their members."""
    shared: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        doc = method_schema(method)
        roles = set(doc["x-hud"].values())
        shared.update((name, d) for name, d in doc["$defs"].items() if name not in roles)
    lines = ["| type | members |", "| --- | --- |"]
    lines += [f"| `{name}` | {_members(shared[name], 'none')} |" for name in sorted(shared)]
    return "\n".join(lines) + "\n"


def _members(schema: dict[str, Any], empty: str) -> str:
    """``schema``'s members in order, ``?`` after those it does not require."""
    required = set(schema.get("required", ()))
    names = [f"`{n}`" + ("" if n in required else "?") for n in schema.get("properties", {})]
    return ", ".join(names) or empty


def generate() -> dict[str, str]:
    """Every generated file of ``protocol/v1/``, by path relative to ``protocol/``."""
    version_dir = f"v{PROTOCOL_VERSION}"
    files = {f"{version_dir}/envelope.schema.json": dump(envelope_schema())}
    for method in METHODS:
        files[f"{version_dir}/{method}.schema.json"] = dump(method_schema(method))
    files[f"{version_dir}/errors.json"] = dump(error_table())
    return files


def dump(document: Any) -> str:
    """The one serialisation of every generated file: sorted keys, 2-space indent, newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- building blocks -------------------------------------------------------------------------


def _document(
    name: str, description: str, defs: dict[str, Any], roles: dict[str, str], one_of: list[str]
) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_ID}{name}.schema.json",
        "title": f"hud protocol v{PROTOCOL_VERSION}: {name}",
        "description": description,
        "x-hud": {"protocol_version": PROTOCOL_VERSION, **roles},
        "oneOf": [{"$ref": REF_TEMPLATE.format(name=n)} for n in one_of],
        "$defs": defs,
    }


def _components(types: list[Any]) -> dict[str, Any]:
    _, found = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    defs = {name: json_schema_only(schema) for name, schema in found.items()}
    for name, schema in defs.items():
        if "description" in schema:
            schema["description"] = _clean(schema["description"])
        if name in {t.__name__ for t in _ALWAYS_ENCODED}:
            schema["required"] = list(schema["properties"])
    return defs


def json_schema_only(schema: Any) -> Any:
    """``schema`` without the keywords of :data:`_NOT_JSON_SCHEMA`, in every subschema.

    Names in ``properties`` and ``$defs`` and values in ``default``, ``enum`` and ``const``
    are not keywords: they are kept whatever they are called.
    """
    if isinstance(schema, list):
        return [json_schema_only(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA:
            kept[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            kept[key] = {name: json_schema_only(sub) for name, sub in value.items()}
        elif key not in _NOT_JSON_SCHEMA:
            kept[key] = json_schema_only(value)
    return kept


def _narrow_request(
    envelope: dict[str, Any], method: str, params: str, defs: dict[str, Any]
) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(json.dumps(envelope))  # a deep copy
    schema["title"] = f"{method} request"
    schema["properties"]["method"] = {"const": method}
    schema["properties"]["params"] = {"$ref": REF_TEMPLATE.format(name=params)}
    # An absent params decodes as {}: required only when {} would not do.
    if defs[params].get("required"):
        schema["required"].append("params")
    return schema


def _narrow_response(envelope: dict[str, Any], method: str, result: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(json.dumps(envelope))
    schema["title"] = f"{method} response"
    schema["description"] = f"The successful response to a {method} request."
    schema["properties"]["result"] = {"$ref": REF_TEMPLATE.format(name=result)}
    return schema


def _schema_view(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``cls`` with every ``Raw`` member typed ``Any``, which is what ``Raw`` accepts.

    ``Raw`` means "decoded later, by method"; msgspec cannot put a ``Raw`` default in a schema.
    """
    spec: list[Any] = []
    for field in msgspec.structs.fields(cls):
        raw = field.type is msgspec.Raw
        default = field.default
        if isinstance(default, msgspec.Raw):
            default = msgspec.json.decode(default)
        if field.default_factory is not msgspec.NODEFAULT:
            default = msgspec.field(default_factory=field.default_factory)
        typ = Any if raw else field.type
        no_default = default is msgspec.NODEFAULT
        spec.append((field.name, typ) if no_default else (field.name, typ, default))
    config = cls.__struct_config__
    return msgspec.defstruct(
        cls.__name__,
        spec,
        kw_only=True,
        omit_defaults=config.omit_defaults,
        forbid_unknown_fields=config.forbid_unknown_fields,
        namespace={"__doc__": cls.__doc__},
    )


def _clean(text: str) -> str:
    """A docstring as Markdown paragraphs, independent of how Python indents ``__doc__``."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    text = "\n\n".join(p for p in paragraphs if p)
    return text.replace(":class:", "").replace(":func:", "").replace("``", "`")


def _meaning(cls: type[HudError]) -> str:
    """The first paragraph of the class docstring (the kind, spelled out, if it has none)."""
    doc = _clean(cls.__doc__ or "").split("\n\n")[0]
    return doc or cls.kind.replace("_", " ").capitalize() + "."


# --- writing and checking --------------------------------------------------------------------


def expected_files(root: Path) -> dict[Path, str]:
    """Every file this module owns under ``root`` (a ``protocol/`` directory), with its content."""
    files = {root / rel: text for rel, text in generate().items()}
    readme = root / "README.md"
    if readme.exists():
        files[readme] = _with_table(readme.read_text(encoding="utf-8"))
    return files


def drifted(root: Path) -> list[Path]:
    """The files under ``root`` that are missing or differ from what the types generate."""
    return [
        path
        for path, text in expected_files(root).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def write(root: Path) -> list[Path]:
    """Regenerate every drifted file under ``root``; return the ones written."""
    changed = drifted(root)
    expected = expected_files(root)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected[path], encoding="utf-8")
    return changed


def _with_table(readme: str) -> str:
    """``readme`` with each generated table replaced by what the types say now."""
    tables: tuple[tuple[str, str, Callable[[], str]], ...] = (
        (TABLE_BEGIN, TABLE_END, lambda: render_error_table(error_table())),
        (METHODS_BEGIN, METHODS_END, render_method_table),
        (TYPES_BEGIN, TYPES_END, render_type_table),
    )
    for begin, end, render in tables:
        head, found_begin, rest = readme.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not found_begin or not found_end:
            raise ValueError(f"protocol/README.md needs the markers {begin} and {end}")
        readme = f"{head}{begin}\n{render()}{end}{tail}"
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hud.protocol.schema",
        description="Generate protocol/v1/*.schema.json and errors.json from the wire types.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the files")
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is out of date")
    parser.add_argument("--dir", type=Path, default=PROTOCOL_DIR, help="the protocol/ directory")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.dir):
            sys.stderr.write(f"wrote {path}\n")
        return 0
    stale = drifted(args.dir)
    for path in stale:
        sys.stderr.write(f"out of date: {path}\n")
    if stale:
        sys.stderr.write(f"regenerate with: {FIX_COMMAND}\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
