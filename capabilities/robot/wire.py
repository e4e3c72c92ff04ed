"""The ``openpi/0`` wire: one msgspec Struct per message, arrays as raw bytes, no pickle.

Every WebSocket frame is BINARY and holds one msgpack map; its ``type`` member names the
message. Arrays travel as :class:`Array` (``dtype`` from a fixed list of little-endian numeric
types, ``shape``, C-order ``data`` bytes), so decoding never runs code and never builds an
object the schema does not name. ``protocol/openpi-0/messages.schema.json`` is generated from
these types (``python -m hud.capabilities.robot.schema --write``).

This module is sans-I/O: it imports msgspec and numpy only.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np
from msgspec import UNSET, Meta, Struct, UnsetType

from .contract import DTYPES, MAX_DIMS, Contract, DType

T = TypeVar("T")

PROTOCOL = "openpi/0"

Pace = Literal["realtime", "lockstep"]
Status = Literal["completed", "failed", "crashed", "cancelled"]
ErrorCode = Literal["invalid_message", "invalid_action", "unknown_token", "token_used",
                    "policy_timeout", "simulator_error"]
Dim = Annotated[int, Meta(ge=0)]
Index = Annotated[int, Meta(ge=0)]


# Little-endian (or byte-order-free) dtypes by name; tobytes() of these is the wire form.
_NAMES = {dtype: name for name in DTYPES
          for dtype in (np.dtype(name).newbyteorder("<"), np.dtype(name))
          if dtype.byteorder in "<|" or (dtype.byteorder == "=" and sys.byteorder == "little")}


class WireError(ValueError):
    """A frame that is not a valid ``openpi/0`` message; the message says what is wrong."""


class Array(Struct, kw_only=True):
    """An n-dimensional array: ``data`` is the C-order little-endian bytes of ``dtype``."""

    dtype: DType
    shape: Annotated[list[Dim], Meta(max_length=MAX_DIMS)]
    data: bytes

    @classmethod
    def from_numpy(cls, value: Any) -> Array:
        """Any array-like whose dtype is one of :data:`DTYPES`; raises ``WireError`` else."""
        array = np.asarray(value)
        name = _NAMES.get(array.dtype)  # dtype.name is slow; this is the hot path
        if name is None:
            name = array.dtype.name
            if name not in DTYPES:
                raise WireError(f"dtype {array.dtype} cannot travel: use one of "
                                f"{sorted(DTYPES)}")
            array = array.astype(array.dtype.newbyteorder("<"))
        return cls(dtype=name, shape=list(array.shape), data=array.tobytes())  # type: ignore[arg-type]

    def to_numpy(self) -> np.ndarray:
        """A read-only view of ``data``; raises ``WireError`` when the sizes disagree."""
        dtype = np.dtype(self.dtype).newbyteorder("<")
        expected = math.prod(self.shape) * dtype.itemsize
        if len(self.data) != expected:
            raise WireError(f"array of {self.dtype} {self.shape} needs {expected} bytes, "
                            f"got {len(self.data)}")
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape)


class Message(Struct, kw_only=True, tag_field="type"):
    """Base of every message; ``type`` is its tag."""


# --- agent → environment (unknown members are refused) -----------------------------------


class Claim(Message, tag="claim", forbid_unknown_fields=True):
    """The first frame on a connection: the episode's one-time token (from the bindings)."""

    token: str
    client: str | UnsetType = UNSET


class Action(Message, tag="action", forbid_unknown_fields=True):
    """One action (shape of the action feature) or a chunk (``[T, *shape]``).

    ``actions[i]`` is for the step after observation ``index + i``; entries for steps
    already taken are dropped, and a new message replaces whatever was still queued.
    """

    index: Index
    actions: Array


# --- environment → agent (agents ignore unknown members: v0 may grow) ----------------------


class Start(Message, tag="start"):
    """Sent once the claim is accepted, before the first observation."""

    episode: str
    contract: Contract
    pace: Pace
    max_steps: Annotated[int, Meta(ge=1)]
    action_timeout: Annotated[float, Meta(gt=0)]
    prompt: str | UnsetType = UNSET
    seed: int | UnsetType = UNSET


class Observation(Message, tag="observation"):
    """The world after step ``index`` (0: after reset). ``reward`` is that step's reward;
    ``queued`` counts actions still waiting to run."""

    index: Index
    data: dict[str, Array]
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    queued: Index = 0

    def arrays(self) -> dict[str, np.ndarray]:
        """The observation's features as numpy arrays (read-only views)."""
        return {name: array.to_numpy() for name, array in self.data.items()}


class Error(Message, tag="error"):
    """A refused frame (``fatal`` false: the episode goes on, the frame had no effect) or
    the reason the connection is about to close (``fatal`` true)."""

    code: ErrorCode
    message: str
    fatal: bool = False
    index: Index | UnsetType = UNSET


class EpisodeResult(Struct, kw_only=True):
    """How an episode ended. ``success`` is only ever true for ``completed`` episodes.

    Templates may yield it as the reward: :attr:`reward` is 1.0 on success, else 0.0, and
    :attr:`info` carries the rest.
    """

    episode: str
    status: Status
    success: bool
    episode_return: float
    steps: Index
    terminated: bool = False
    truncated: bool = False
    reason: str = ""
    late_ticks: Index = 0
    dropped_actions: Index = 0
    invalid_actions: Index = 0

    @property
    def reward(self) -> float:
        return 1.0 if self.success else 0.0

    @property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = msgspec.to_builtins(self)
        return info


class End(Message, tag="end"):
    """The last message: the episode is over; the environment then closes the connection."""

    result: EpisodeResult


FromAgent = Claim | Action
ToAgent = Start | Observation | Error | End

_encoder = msgspec.msgpack.Encoder()
_from_agent: msgspec.msgpack.Decoder[FromAgent] = msgspec.msgpack.Decoder(FromAgent)
_to_agent: msgspec.msgpack.Decoder[ToAgent] = msgspec.msgpack.Decoder(ToAgent)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_from_agent(frame: bytes | str) -> Claim | Action:
    """Decode a frame an agent sent; raises :class:`WireError` naming the problem."""
    return _decode(_from_agent, frame)


def decode_to_agent(frame: bytes | str) -> Start | Observation | Error | End:
    """Decode a frame an environment sent; raises :class:`WireError` naming the problem."""
    return _decode(_to_agent, frame)


def _decode(decoder: msgspec.msgpack.Decoder[T], frame: bytes | str) -> T:
    if isinstance(frame, str):
        raise WireError("frames must be binary (msgpack), not text")
    try:
        return decoder.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise WireError(f"invalid message: {exc}") from None
