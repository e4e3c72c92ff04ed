"""Gymnasium environments as ``openpi/0`` robots: spaces mapped to the contract.

=====================  ===========================================================
space                  feature
=====================  ===========================================================
``Box``                its dtype and shape, ``low``/``high`` from the space (``None``
                       where infinite); uint8 ``[H, W, 1|3|4]`` is a camera
``Discrete(n, s)``     int64, shape ``[]``, bounds ``[s, s + n - 1]``
``MultiDiscrete``      int64, the space's shape, bounds ``[start, start + nvec - 1]``
``MultiBinary``        int8, the space's shape, bounds ``[0, 1]``
``Dict`` / ``Tuple``   one feature per entry (observations only)
=====================  ===========================================================

Observation names follow LeRobot: a single state space is ``observation.state``, a single
camera ``observation.image``, entries of a ``Dict`` are ``observation.<key>`` (cameras
``observation.images.<key>``). The action is ``action``. Gymnasium is imported lazily.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from msgspec import UNSET

from .contract import Contract, Feature, Role
from .endpoint import RobotEndpoint
from .episode import Outcome, Rules, SuccessRule

if TYPE_CHECKING:
    from hud.environment import Environment

DEFAULT_RATE = 10.0


def gym_endpoint(target: Any, *, name: str = "robot", control_rate: float | None = None,
                 robot_type: str | None = None,
                 features: Mapping[str, Mapping[str, Any]] | None = None, max_chunk: int = 64,
                 success: SuccessRule | None = None, max_episodes: int = 64,
                 threaded: bool = True, make_kwargs: Mapping[str, Any] | None = None,
                 **rules: Any) -> RobotEndpoint:
    """An endpoint serving ``target`` (a Gymnasium id, an ``EnvSpec``, or a factory).

    The contract comes from the spaces (``control_rate``, ``robot_type`` and per-feature
    ``features`` override it); ``rules`` are the fields of :class:`~.episode.Rules`
    (``pace``, ``max_steps``, ``action_timeout``, ``max_invalid``, ``clip_actions``).
    Without ``success``, an episode succeeds when the last step's info says so
    (``is_success``/``success``), else when its return reaches the spec's
    ``reward_threshold``.
    """
    factory = make_factory(target, **(make_kwargs or {}))

    def describe(sim: Any) -> tuple[Contract, GymAdapter]:
        contract = contract_for(sim, rate=control_rate, robot=robot_type, features=features,
                                max_chunk=max_chunk)
        return contract, GymAdapter(sim, contract)

    return RobotEndpoint(factory, describe, name=name, rules=Rules(**rules),
                         success=success or spec_success(target), max_episodes=max_episodes,
                         threaded=threaded)


def spec_success(target: Any) -> SuccessRule:
    """Success from the info (``is_success``/``success``), else the spec's
    ``reward_threshold`` (for a Gymnasium id or spec), else never."""
    threshold = None
    if not callable(target):  # an id or an EnvSpec
        import gymnasium

        with contextlib.suppress(Exception):
            spec = gymnasium.spec(target) if isinstance(target, str) else target
            threshold = getattr(spec, "reward_threshold", None)

    def success(outcome: Outcome) -> bool:
        for key in ("is_success", "success"):
            if key in outcome.info:
                return bool(outcome.info[key])
        return threshold is not None and outcome.episode_return >= threshold

    return success


def make_factory(target: Any, **make_kwargs: Any) -> Any:
    """A zero-argument factory: ``target`` is a Gymnasium id (``"CartPole-v1"``), an
    ``EnvSpec``, or already a callable that returns a fresh environment."""
    if callable(target) and not isinstance(target, str):
        return target

    def make() -> Any:
        import gymnasium

        return gymnasium.make(target, **make_kwargs)

    return make


def robot_type(env: Any) -> str:
    spec = getattr(env, "spec", None)
    return f"gymnasium/{spec.id}" if spec is not None else type(env.unwrapped).__name__


def control_rate(env: Any) -> float:
    """``render_fps`` from the metadata, else ``1 / dt``, else 10 Hz."""
    fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    if fps:
        return float(fps)
    dt = getattr(env.unwrapped, "dt", None)
    return 1.0 / float(dt) if isinstance(dt, (int, float)) and dt > 0 else DEFAULT_RATE


def space_feature(space: Any, role: Role) -> Feature:
    """One feature for a non-composite space; ``TypeError`` for spaces with no array form."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        kind = "rgb" if _is_camera(space) else "state"
        # numpy names a Box's (numeric) dtype as a str, not as the DType literal
        return Feature(role=role, dtype=space.dtype.name, shape=list(space.shape),  # type: ignore[arg-type]
                       type=kind if role == "observation" else "continuous",
                       low=_bound(space.low), high=_bound(space.high))
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return Feature(role=role, dtype="int64", shape=[], type="discrete", low=[start],
                       high=[start + int(space.n) - 1])
    if isinstance(space, spaces.MultiDiscrete):
        starts = np.asarray(space.start).ravel()
        return Feature(role=role, dtype="int64", shape=list(space.shape), type="discrete",
                       low=[int(v) for v in starts],
                       high=[int(v) for v in starts + np.asarray(space.nvec).ravel() - 1])
    if isinstance(space, spaces.MultiBinary):
        return Feature(role=role, dtype="int8", shape=list(space.shape), type="binary",
                       low=[0], high=[1])
    raise TypeError(f"the {type(space).__name__} space has no array form for the contract; "
                    "wrap the environment so that it uses Box/Discrete/Dict spaces")


