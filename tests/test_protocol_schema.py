"""``protocol/`` is the contract: its schemas, golden examples and prose agree with the wire types.

Every golden example must pass both checkers, the JSON Schema files (what a client in another
language uses) and the msgspec types (what hud uses), and every broken message must fail both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource

from hud.protocol import codec, messages, schema
from hud.protocol.errors import ERRORS, HudError, error_from_wire
from hud.protocol.messages import UNSET, ErrorObject
from hud.protocol.methods import METHODS

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
V1 = PROTOCOL / "v1"
README = PROTOCOL / "README.md"
SCHEMA_FILES = sorted(V1.glob("*.schema.json"))
EXAMPLE_FILES = sorted((V1 / "examples").glob("*.json"))
CODES = {cls.code for cls in ERRORS}


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


REGISTRY: Registry = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in map(load, SCHEMA_FILES)
)
EXAMPLES = {path.stem: load(path) for path in EXAMPLE_FILES}


def validator(schema_file: str, name: str) -> Draft202012Validator:
    """A validator for one ``$defs`` entry of one schema file."""
    schema_id = load(V1 / schema_file)["$id"]
    return Draft202012Validator({"$ref": f"{schema_id}#/$defs/{name}"}, registry=REGISTRY)


def method_of(schema_file: str) -> str:
    return str(load(V1 / schema_file)["x-hud"]["method"])


def as_json(data: bytes) -> Any:
    return json.loads(data)


# --- (a) the files are what the types generate -----------------------------------------------


def test_schema_files_match_the_types() -> None:
    stale = [str(p.relative_to(PROTOCOL.parent)) for p in schema.drifted(PROTOCOL)]
    assert not stale, f"out of date: {', '.join(stale)}; regenerate with `{schema.FIX_COMMAND}`"


def test_every_method_has_a_schema_file() -> None:
    names = {p.name for p in V1.glob("*.json")}
    expected = {f"{m}.schema.json" for m in METHODS} | {"envelope.schema.json", "errors.json"}
    assert names == expected


def test_check_reports_drift_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "README.md").write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "v1" / "bye.schema.json").write_text("{}\n", encoding="utf-8")
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bye.schema.json" in err and "envelope.schema.json" in err
    assert schema.FIX_COMMAND in err
    assert schema.main(["--write", "--dir", str(tmp_path)]) == 0
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 0


def test_output_is_deterministic() -> None:
    assert schema.generate() == schema.generate()
    for text in schema.generate().values():
        assert text.endswith("}\n")
        assert text == schema.dump(json.loads(text))


# --- (b) the schema files are valid 2020-12 schemas ------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    doc = load(path)
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == f"https://hud.dev/protocol/v1/{path.name}"
    assert doc["title"] and doc["description"]
    roles = {k: v for k, v in doc["x-hud"].items() if k not in {"method", "protocol_version"}}
    assert set(roles.values()) <= set(doc["$defs"]), "x-hud names a def that does not exist"


def test_generated_schemas_carry_no_openapi_keywords() -> None:
    union = {"anyOf": [{"$ref": "#/$defs/A"}], "discriminator": {"propertyName": "type"}}
    doc = {
        "properties": {"discriminator": union},  # a member that happens to bear the name
        "default": {"discriminator": 1},  # data, not a schema
        "items": union,
    }
    assert schema.json_schema_only(doc) == {
        "properties": {"discriminator": {"anyOf": [{"$ref": "#/$defs/A"}]}},
        "default": {"discriminator": 1},
        "items": {"anyOf": [{"$ref": "#/$defs/A"}]},
    }


TOOLS = PROTOCOL / "tools"
CHECK_SCRIPT = TOOLS / "check-schemas.mjs"


def run_ajv(protocol_dir: Path) -> subprocess.CompletedProcess[str]:
    """``check-schemas.mjs`` on ``protocol_dir``: ajv's strict mode over every schema file and
    golden example. Skips where Node or ajv is missing (CI installs both: ``.ci/install``)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs npm)")
    if not (TOOLS / "node_modules" / "ajv").is_dir():
        pytest.skip("ajv is not installed: run `npm ci --prefix protocol/tools`")
    return subprocess.run([node, str(CHECK_SCRIPT), str(protocol_dir)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_schemas_compile_and_examples_validate_under_ajv_strict_mode() -> None:
    done = run_ajv(PROTOCOL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")


def test_ajv_check_names_what_strict_mode_rejects(tmp_path: Path) -> None:
    copy = tmp_path / "protocol"
    shutil.copytree(PROTOCOL, copy, ignore=shutil.ignore_patterns("tools"))
    start = copy / "v1" / "tasks.start.schema.json"
    doc = load(start)
    doc["$defs"]["StartParams"]["discriminator"] = {"propertyName": "template"}
    start.write_text(json.dumps(doc), encoding="utf-8")
    bye = copy / "v1" / "examples" / "bye.request.json"
    example = load(bye)
    example["message"]["id"] = [4]
    bye.write_text(json.dumps(example), encoding="utf-8")
    done = run_ajv(copy)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any("tasks.start.schema.json: does not compile in strict mode" in line
               and 'unknown keyword: "discriminator"' in line for line in lines), done.stderr
    assert any(line.startswith(f"{bye}: invalid Request: /id") for line in lines), done.stderr


# --- (c) golden examples pass both checkers and round-trip -----------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_validates_against_its_schema(name: str) -> None:
    example = EXAMPLES[name]
    assert set(example) == {"schema", "def", "description", "message"}
    validator(example["schema"], example["def"]).validate(example["message"])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_decodes_and_round_trips(name: str) -> None:
    example = EXAMPLES[name]
    message = example["message"]
    encoded = ROUND_TRIPS.get(example["def"], round_trip_body)(example["schema"], example, message)
    assert encoded == message


def round_trip_request(schema_file: str, example: Any, message: Any) -> Any:
    request = codec.decode_request(json.dumps(message))
    params = codec.decode_params(request)
    assert request.method == method_of(schema_file)
    assert isinstance(params, METHODS[request.method].params)
    # encode_request always sends params; an example may leave an empty one out.
    encoded = as_json(codec.encode_request(request.id, request.method, params))
    if "params" not in message and encoded["params"] == {}:
        del encoded["params"]
    return encoded


def round_trip_response(schema_file: str, example: Any, message: Any) -> Any:
    reply = codec.decode_reply(json.dumps(message))
    assert reply.error is UNSET and reply.result is not UNSET
    method = method_of(schema_file)
    result = codec.decode_result(method, reply.result)
    assert isinstance(result, METHODS[method].result)
    return as_json(codec.encode_result(reply.id, result))


def round_trip_error_response(schema_file: str, example: Any, message: Any) -> Any:
    reply = codec.decode_reply(json.dumps(message))
    assert reply.result is UNSET and reply.error is not UNSET
    error = wire_error(reply.error)
    return as_json(codec.encode_error(reply.id, error))


def round_trip_error_object(schema_file: str, example: Any, message: Any) -> Any:
    error = wire_error(msgspec.convert(message, ErrorObject))
    return msgspec.to_builtins(ErrorObject(code=error.code, message=error.message))


def round_trip_body(schema_file: str, example: Any, message: Any) -> Any:
    body = msgspec.convert(message, getattr(messages, example["def"]))
    return msgspec.to_builtins(body)


def wire_error(obj: ErrorObject) -> HudError:
    """The exception a client raises for ``obj``: a class of ``ERRORS`` with the same code."""
    error = error_from_wire(obj.code, obj.message, None if obj.data is UNSET else obj.data)
    assert type(error) in ERRORS and error.code == obj.code
    return error


ROUND_TRIPS = {
    "Request": round_trip_request,
    "Response": round_trip_response,
    "ErrorResponse": round_trip_error_response,
    "ErrorObject": round_trip_error_object,
}


def test_examples_cover_every_method() -> None:
    covered = {(e["schema"], e["def"]) for e in EXAMPLES.values()}
    for method in METHODS:
        assert (f"{method}.schema.json", "Request") in covered, f"no {method} request example"
        assert (f"{method}.schema.json", "Response") in covered, f"no {method} response example"


def test_examples_cover_every_error_code() -> None:
    assert set(errors_by_kind()) == {cls.kind for cls in ERRORS}


REQUIRED_DATA = {
    "invalid_params": "path",
    "ambiguous_sessions": "sessions",
    "template_error": "phase",
    "unsupported_version": "supported",
    "limit_exceeded": "limit",
    "cannot_fork": "cause",
}


@pytest.mark.parametrize(("kind", "member"), sorted(REQUIRED_DATA.items()))
def test_error_examples_carry_their_data(kind: str, member: str) -> None:
    assert member in errors_by_kind()[kind].get("data", {})


def errors_by_kind() -> dict[str, dict[str, Any]]:
    """The error object of every error example, by kind."""
    kinds = {cls.code: cls.kind for cls in ERRORS}
    found: dict[str, dict[str, Any]] = {}
    for example in EXAMPLES.values():
        message = example["message"]
        error = message.get("error", message if example["def"] == "ErrorObject" else None)
        if error is not None:
            found[kinds[error["code"]]] = error
    return found


def results_of(method: str) -> list[dict[str, Any]]:
    return [
        e["message"]["result"]
        for e in EXAMPLES.values()
        if e["schema"] == f"{method}.schema.json" and e["def"] == "Response"
    ]


def test_examples_cover_the_shapes_of_a_rollout() -> None:
    manifests = results_of("manifest")
    assert any(not m.get("resumed", False) for m in manifests)
    assert any(m.get("resumed") and "task" in m for m in manifests)
    starts = results_of("tasks.start")
    assert any(isinstance(s["prompt"], str) for s in starts)
    blocks = [b for s in starts if isinstance(s["prompt"], list) for b in s["prompt"]]
    assert {b["type"] for b in blocks} == {"text", "image"}
    assert any("messages" in s for s in starts)
    assert any(s.get("bindings") for s in starts)
    assert any("subscores" in g and "info" in g for g in results_of("tasks.grade"))
    protocols = {c["protocol"] for m in manifests for c in m.get("capabilities", [])}
    assert protocols >= {"ssh/2", "mcp/2025-11-25", "cdp/1.3", "rfb/3.8", "openpi/0"}


# --- (d) the error table and the prose agree with ERRORS -------------------------------------


def test_errors_json_lists_every_error() -> None:
    rows = load(V1 / "errors.json")["errors"]
    assert [(r["code"], r["kind"], r["class"]) for r in rows] == [
        (cls.code, cls.kind, cls.__name__) for cls in ERRORS
    ]


def test_readme_table_lists_every_error() -> None:
    text = README.read_text(encoding="utf-8")
    table = text.split(schema.TABLE_BEGIN, 1)[1].split(schema.TABLE_END, 1)[0]
    rows = re.findall(r"^\| (-\d+) \| `(\w+)` \|", table, flags=re.MULTILINE)
    assert {(int(code), kind) for code, kind in rows} == {(c.code, c.kind) for c in ERRORS}


def test_readme_transcript_is_the_golden_examples() -> None:
    text = README.read_text(encoding="utf-8").split("## A rollout", 1)[1]
    frames = re.findall(r"`examples/([\w.]+)\.json`\)\s*```json\n(.*?)```", text, flags=re.DOTALL)
    assert [name for name, _ in frames] == [
        f"{step}.{side}"
        for step in ("manifest", "tasks.start.text", "tasks.grade", "bye")
        for side in ("request", "response")
    ]
    for name, block in frames:
        assert json.loads(block) == EXAMPLES[name]["message"], f"README differs from {name}"


# --- (e) the protocol core stays sans-I/O -----------------------------------------------------


def test_protocol_core_imports_no_io_framework() -> None:
    code = (
        "import sys, hud.protocol.codec, hud.protocol.schema; "
        "bad={'asyncio','websockets','socket','anyio'} & set(sys.modules); print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- (f) broken messages fail both checkers ---------------------------------------------------

START = {"jsonrpc": "2.0", "id": 2, "method": "tasks.start"}
BROKEN = {
    "args as a list": (
        "tasks.start.schema.json",
        "Request",
        {**START, "params": {"template": "count_files", "args": ["/srv/data"]}},
    ),
    "unknown params member": (
        "tasks.start.schema.json",
        "Request",
        {**START, "params": {"template": "count_files", "argz": {}}},
    ),
    "manifest without versions": (
        "manifest.schema.json",
        "Request",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "manifest",
            "params": {"client": {"name": "c", "version": "0"}},
        },
    ),
    "reward as a string": (
        "tasks.grade.schema.json",
        "Response",
        {
            "jsonrpc": "2.0",
            "id": 3,
            "result": {"session_id": "sess-1", "task": {"template": "t"}, "reward": "high"},
        },
    ),
    "image without mime_type": (
        "tasks.start.schema.json",
        "Response",
        {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {
                "session_id": "sess-1",
                "task": {"template": "t"},
                "prompt": [{"type": "image", "data": "iVBORw0KGgo="}],
            },
        },
    ),
    "error code as a string": (
        "envelope.schema.json",
        "ErrorResponse",
        {"jsonrpc": "2.0", "id": 1, "error": {"code": "-32602", "message": "bad"}},
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_message_fails_both_checkers(case: str) -> None:
    schema_file, name, message = BROKEN[case]
    with pytest.raises(SchemaError):
        validator(schema_file, name).validate(message)
    with pytest.raises((HudError, msgspec.ValidationError)):
        ROUND_TRIPS[name](schema_file, {"def": name}, message)


def test_args_as_a_list_is_invalid_params_at_its_path() -> None:
    _, _, message = BROKEN["args as a list"]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(message["params"], messages.StartParams)
    request = codec.decode_request(json.dumps(message))
    with pytest.raises(HudError) as caught:
        codec.decode_params(request)
    assert caught.value.code == -32602
    assert caught.value.data == {"path": "$.params.args"}
