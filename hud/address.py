"""Where things are on an environment's port: the paths of protocol v1, and URL forms.

Deliberately free of heavy imports: the CLI's fast path uses it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from .errors import AddressError

CONTROL_PATH = "/v1/control"
TUNNEL_PREFIX = "/v1/tunnel/"
DEFAULT_URL = "ws://127.0.0.1:8765"


def control_url(url: str) -> str:
    """``ws://host:port`` (or ``http://``, or bare ``host:port``) → the control endpoint URL."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise AddressError(f"unsupported URL scheme {parts.scheme!r} in {url!r}; use ws://")
    try:
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError:
        raise AddressError(f"{url}: the port must be a number from 0 to 65535") from None
    path = parts.path if parts.path not in ("", "/") else CONTROL_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
