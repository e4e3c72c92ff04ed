"""Where things are on an environment's port: the paths of protocol v1, and URL forms.

Deliberately free of heavy imports: the CLI's fast path uses it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from .errors import AddressError

CONTROL_PATH = "/v1/control"
TUNNEL_PREFIX = "/v1/tunnel/"
DEFAULT_URL = "ws://127.0.0.1:8765"


@functools.lru_cache(maxsize=256)  # a client dials the same few URLs again and again
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


@functools.lru_cache(maxsize=256)  # ipaddress's parser is pure Python
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def host_of(url: str) -> str:
    """The host ``url`` names (empty if none)."""
    return urlsplit(url).hostname or ""


def numeric_family(host: str) -> socket.AddressFamily | None:
    """The family of a numeric address (``127.0.0.1``, ``::1``), else None: a name needs a
    resolver. ``inet_pton`` rather than ``ipaddress``: in a fresh pool worker, the first
    use of that module's pure-Python parser costs more than binding a port."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None
