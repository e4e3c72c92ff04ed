"""The contract an ``openpi/0`` environment publishes, and the checks every action passes.

A contract names the robot, its control rate, and its *features*: each observation stream
and the one action, with role, dtype, shape, optional per-dimension names, bounds (``low`` /
``high``) and normalisation statistics (``stats``, as LeRobot datasets carry them). Feature
names follow LeRobot: ``observation.state``, ``observation.images.<camera>``, ``action``.

:class:`ActionCheck` is what the environment applies to every action it receives: the dtype
must match exactly, the shape must be the feature's (one action) or ``[T, *shape]`` (a chunk
of ``1 <= T <= max_chunk``), values must be finite and within bounds (or are clipped, when
the environment says so). Sans-I/O: msgspec and numpy only.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

import numpy as np
from msgspec import UNSET, Meta, Struct, UnsetType

MAX_DIMS = 8
DType = Literal["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                "float16", "float32", "float64"]
DTYPES: frozenset[str] = frozenset(get_args(DType))
Role = Literal["observation", "action"]
Bound = list[float | None]  # one value for every element, or one for all; None: unbounded


class ActionError(ValueError):
    """An action the contract does not allow; the message says what was expected."""


class Feature(Struct, kw_only=True):
    """One observation stream or the action.

    ``type`` is a hint for adapters (``state``, ``rgb``, ``gray``, ``depth``, ``discrete``,
    ...). ``low``/``high`` hold one bound per element (C order) or a single bound for all;
    ``None`` means unbounded. ``stats`` maps a statistic (``mean``, ``std``, ``min``,
    ``max``, ...) to its values, per element or per last-axis channel.
    """

    role: Role
    dtype: DType
    shape: Annotated[list[Annotated[int, Meta(ge=0)]], Meta(max_length=MAX_DIMS)]
    type: str | UnsetType = UNSET
    names: list[str] | UnsetType = UNSET
    low: Bound | UnsetType = UNSET
    high: Bound | UnsetType = UNSET
    stats: dict[str, list[float]] | UnsetType = UNSET
    description: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        size = math.prod(self.shape)
        for label, bound in (("low", self.low), ("high", self.high)):
            if bound is not UNSET and len(bound) not in (1, size):
                raise ValueError(f"{label} has {len(bound)} values; a feature of shape "
                                 f"{self.shape} needs 1 or {size}")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def normalize(self, value: Any) -> np.ndarray:
        """``(value - mean) / std`` with this feature's stats (float32)."""
        mean, std = self._stat("mean"), self._stat("std")
        normalized: np.ndarray = (np.asarray(value, np.float32) - mean) / np.maximum(std, 1e-8)
        return normalized.astype(np.float32)

    def unnormalize(self, value: Any) -> np.ndarray:
        """The inverse of :meth:`normalize`."""
        std, mean = self._stat("std"), self._stat("mean")
        unnormalized: np.ndarray = np.asarray(value, np.float32) * std + mean
        return unnormalized

    def _stat(self, name: str) -> np.ndarray:
        if self.stats is UNSET or name not in self.stats:
            raise KeyError(f"feature has no {name!r} in its stats")
        return np.asarray(self.stats[name], np.float32)


class Contract(Struct, kw_only=True):
    """What the environment serves: exactly one feature has ``role: action``."""

    robot_type: str
    control_rate: Annotated[float, Meta(gt=0)]
    features: dict[str, Feature]
    max_chunk: Annotated[int, Meta(ge=1)] = 64

    def __post_init__(self) -> None:
        actions = [name for name, f in self.features.items() if f.role == "action"]
        if len(actions) != 1:
            raise ValueError(f"a contract needs exactly one action feature, got {actions}")

    @property
    def action_name(self) -> str:
        return next(name for name, f in self.features.items() if f.role == "action")

    @property
    def action(self) -> Feature:
        return self.features[self.action_name]

    @property
    def observations(self) -> dict[str, Feature]:
        return {name: f for name, f in self.features.items() if f.role == "observation"}

    def observation_bytes(self) -> int:
        return sum(f.nbytes for f in self.observations.values())


def bound_array(bound: Bound | UnsetType, shape: list[int], fill: float) -> np.ndarray | None:
    """A bound as an array broadcastable to ``shape``; None when there is none at all."""
    if bound is UNSET or all(b is None for b in bound):
        return None
    values = np.array([fill if b is None else b for b in bound], dtype=np.float64)
    return values.reshape(()) if len(values) == 1 else values.reshape(shape)


class ActionCheck:
    """Validates actions against one action feature; build once per episode."""

    def __init__(self, feature: Feature, *, max_chunk: int, clip: bool = False) -> None:
        self.feature = feature
        self.dtype = np.dtype(feature.dtype).newbyteorder("<")
        self.shape = tuple(feature.shape)
        self.max_chunk = max_chunk
        self.clip = clip
        self.low = bound_array(feature.low, feature.shape, -math.inf)
        self.high = bound_array(feature.high, feature.shape, math.inf)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` as a chunk ``[T, *shape]``; raises :class:`ActionError` when the
        dtype, shape, finiteness or bounds are wrong (out-of-bounds values are clipped
        instead when ``clip``)."""
        if actions.dtype != self.dtype:
            raise ActionError(f"action dtype is {actions.dtype.name}; the contract wants "
                              f"{self.feature.dtype}")
        chunk = self._as_chunk(actions)
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            raise ActionError("action holds NaN or infinity")
        return self._bounded(chunk)

    def _as_chunk(self, actions: np.ndarray) -> np.ndarray:
        if actions.shape == self.shape:
            return actions.reshape((1, *self.shape))
        if actions.ndim == len(self.shape) + 1 and actions.shape[1:] == self.shape:
            if not 1 <= actions.shape[0] <= self.max_chunk:
                raise ActionError(f"a chunk holds 1 to {self.max_chunk} actions, got "
                                  f"{actions.shape[0]}")
            return actions
        chunk = ", ".join(["T", *map(str, self.shape)])
        raise ActionError(f"action shape is {list(actions.shape)}; the contract wants "
                          f"{list(self.shape)} (one action) or [{chunk}] (a chunk)")

    def _bounded(self, chunk: np.ndarray) -> np.ndarray:
        if self.low is None and self.high is None:
            return chunk
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        outside = (chunk < low) | (chunk > high)
        if not outside.any():
            return chunk
        if self.clip:
            clipped: np.ndarray = np.clip(chunk, low, high)
            return clipped.astype(self.dtype)
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        lo = low if isinstance(low, float) or low.ndim == 0 else low[where[1:]]
        hi = high if isinstance(high, float) or high.ndim == 0 else high[where[1:]]
        raise ActionError(f"action value {chunk[where].item()!r} (action {where[0]}, element "
                          f"{list(where[1:])}) is outside [{lo:g}, {hi:g}]")
