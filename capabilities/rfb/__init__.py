"""``rfb/3.8``: a virtual X display per task, seen and driven over VNC.

Environment side: :class:`Desktop` (``env.desktop(width, height)``). Harness side:
:class:`Screen` (``await client.open("screen")``): PNG screenshots, mouse and keyboard.
"""

from .client import Screen, open_screen
from .desktop import Desktop, TaskDesktop
from .display import DisplayFailed, DisplayNotFound, VirtualDisplay
from .handshake import RFBRefused
from .png import encode_png

__all__ = [
    "Desktop", "DisplayFailed", "DisplayNotFound", "RFBRefused", "Screen", "TaskDesktop",
    "VirtualDisplay", "encode_png", "open_screen",
]
