"""The graders under the name the HUD docs use: ``from hud.native import BashGrader, Grade``.

An alias of :mod:`hud.graders`; everything is defined there.
"""

from __future__ import annotations

from .graders import *  # noqa: F403
from .graders import __all__ as __all__
