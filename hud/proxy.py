"""HTTP proxies between a client and an environment: which one the environment variables
name for a URL (:func:`from_environment`), and a TCP connection through one to a host and
port (:func:`dial`, an HTTP ``CONNECT``, RFC 9110 section 9.3.6).

Every connection a client makes to an environment goes through the same proxy: its control
connection, and each capability's tunnel. A proxy is named by an ``http://`` URL, with
``user:password@`` for Basic authentication where it asks for it. The variables are those
Python's ``urllib`` and ``requests`` read, lower case first: ``ws_proxy``/``wss_proxy``, else
``http_proxy`` for ``ws://`` and ``https_proxy`` for ``wss://``, else ``all_proxy``; and
``no_proxy``, hosts to reach directly (names and their suffixes, ``*``, and, for a numeric
host, addresses and networks such as ``10.0.0.0/8``). A loopback host is always reached
directly. A proxy of another kind (``socks5://``, ``https://``) is an error, not a silent
direct connection.

The module imports asyncio and the tunnels' code only in :func:`dial`: the CLI's fast path
(:mod:`hud.cli.quick`, which does without asyncio) asks it for a URL's proxy.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import socket
from urllib.parse import unquote, urlsplit

from . import __version__
from .address import is_loopback

MAX_HEAD = 16384
"""Bytes a proxy's answer to ``CONNECT`` may take up to its blank line."""


class ProxyError(OSError):
    """A proxy that cannot be used, could not be reached, or refused the connection; its
    message names the proxy (without its credentials) and what went wrong."""


def from_environment(url: str) -> str | None:
    """The proxy URL the environment variables give for ``url`` (``ws://`` or ``wss://``),
    or None: none is set, ``no_proxy`` names its host, or the host is a loopback one."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or is_loopback(host):
        return None
    import urllib.request  # (imported here: http.client, email and more come with it)

    secure = parts.scheme in ("wss", "https")
    proxies = urllib.request.getproxies_environment()
    for scheme in (("wss", "https") if secure else ("ws", "http")) + ("all",):
        proxy = proxies.get(scheme)
        if proxy:
            break
    else:
        return None
    port = parts.port or (443 if secure else 80)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # (no stub)
    if bypass(f"{host}:{port}", proxies) or _in_networks(host, proxies.get("no", "")):
        return None
    return proxy


def _in_networks(host: str, no_proxy: str) -> bool:
    """Whether a numeric ``host`` is in an address or network that ``no_proxy`` lists
    (``urllib`` matches names only; ``requests`` and curl match these too)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.replace(" ", ",").split(","):
        try:
            if address in ipaddress.ip_network(entry.strip().strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False


def _split(proxy: str) -> tuple[str, str, str]:
    """(scheme, credentials, the rest) of a proxy URL, with no scheme meaning ``http``, as
    for curl and ``urllib``. The credentials end at the last ``@`` before the path, so a
    password holding ``/``, ``#`` or ``@`` unescaped is still taken whole."""
    scheme, sep, rest = proxy.partition("://")
    if not sep:
        scheme, rest = "http", proxy
    authority = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
    credentials, at, _ = rest.rpartition(f"@{authority}")
    return scheme.lower(), credentials if at else "", authority


def describe(proxy: str) -> str:
    """``proxy`` as an error message may name it: without its credentials."""
    scheme, _, authority = _split(proxy)
    return f"{scheme}://{authority}"


def _address(proxy: str) -> tuple[str, int, str | None]:
    """(host, port, ``Proxy-Authorization`` value or None) of an ``http://`` proxy URL."""
    scheme, credentials, authority = _split(proxy)
    if scheme != "http":
        raise ProxyError(f"cannot use the proxy {describe(proxy)}: hud speaks to HTTP proxies "
                         "(http://) only; name the environment's host in no_proxy to reach "
                         "it directly")
    try:
        parts = urlsplit(f"http://{authority}")
        port = parts.port or 80
    except ValueError:
        raise ProxyError(f"cannot use the proxy {describe(proxy)}: its host and port are not "
                         "host:port (a port from 1 to 65535)") from None
    if not parts.hostname:
        raise ProxyError(f"cannot use the proxy {describe(proxy)}: it names no host")
    value = None
    if credentials:
        user, _, password = credentials.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}"
        value = "Basic " + base64.b64encode(pair.encode()).decode()
    return parts.hostname, port, value


