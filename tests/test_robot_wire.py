"""openpi/0 without sockets: arrays, messages, contracts, action checks, queues, schema,
batching and the built-in policies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from hud.capabilities.robot import schema  # noqa: E402
from hud.capabilities.robot.contract import (  # noqa: E402
    DTYPES,
    ActionCheck,
    ActionError,
    Contract,
    Feature,
)
from hud.capabilities.robot.gym import contract_for  # noqa: E402
from hud.capabilities.robot.schedule import ActionQueue, FutureIndex  # noqa: E402
from hud.capabilities.robot.wire import (  # noqa: E402
    Action,
    Array,
    Claim,
    FromAgent,
    ToAgent,
    WireError,
    decode_from_agent,
    decode_to_agent,
    encode,
)
from hud.harnesses.robot import Batcher, Newest, RandomPolicy, cartpole, scripted_policy  # noqa: E402


def test_the_protocol_core_imports_no_io_framework() -> None:
    code = ("import sys, hud.capabilities.robot.wire, hud.capabilities.robot.contract, "
            "hud.capabilities.robot.schedule; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'websockets', 'asyncio', 'anyio', 'uvloop', 'socket'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_arrays_round_trip_every_dtype(dtype: str) -> None:
    value = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    frame = encode(Action(index=7, actions=Array.from_numpy(value)))
    back = decode_from_agent(frame)
    assert isinstance(back, Action) and back.index == 7
    decoded = back.actions.to_numpy()
    assert decoded.dtype.name == dtype and decoded.shape == (2, 3, 4)
    assert np.array_equal(decoded, value)


def test_arrays_travel_little_endian_and_scalars_keep_their_shape() -> None:
    big = np.array([1.5, -2.0], dtype=">f8")
    array = Array.from_numpy(big)
    assert array.dtype == "float64" and array.data == np.array([1.5, -2.0], "<f8").tobytes()
    assert Array.from_numpy(np.int64(3)).to_numpy().shape == ()


def test_arrays_that_cannot_travel_or_do_not_add_up_are_refused() -> None:
    with pytest.raises(WireError, match="cannot travel"):
        Array.from_numpy(np.array([object()]))
    with pytest.raises(WireError, match="cannot travel"):
        Array.from_numpy(np.zeros(2, np.complex64))
    with pytest.raises(WireError, match="needs 16 bytes, got 15"):
        Array(dtype="float32", shape=[4], data=b"x" * 15).to_numpy()


def test_frames_are_typed_msgpack_never_pickle_or_extensions() -> None:
    with pytest.raises(WireError, match="binary"):
        decode_from_agent('{"type": "claim", "token": "t"}')
    with pytest.raises(WireError, match="invalid message"):
        decode_from_agent(b"\x80\x03cos\nsystem\n")  # a pickle
    with pytest.raises(WireError):  # a msgpack extension type
        decode_from_agent(msgspec.msgpack.encode(msgspec.msgpack.Ext(1, b"\x00")))
    numpy_style = {"type": "action", "index": 0,
                   "actions": {b"nd": True, b"type": "<f4", b"shape": [1], b"data": b"abcd"}}
    with pytest.raises(WireError, match="actions"):
        decode_from_agent(msgspec.msgpack.encode(numpy_style))
    bad_dtype = {"type": "action", "index": 0,
                 "actions": {"dtype": "object", "shape": [1], "data": b"x"}}
    with pytest.raises(WireError, match="dtype"):
        decode_from_agent(msgspec.msgpack.encode(bad_dtype))
    with pytest.raises(WireError, match="unknown field `extra`"):
        decode_from_agent(msgspec.msgpack.encode({"type": "claim", "token": "t", "extra": 1}))
    with pytest.raises(WireError, match="type"):
        decode_to_agent(encode(Claim(token="t")))  # an agent's message, sent to an agent
    too_deep = {"type": "action", "index": 0,
                "actions": {"dtype": "uint8", "shape": [1] * 9, "data": b"x"}}
    with pytest.raises(WireError, match="length"):
        decode_from_agent(msgspec.msgpack.encode(too_deep))


def discrete() -> Feature:
    return Feature(role="action", dtype="int64", shape=[], low=[0], high=[1])


def arm() -> Feature:
    return Feature(role="action", dtype="float32", shape=[2], low=[-1, -2], high=[1, 2])


def test_action_check_wants_the_exact_dtype_and_shape_and_returns_a_chunk() -> None:
    check = ActionCheck(discrete(), max_chunk=4)
    assert check(np.array(1)).shape == (1,)
    assert check(np.array([0, 1, 1])).tolist() == [0, 1, 1]
    cases = [(np.array(1.0), "dtype is float64; the contract wants int64"),
             (np.zeros((2, 2), np.int64), r"shape is \[2, 2\]; the contract wants \[\]"),
             (np.zeros(5, np.int64), "1 to 4 actions, got 5"),
             (np.zeros(0, np.int64), "1 to 4 actions, got 0"),
             (np.array(2), r"value 2 \(action 0, element \[\]\) is outside \[0, 1\]")]
    for value, message in cases:
        with pytest.raises(ActionError, match=message):
            check(value)


def test_action_check_bounds_finiteness_and_clipping() -> None:
    check = ActionCheck(arm(), max_chunk=4)
    assert check(np.array([[1, 2], [-1, -2]], np.float32)).shape == (2, 2)
    with pytest.raises(ActionError, match=r"3.0 \(action 1, element \[1\]\) is outside \[-2, 2\]"):
        check(np.array([[0, 0], [0, 3]], np.float32))
    with pytest.raises(ActionError, match="NaN"):
        check(np.array([np.nan, 0], np.float32))
    with pytest.raises(ActionError, match=r"\[T, 2\]"):
        check(np.zeros(3, np.float32))
    clipping = ActionCheck(arm(), max_chunk=4, clip=True)
    assert clipping(np.array([5, -5], np.float32)).tolist() == [[1, -2]]
    with pytest.raises(ActionError, match="NaN"):
        clipping(np.array([np.inf, 0], np.float32))  # never clipped into range


def test_contracts_need_one_action_and_consistent_bounds() -> None:
    state = Feature(role="observation", dtype="float32", shape=[3])
    with pytest.raises(ValueError, match="exactly one action"):
        Contract(robot_type="r", control_rate=10, features={"observation.state": state})
    with pytest.raises(ValueError, match="needs 1 or 3"):
        Feature(role="action", dtype="float32", shape=[3], low=[0, 1])
    with pytest.raises(msgspec.ValidationError, match="control_rate"):
        msgspec.convert({"robot_type": "r", "control_rate": 0, "features": {}}, Contract)


def test_gymnasium_spaces_become_features() -> None:
    cartpole_contract = contract_for(gymnasium.make("CartPole-v1"))
    assert cartpole_contract.robot_type == "gymnasium/CartPole-v1"
    assert cartpole_contract.control_rate == 50.0
    state = cartpole_contract.features["observation.state"]
    assert (state.dtype, state.shape, state.high[1]) == ("float32", [4], None)
    assert msgspec.to_builtins(cartpole_contract.action) == {
        "role": "action", "dtype": "int64", "shape": [], "type": "discrete", "low": [0],
        "high": [1]}
    spaces = gymnasium.spaces

    class Camera(gymnasium.Env):
        metadata = {"render_fps": 15}
        observation_space = spaces.Dict({
            "front": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "joints": spaces.Box(-1, 1, (6,), np.float32)})
        action_space = spaces.MultiDiscrete([3, 2])

    contract = contract_for(Camera(), features={"action": {"names": ["lift", "grip"]}})
    assert set(contract.features) == {"observation.images.front", "observation.joints",
                                      "action"}
    assert contract.features["observation.images.front"].type == "rgb"
    assert (contract.action.high, contract.action.names) == ([2, 1], ["lift", "grip"])
    with pytest.raises(KeyError, match="no feature"):
        contract_for(Camera(), features={"observation.nope": {}})
    with pytest.raises(TypeError, match="no array form"):
        contract_for(type("T", (Camera,), {"action_space": spaces.Text(4)})())


def test_feature_normalisation_uses_its_stats() -> None:
    feature = Feature(role="observation", dtype="float32", shape=[2],
                      stats={"mean": [1.0, 2.0], "std": [2.0, 4.0]})
    assert feature.normalize([3.0, 2.0]).tolist() == [1.0, 0.0]
    assert feature.unnormalize([1.0, 0.0]).tolist() == [3.0, 2.0]
    with pytest.raises(KeyError, match="mean"):
        Feature(role="observation", dtype="float32", shape=[2]).normalize([0, 0])


def test_action_queue_aligns_chunks_to_steps() -> None:
    queue = ActionQueue()
    queue.replace(0, ["a0", "a1", "a2"], current=0)
    assert [queue.pop(0), queue.pop(1)] == ["a0", "a1"] and len(queue) == 1
    assert queue.replace(1, ["b1", "b2", "b3"], current=2) == 1  # b1 is for a step taken
    assert [queue.pop(2), queue.pop(3), queue.pop(4)] == ["b2", "b3", None]
    assert queue.dropped == 1
    queue.replace(4, ["c4", "c5"], current=4)
    assert queue.pop(5) == "c5" and queue.dropped == 2  # c4's step passed (held)
    with pytest.raises(FutureIndex):
        queue.replace(9, ["x"], current=5)


def test_schema_files_are_generated_and_the_examples_validate() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert schema.main(["--check"]) == 0, f"stale: run {schema.FIX_COMMAND}"
    document = json.loads((schema.DIRECTORY / "messages.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(document)
    examples = json.loads((schema.DIRECTORY / "examples.json").read_text())
    for frame in examples:
        validator.validate(frame["message"])
        kind = FromAgent if frame["from"] == "agent" else ToAgent
        msgspec.json.decode(json.dumps(frame["message"]), type=kind)
    assert {f["message"]["type"] for f in examples} == {"claim", "start", "observation",
                                                        "action", "error", "end"}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"type": "action", "index": -1,
                            "actions": {"dtype": "float32", "shape": [], "data": ""}})


@pytest.mark.anyio
async def test_batcher_coalesces_concurrent_requests_in_one_policy_call() -> None:
    seen: list[int] = []

    def policy(batch: dict) -> np.ndarray:
        seen.append(len(batch["task"]))
        return batch["observation.state"][:, :1] * np.array([1, 10])  # [B, T=2]

    contract = contract_for(gymnasium.make("CartPole-v1"))
    batcher = Batcher(policy, contract, max_wait=0.01)
    states = [{"observation.state": np.full(4, i, np.float32)} for i in range(5)]
    chunks = await asyncio.gather(*(batcher(s, f"task {i}") for i, s in enumerate(states)))
    assert seen == [5] and batcher.calls == 1
    assert [c.tolist() for c in chunks] == [[i, 10 * i] for i in range(5)]


@pytest.mark.anyio
async def test_batcher_survives_a_cancelled_leader_and_a_failing_policy() -> None:
    async def slow_leader(batcher: Batcher) -> None:
        await batcher({"observation.state": np.zeros(4, np.float32)})

    contract = contract_for(gymnasium.make("CartPole-v1"))
    batcher = Batcher(cartpole, contract, max_wait=0.05)
    leader = asyncio.create_task(slow_leader(batcher))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(batcher({"observation.state": np.ones(4, np.float32)}))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert (await asyncio.wait_for(follower, 2)).tolist() == [1]  # it took over

    def broken(batch: dict) -> np.ndarray:
        raise RuntimeError("model exploded")

    failing = Batcher(broken, contract)
    results = await asyncio.gather(*(failing({"observation.state": np.zeros(4, np.float32)})
                                     for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    wrong = Batcher(lambda batch: np.zeros(7), contract)
    with pytest.raises(ValueError, match="shape \\[7\\] for a batch of 1"):
        await wrong({"observation.state": np.zeros(4, np.float32)})


def test_random_policy_stays_in_bounds_and_scripted_policies_are_by_robot_type() -> None:
    contract = contract_for(gymnasium.make("Pendulum-v1"))
    actions = RandomPolicy(contract, seed=1)({"task": [""] * 200})
    assert actions.shape == (200, 1) and actions.dtype == np.float32
    assert actions.min() >= -2 and actions.max() <= 2
    discrete_actions = RandomPolicy(contract_for(gymnasium.make("CartPole-v1")), seed=1)(
        {"task": [""] * 50})
    assert set(discrete_actions.tolist()) == {0, 1}
    assert scripted_policy(contract_for(gymnasium.make("CartPole-v1"))) is cartpole
    with pytest.raises(LookupError, match="no scripted controller"):
        scripted_policy(contract)


@pytest.mark.anyio
async def test_the_harness_hands_out_the_newest_observation_then_none() -> None:
    from hud.capabilities.robot.wire import Observation

    newest = Newest()
    for index in range(3):
        newest.put(Observation(index=index, data={}))
    newest.close()
    assert (await newest.get()).index == 2  # the older two were skipped
    assert await newest.get() is None
    assert await newest.get() is None