def contract_for(env: Any, *, rate: float | None = None, robot: str | None = None,
                 features: Mapping[str, Mapping[str, Any]] | None = None,
                 max_chunk: int = 64) -> Contract:
    """The contract of a Gymnasium environment. ``features`` overrides members per feature
    (``names``, ``stats``, ``description``...), e.g. ``{"action": {"names": ["push"]}}``."""
    derived = dict(observation_features(env.observation_space))
    derived["action"] = space_feature(env.action_space, "action")
    for name, changes in (features or {}).items():
        if name not in derived:
            raise KeyError(f"no feature {name!r} to override (features: {sorted(derived)})")
        derived[name] = _replace(derived[name], changes)
    return Contract(robot_type=robot or robot_type(env), control_rate=rate or control_rate(env),
                    features=derived, max_chunk=max_chunk)


def observation_features(space: Any, prefix: str = "observation") -> dict[str, Feature]:
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        items: list[tuple[str, Any]] = list(space.spaces.items())
    elif isinstance(space, spaces.Tuple):
        items = [(str(i), sub) for i, sub in enumerate(space.spaces)]
    else:
        camera = isinstance(space, spaces.Box) and _is_camera(space)
        return {f"{prefix}.{'image' if camera else 'state'}": space_feature(space, "observation")}
    found: dict[str, Feature] = {}
    for key, sub in items:
        if isinstance(sub, (spaces.Dict, spaces.Tuple)):
            found.update(observation_features(sub, f"{prefix}.{key}"))
        else:
            images = isinstance(sub, spaces.Box) and _is_camera(sub)
            name = f"{prefix}.images.{key}" if images else f"{prefix}.{key}"
            found[name] = space_feature(sub, "observation")
    return found


class GymAdapter:
    """Observations flattened to the contract's features; actions to the space's form."""

    def __init__(self, env: Any, contract: Contract) -> None:
        from gymnasium import spaces

        self.names = list(contract.observations)
        self.dtypes = [np.dtype(contract.features[n].dtype) for n in self.names]
        self.single = not isinstance(env.observation_space, (spaces.Dict, spaces.Tuple))
        self.discrete = isinstance(env.action_space, spaces.Discrete)

    def observe(self, observation: Any) -> dict[str, np.ndarray]:
        if self.single:
            return {self.names[0]: np.asarray(observation, self.dtypes[0])}
        leaves = list(_leaves(observation))
        return {name: np.asarray(leaf, dtype)
                for name, dtype, leaf in zip(self.names, self.dtypes, leaves, strict=True)}

    def act(self, action: np.ndarray) -> Any:
        return int(action) if self.discrete else action


def _leaves(value: Any) -> Any:
    if isinstance(value, Mapping):
        for sub in value.values():
            yield from _leaves(sub)
    elif isinstance(value, tuple):
        for sub in value:
            yield from _leaves(sub)
    else:
        yield value


def _is_camera(space: Any) -> bool:
    return space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)


def _bound(values: np.ndarray) -> list[float | None]:
    flat = [None if not math.isfinite(v) else float(v) for v in np.asarray(values).ravel()]
    return flat[:1] if len(set(flat)) == 1 else flat


def _replace(feature: Feature, changes: Mapping[str, Any]) -> Feature:
    import msgspec

    merged = {k: v for k, v in msgspec.structs.asdict(feature).items() if v is not UNSET}
    return msgspec.convert({**merged, **changes}, Feature)


def declare_gym(env: Environment, target: Any, /, **options: Any) -> RobotEndpoint:
    """The ``hud.capabilities.env`` entry point ``gym`` (``env.gym(target)``): serve
    :func:`gym_endpoint` of ``target`` and ``options`` on ``env``."""
    return gym_endpoint(target, **options).attach(env)