async def dial(proxy: str, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host:port`` through ``proxy``: the proxy's
    ``200`` is read and not a byte past it, so what follows is the target's alone. Raises
    :class:`ProxyError` naming the proxy when it cannot be used or reached, says no, or has
    not connected within ``timeout`` seconds (reaching it, then its answer, each within
    that)."""
    import asyncio

    from .tunnel import dial as dial_tcp

    proxy_host, proxy_port, credentials = _address(proxy)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            sock = await dial_tcp(proxy_host, proxy_port)
    except TimeoutError:
        raise ProxyError(f"cannot reach the proxy {describe(proxy)} within {timeout:g} s") \
            from None
    except OSError as exc:
        raise ProxyError(f"cannot reach the proxy {describe(proxy)}: {_why(exc)}") from None
    try:
        async with asyncio.timeout(timeout):
            await _connect(sock, proxy, credentials, authority)
    except TimeoutError:
        sock.close()
        raise ProxyError(f"the proxy {describe(proxy)} did not connect to {authority} "
                         f"within {timeout:g} s") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _why(exc: OSError) -> str:
    """An ``OSError``'s cause in words: the resolver's own (``gaierror``'s codes are not
    ``errno``'s), else the system's for its ``errno`` (uvloop's messages name a call)."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def _connect(sock: socket.socket, proxy: str, credentials: str | None,
                   authority: str) -> None:
    """Ask the proxy on ``sock`` to connect to ``authority``; return once it has."""
    import asyncio

    from .splicedtunnel import read_through

    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}",
             f"User-Agent: hud/{__version__}"]
    if credentials is not None:
        lines.append(f"Proxy-Authorization: {credentials}")
    await asyncio.get_running_loop().sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        head = await read_through(sock, b"\r\n\r\n", MAX_HEAD, "the proxy")
    except OSError as exc:
        raise ProxyError(f"the proxy {describe(proxy)} did not answer CONNECT {authority}: "
                         f"{exc}") from None
    status_line, *fields = head.decode("latin-1").split("\r\n")
    words = status_line.split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isascii() \
            or not words[1].isdigit():
        raise ProxyError(f"the proxy {describe(proxy)} answered CONNECT {authority} with "
                         f"something other than HTTP: {status_line[:80]!r}")
    if 200 <= int(words[1]) < 300:
        return
    hint = ""
    if words[1] in ("401", "407"):
        asks = [value.strip().split(" ", 1)[0] for name, _, value in
                (field.partition(":") for field in fields)
                if name.strip().lower() in ("proxy-authenticate", "www-authenticate")]
        if asks and not any(scheme.lower() == "basic" for scheme in asks):
            hint = f" (it asks for {', '.join(asks)} authentication; hud sends Basic only)"
        elif credentials is None:
            hint = " (its credentials go in the proxy URL: http://user:password@host:port)"
        else:
            hint = " (it refused the credentials in the proxy URL)"
    raise ProxyError(f"the proxy {describe(proxy)} refused CONNECT {authority}: "
                     f"HTTP {' '.join(words[1:])}{hint}")


async def dial_url(proxy: str, url: str, timeout: float = 10.0) -> socket.socket:
    """:func:`dial` to the host and port of ``url`` (``ws://``, ``wss://``, or a tunnel's
    URL on the same server)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return await dial(proxy, parts.hostname or "", port, timeout)


def configured(proxy: str | bool | None, url: str) -> str | None:
    """The proxy a client given ``proxy`` uses for ``url``: ``True``, the environment
    variables' (:func:`from_environment`); ``None`` (or ``False``), none; a URL, that one."""
    if proxy is True:
        return from_environment(url)
    return proxy or None
