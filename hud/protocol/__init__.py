"""The sans-I/O core of the hud protocol: wire types, errors, codec.

Nothing here imports asyncio, websockets or sockets (a test checks it), so the protocol can
be driven by any transport.
"""

from .errors import HudError
from .messages import PROTOCOL_VERSION, SUPPORTED_VERSIONS

__all__ = ["PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "HudError"]
