"""The ``robot`` capability: an ``openpi/0`` observation/action loop over WebSocket.

Environment side: ``env.gym("CartPole-v1")`` or ``env.robot(factory, contract=...)`` give a
:class:`RobotEndpoint`; templates call ``await robot.reset(...)`` for an :class:`Episode`.
Agent side: :class:`Robot` (``await client.open("robot")``), and the harness in
``hud.harnesses.robot``. The protocol is specified in ``protocol/openpi-0/``.

The protocol core (``wire``, ``contract``, ``schedule``) imports no I/O framework; the names
below load lazily, so importing it does not pull in websockets or asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PROTOCOL": "wire", "EpisodeResult": "wire", "Observation": "wire",
    "ActionError": "contract", "Contract": "contract", "Feature": "contract",
    "Episode": "episode", "Outcome": "episode", "Rules": "episode",
    "RobotEndpoint": "endpoint", "SimulatorError": "simulator",
    "ActionRejected": "client", "Robot": "client", "RobotError": "client",
    "open_robot": "client",
}

__all__ = [
    "PROTOCOL",
    "ActionError",
    "ActionRejected",
    "Contract",
    "Episode",
    "EpisodeResult",
    "Feature",
    "Observation",
    "Outcome",
    "Robot",
    "RobotEndpoint",
    "RobotError",
    "Rules",
    "SimulatorError",
    "open_robot",
]

if TYPE_CHECKING:
    from .client import ActionRejected, Robot, RobotError, open_robot
    from .contract import ActionError, Contract, Feature
    from .endpoint import RobotEndpoint
    from .episode import Episode, Outcome, Rules
    from .simulator import SimulatorError
    from .wire import PROTOCOL, EpisodeResult, Observation


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
