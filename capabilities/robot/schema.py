"""Generates ``protocol/openpi-0/`` from the wire Structs: the schema and golden messages.

* ``messages.schema.json``: every message (JSON Schema 2020-12). The wire is msgpack, not
  JSON: a ``bytes`` member (``Array.data``) is msgpack *bin*, which the JSON form of a
  message (and this schema) shows as a base64 string.
* ``examples.json``: one short episode, frame by frame, each message in its JSON form.

``python -m hud.capabilities.robot.schema --write`` rewrites both; ``--check`` exits 1 and
names each file that differs from what the types say.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from hud.protocol.schema import json_schema_only

from .contract import Contract, Feature
from .wire import (
    PROTOCOL,
    Action,
    Array,
    Claim,
    End,
    EpisodeResult,
    Error,
    Observation,
    Start,
    ToAgent,
)

DIRECTORY = Path(__file__).resolve().parents[2] / "protocol" / "openpi-0"
FIX_COMMAND = "python -m hud.capabilities.robot.schema --write"
REF = "#/$defs/{name}"


def messages_schema() -> dict[str, Any]:
    (agent, env), found = msgspec.json.schema_components([Claim | Action, ToAgent],
                                                         ref_template=REF)
    # Plain JSON Schema (no OpenAPI discriminator), which strict validators accept.
    agent, env = json_schema_only(agent), json_schema_only(env)
    defs = {name: json_schema_only(schema) for name, schema in found.items()}
    for schema in defs.values():
        if "description" in schema:
            schema["description"] = inspect.cleandoc(schema["description"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://hud.dev/protocol/openpi-0/messages.schema.json",
        "title": f"{PROTOCOL}: one message per binary WebSocket frame (msgpack)",
        "description": "Agent to environment: claim, action. Environment to agent: start, "
                       "observation, error, end. `type` names the message. Array.data is "
                       "msgpack bin on the wire (a base64 string in this JSON form).",
        "x-openpi": {"protocol": PROTOCOL, "from_agent": agent, "to_agent": env},
        "oneOf": [agent, env],
        "$defs": defs,
    }


def example_episode() -> list[dict[str, Any]]:
    """A two-step CartPole episode in lockstep, as the messages' JSON forms."""
    contract = Contract(robot_type="gymnasium/CartPole-v1", control_rate=50.0, features={
        "observation.state": Feature(role="observation", dtype="float32", shape=[4],
                                     type="state", names=["x", "x_dot", "theta", "theta_dot"],
                                     low=[-4.8, None, -0.418, None],
                                     high=[4.8, None, 0.418, None]),
        "action": Feature(role="action", dtype="int64", shape=[], type="discrete", low=[0],
                          high=[1])})
    state = [np.array([0.01, 0.0, -0.02, 0.0], np.float32),
             np.array([0.01, 0.2, -0.02, -0.3], np.float32)]
    frames: list[tuple[str, str, Any]] = [
        ("agent", "claim the episode with the token from the task's bindings",
         Claim(token="3q2-GiTYlqvMgO1nzWrx2uXL", client="hud")),
        ("environment", "the claim is accepted",
         Start(episode="ep-5f0c1d2e3a4b5c6d", contract=contract, pace="lockstep",
               max_steps=2, action_timeout=10.0, prompt="Balance the pole for 2 steps.",
               seed=0)),
        ("environment", "observation 0: the world after reset",
         Observation(index=0, data={"observation.state": Array.from_numpy(state[0])})),
        ("agent", "a chunk of two actions answering observation 0",
         Action(index=0, actions=Array.from_numpy(np.array([1, 0], np.int64)))),
        ("environment", "observation 1; one action is still queued",
         Observation(index=1, data={"observation.state": Array.from_numpy(state[1])},
                     reward=1.0, queued=1)),
        ("agent", "a float action for an int64 action feature",
         Action(index=1, actions=Array.from_numpy(np.array(0.5, np.float64)))),
        ("environment", "refused, with no effect; the episode goes on",
         Error(code="invalid_action", index=1,
               message="action dtype is float64; the contract wants int64")),
        ("environment", "observation 2, after the queued action; max_steps reached",
         Observation(index=2, data={"observation.state": Array.from_numpy(state[1])},
                     reward=1.0, truncated=True)),
        ("environment", "the episode's result; the connection then closes (1000)",
         End(result=EpisodeResult(episode="ep-5f0c1d2e3a4b5c6d", status="completed",
                                  success=True, episode_return=2.0, steps=2, truncated=True,
                                  reason="truncated after 2 steps", invalid_actions=1))),
    ]
    return [{"from": who, "description": what, "message": msgspec.to_builtins(message)}
            for who, what, message in frames]


def generate() -> dict[str, str]:
    return {"messages.schema.json": dump(messages_schema()),
            "examples.json": dump(example_episode())}


def dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files")
    parser.add_argument("--check", action="store_true", help="exit 1 if any file differs")
    args = parser.parse_args(argv)
    stale = [name for name, text in generate().items()
             if not (DIRECTORY / name).exists() or (DIRECTORY / name).read_text() != text]
    if args.write:
        DIRECTORY.mkdir(parents=True, exist_ok=True)
        for name, text in generate().items():
            (DIRECTORY / name).write_text(text)
        return 0
    for name in stale:
        sys.stderr.write(f"protocol/openpi-0/{name} is stale; run: {FIX_COMMAND}\n")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
