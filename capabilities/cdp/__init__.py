"""``cdp/1.3``: a real Chromium per task, driven over the Chrome DevTools Protocol.

Environment side: :class:`Browser` (``env.browser()``). Harness side: :class:`DevTools`
(``await client.open("browser")``), whose ``endpoint`` also serves Playwright's
``connect_over_cdp``.
"""

from .browser import Browser, BrowserLost, TaskBrowser
from .chromium import BrowserFailed, BrowserNotFound, Chromium, find_chromium
from .client import endpoint_url, open_devtools
from .connection import CDPConnection, CDPConnectionLost, CDPError
from .page import DevTools, JavaScriptError, NavigationError, Page

__all__ = [
    "Browser", "BrowserFailed", "BrowserLost", "BrowserNotFound", "CDPConnection",
    "CDPConnectionLost", "CDPError", "Chromium", "DevTools", "JavaScriptError",
    "NavigationError", "Page", "TaskBrowser", "endpoint_url", "find_chromium", "open_devtools",
]
