"""Property-based fuzzing of the sans-I/O protocol core, without sockets.

Frames are arbitrary bytes and text, and valid requests mutated the way a hostile or broken
peer would: members deleted, values of the wrong type, deep nesting, huge ids, unicode,
duplicate keys, notifications. A driver feeds them to :class:`ServerConnection` in every
order hypothesis finds, interleaved with ``finish`` and ``cancel_waiting``, and checks:

* nothing raises but :class:`HudError` (and the connection core raises nothing at all);
* every frame gets exactly one reply, with its id, or with id null when the id cannot be read
  (or is too long to echo); a notification gets none;
* every reply is a JSON-RPC response valid against ``protocol/v1/envelope.schema.json``;
* at most one inline and one queued call run at once, queued calls in arrival order, and a
  driver that honours ``saturated`` never has more than ``MAX_WAITING`` frames waiting;
* once every call is finished, nothing is left held, queued or unsent.

The wire never carries lone surrogates (a text frame is valid UTF-8), so text is drawn
without them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hud.protocol import codec
from hud.protocol.connection import (
    MAX_ID_LENGTH,
    MAX_WAITING,
    Call,
    ClientConnection,
    Outcome,
    ServerConnection,
)
from hud.protocol.errors import Cancelled, HudError, TemplateError
from hud.protocol.messages import (
    Body,
    ByeResult,
    CancelResult,
    Fork,
    ForkResult,
    GradeResult,
    ListResult,
    ManifestParams,
    ManifestResult,
    PeerInfo,
    SolveResult,
    StartParams,
    StartResult,
    StatusParams,
    StatusResult,
    TaskRef,
)
from hud.protocol.methods import METHODS, Schedule

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ENVELOPE = jsonschema.Draft202012Validator(json.loads(
    (Path(__file__).parents[1] / "protocol/v1/envelope.schema.json").read_text()))

MANIFEST = {"client": {"name": "fuzz", "version": "0"}, "protocol_versions": ["1"]}
VALID_PARAMS: dict[str, dict[str, Any]] = {
    "manifest": MANIFEST, "tasks.list": {}, "tasks.status": {}, "tasks.cancel": {},
    "tasks.start": {"template": "t", "args": {"word": "ünïcode", "n": 3}},
    "tasks.grade": {"answer": "3", "template": "t"}, "tasks.solve": {}, "bye": {},
    "tasks.fork": {"count": 2},
}
TASK = TaskRef(template="t")
RESULTS: dict[str, Body] = {
    "manifest": ManifestResult(protocol_version="1", session_id="s", resumed=False,
                               environment=PeerInfo(name="e", version="0")),
    "tasks.list": ListResult(templates=[]),
    "tasks.status": StatusResult(sessions=1, tasks=[]),
    "tasks.start": StartResult(session_id="s", task=TASK, prompt="p"),
    "tasks.grade": GradeResult(session_id="s", task=TASK, reward=1.0),
    "tasks.solve": SolveResult(answer="3"),
    "tasks.cancel": CancelResult(cancelled=True),
    "bye": ByeResult(),
    "tasks.fork": ForkResult(session_id="s", sessions=[Fork(
        session_id="s2", url="ws://127.0.0.1:1", token="k", task=TASK, expires_in=1.0)]),
}

text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
huge_ids = (st.integers(min_value=2**63 - 2, max_value=10**600)
            | st.integers(max_value=-(2**63) + 2, min_value=-(10**600))
            | st.text(min_size=MAX_ID_LENGTH - 2, max_size=MAX_ID_LENGTH * 8))


def nest(value: Any, depth: int, kind: str) -> str:
    """``value`` as JSON inside ``depth`` arrays or objects (built as text: no recursion)."""
    inner = json.dumps(value)
    if kind == "list":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


@st.composite
def request_frames(draw: st.DrawFn, index: int) -> str:
    """A valid request with a unique id, then mutated (or not)."""
    method = draw(st.sampled_from(sorted(METHODS)))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": f"q{index}", "method": method,
                               "params": VALID_PARAMS[method]}
    mutation = draw(st.sampled_from(
        ["none", "none", "delete", "swap", "nest", "huge_id", "unicode", "duplicate",
         "notify", "extra"]))
    if mutation == "delete":
        del message[draw(st.sampled_from(sorted(message)))]
    elif mutation == "swap":
        message[draw(st.sampled_from(sorted(message)))] = draw(json_values)
    elif mutation == "huge_id":
        message["id"] = draw(huge_ids)
    elif mutation == "unicode":
        message[draw(st.sampled_from(["method", "id"]))] = draw(text)
    elif mutation == "notify":
        del message["id"]
    elif mutation == "extra":
        message[draw(text)] = draw(json_values)
    ascii_only = draw(st.booleans())
    rendered = json.dumps(message, ensure_ascii=ascii_only)
    if mutation == "nest":  # shallow, or far past any parser's limit (never near ~1,000)
        depth = draw(st.integers(1, 300) | st.integers(2_000, 50_000))
        where = draw(st.sampled_from(["params", "id", "method"]))
        message[where] = "@"
        nested = nest(draw(json_values), depth, draw(st.sampled_from(["list", "dict"])))
        rendered = json.dumps(message).replace('"@"', nested, 1)
    elif mutation == "duplicate":  # a second copy of a member, JSON objects allow it
        key = draw(st.sampled_from(["id", "method", "jsonrpc", "params"]))
        second = json.dumps({key: draw(json_values)})[1:-1]
        rendered = rendered[:-1] + ", " + second + "}"
    return rendered


def frames(index: int) -> st.SearchStrategy[str | bytes]:
    return (request_frames(index) | st.binary(max_size=64) | text
            | json_values.map(json.dumps) | st.just(""))


NO_REPLY = object()


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def expected_id(frame: str | bytes, max_message_size: int) -> object:
    """The id a frame's reply must carry (None: an error with id null), or NO_REPLY."""
    if isinstance(frame, bytes):
        return None
    try:
        value = json.loads(frame, parse_constant=_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if "id" not in value:
        notification = value.get("jsonrpc") == "2.0" and isinstance(value.get("method"), str)
        return NO_REPLY if notification and len(frame) <= max_message_size else None
    rid = value["id"]
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return None
    return None if too_long(rid) else rid


def too_long(rid: Any) -> bool:
    """Over MAX_ID_LENGTH characters, or digits for a number."""
    if isinstance(rid, int):
        return len(str(abs(rid))) > MAX_ID_LENGTH
    return isinstance(rid, str) and len(rid) > MAX_ID_LENGTH


def check_replies(data: list[bytes]) -> list[Any]:
    """Each frame is one valid JSON-RPC response; returns their ids."""
    ids = []
    for payload in data:
        reply = json.loads(payload)
        ENVELOPE.validate(reply)
        assert "method" not in reply, reply
        assert ("result" in reply) != ("error" in reply), reply
        assert not too_long(reply["id"]), "an overlong id was echoed"
        ids.append(reply["id"])
    return ids


class Driver:
    """Runs a ServerConnection as hud.control does, minus the I/O, and keeps the books."""

    def __init__(self, max_message_size: int) -> None:
        self.core = ServerConnection(max_message_size=max_message_size)
        self.running: list[Call] = []
        self.queued_order: list[str] = []
        self.expected: collections.Counter[Any] = collections.Counter()
        self.got: collections.Counter[Any] = collections.Counter()
        self.sent: list[bytes] = []

    def receive(self, frame: str | bytes) -> None:
        rid = expected_id(frame, self.core.max_message_size)
        if rid is not NO_REPLY:
            self.expected[json.dumps(rid)] += 1
        self.start(self.core.receive(frame))

    def finish(self, pick: int, how: str) -> None:
        if self.running:
            call = self.running.pop(pick % len(self.running))
            outcome: Outcome = {"ok": RESULTS[call.method.name],
                                "error": TemplateError("grader failed in phase grade"),
                                "cancel": Cancelled("cancelled")}[how]
            self.start(self.core.finish(call, outcome))

    def cancel_waiting(self) -> None:
        self.core.cancel_waiting("fuzz")
        self.check()

    def start(self, calls: list[Call]) -> None:
        for call in calls:
            if call.method.schedule is Schedule.QUEUED and isinstance(call.id, str):
                self.queued_order.append(call.id)
        self.running += calls
        self.check()

    def check(self) -> None:
        data = self.core.data_to_send()
        self.sent += data
        for rid in check_replies(data):
            self.got[json.dumps(rid)] += 1
        inline = [c for c in self.running if c.method.schedule is Schedule.INLINE]
        queued = [c for c in self.running if c.method.schedule is Schedule.QUEUED]
        assert len(inline) <= 1 and len(queued) <= 1, self.running
        assert len(self.core._held or ()) + len(self.core._queued or ()) <= MAX_WAITING

    def drain(self) -> None:
        while self.running:
            self.finish(0, "ok")
        assert self.core.idle and not self.core._held and not self.core.saturated
        assert self.core.data_to_send() == []


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Operations on one connection: frames in, calls finished, waiting calls cancelled."""
    ops: list[tuple[Any, ...]] = [("receive", json.dumps(
        {"jsonrpc": "2.0", "id": "q0", "method": "manifest", "params": MANIFEST}))]
    for index in range(1, draw(st.integers(1, 40))):
        op = draw(st.sampled_from(["receive", "receive", "receive", "finish", "cancel"]))
        if op == "receive":
            ops.append(("receive", draw(frames(index))))
        elif op == "finish":
            ops.append(("finish", draw(st.integers(0, 3)),
                        draw(st.sampled_from(["ok", "ok", "error", "cancel"]))))
        else:
            ops.append(("cancel",))
    return ops


def run_script(driver: Driver, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        if op[0] == "receive":
            if driver.core.saturated:  # the driver stops reading: the peer waits
                driver.finish(0, "ok")
            driver.receive(op[1])
        elif op[0] == "finish":
            driver.finish(op[1], op[2])
        else:
            driver.cancel_waiting()
    driver.drain()
    assert driver.got == driver.expected
    ordered = [int(rid[1:]) for rid in driver.queued_order if re.fullmatch(r"q\d+", rid)]
    if len(set(ordered)) == len(ordered):  # a mutated id may repeat one: then say nothing
        assert ordered == sorted(ordered), "queued requests ran out of arrival order"


@FUZZ
@given(scripts(), st.sampled_from([1 << 20, 256]))
def test_server_core_answers_every_frame_once(ops: list[tuple[Any, ...]], limit: int) -> None:
    run_script(Driver(limit), ops)


@FUZZ
@given(st.lists(frames(0), max_size=20))
def test_frames_behind_a_running_request_are_answered_in_turn(batch: list[str | bytes]) -> None:
    """Everything pipelined behind manifest waits, then is answered when it finishes."""
    driver = Driver(1 << 20)
    ops: list[tuple[Any, ...]] = [("receive", json.dumps(
        {"jsonrpc": "2.0", "id": "q0", "method": "manifest", "params": MANIFEST}))]
    run_script(driver, ops + [("receive", frame) for frame in batch])


def test_a_flood_of_queued_requests_saturates_then_drains() -> None:
    driver = Driver(1 << 20)
    driver.receive(json.dumps({"jsonrpc": "2.0", "id": "q0", "method": "manifest",
                               "params": MANIFEST}))
    driver.finish(0, "ok")
    sent = 0
    while not driver.core.saturated:
        sent += 1
        driver.receive(json.dumps({"jsonrpc": "2.0", "id": sent, "method": "tasks.grade"}))
    assert sent == MAX_WAITING + 1  # one runs, MAX_WAITING wait their turn
    driver.drain()
    assert driver.got == driver.expected and sum(driver.got.values()) == sent + 1


OVERLONG_IDS = [
    '{"jsonrpc":"2.0","id":"' + "x" * (MAX_ID_LENGTH + 1) + '","method":7}',
    '{"jsonrpc":"2.0","id":' + "9" * (MAX_ID_LENGTH + 1) + ',"method":"tasks.list"}',
    '{"id":"' + "x" * 100_000 + '"}',
]


def test_an_overlong_id_is_never_echoed() -> None:
    """Regression: an invalid request's id was echoed whatever its length (issue 13, item 4)."""
    for data in OVERLONG_IDS:
        core = ServerConnection(max_message_size=1 << 20)
        assert core.receive(data) == []
        [reply] = check_replies(core.data_to_send())
        assert reply is None


# --- the codec and the client core -------------------------------------------------------------


@FUZZ
@given(frames(0) | st.binary())
def test_codec_raises_only_protocol_errors(frame: str | bytes) -> None:
    rid = codec.request_id_of(frame)
    assert rid is None or isinstance(rid, int | str)
    with contextlib.suppress(HudError):
        codec.decode_reply(frame)
    try:
        request = codec.decode_request(frame)
        codec.decode_params(request)
    except HudError as exc:
        assert exc.code in {-32700, -32600, -32601, -32602}, exc
        check_replies([codec.encode_error(None, exc)])


def client_requests() -> tuple[ClientConnection, list[int]]:
    client = ClientConnection()
    ids = [client.send("manifest", ManifestParams(
        client=PeerInfo(name="fuzz", version="0"), protocol_versions=["1"]))[0]]
    ids.append(client.send("tasks.status", StatusParams())[0])
    ids.append(client.send("tasks.start", StartParams(template="t"))[0])
    return client, ids


@FUZZ
@given(st.lists(frames(0) | json_values.map(lambda v: json.dumps(
    {"jsonrpc": "2.0", "id": 2, "result": v})), max_size=10))
def test_client_core_survives_any_reply(batch: list[str | bytes]) -> None:
    client, ids = client_requests()
    for frame in batch:
        try:
            reply = client.receive(frame)
        except HudError:
            continue
        if reply is not None:
            assert reply.id in ids and reply.id not in client.pending
            assert isinstance(reply.outcome, Body | HudError)


@FUZZ
@given(st.lists(st.sampled_from(["ok", "error", "cancel"]), min_size=3, max_size=3),
       st.permutations([0, 1, 2]))
def test_client_and_server_cores_agree(hows: list[str], picks: list[int]) -> None:
    """Requests from the client core, through the server core, back to the client core:
    each id is matched exactly once, whatever order the calls finish in and however."""
    client = ClientConnection()
    driver = Driver(1 << 20)
    for method, params in (("manifest", ManifestParams(
            client=PeerInfo(name="fuzz", version="0"), protocol_versions=["1"])),
            ("tasks.status", StatusParams()), ("tasks.start", StartParams(template="t"))):
        driver.start(driver.core.receive(client.send(method, params)[1].decode()))
        for pick, how in zip(picks, hows, strict=True):
            driver.finish(pick, how)
    driver.drain()
    matched = [client.receive(payload) for payload in driver.sent]
    assert sorted(r.id for r in matched if r is not None) == [1, 2, 3]
    assert client.pending == []
    assert [client.receive(payload) for payload in driver.sent] == [None] * 3
