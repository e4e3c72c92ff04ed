"""HTTP proxies between a client and an environment: which one the environment variables
name for a URL (:func:`from_environment`), and a TCP connection through one to a host and
port (:func:`dial`, an HTTP ``CONNECT``, RFC 9110 section 9.3.6).

Every connection a client makes to an environment goes through the same proxy: its control
connection, and each capability's tunnel. A proxy is named by an ``http://`` URL, with
``user:password@`` for Basic authentication where it asks for it; the variables are those
of curl and most HTTP clients: ``ws_proxy``/``wss_proxy``, else ``http_proxy`` for
``ws://`` and ``https_proxy`` for ``wss://``, else ``all_proxy`` (each also upper case), and
``no_proxy`` for the hosts to reach directly. A loopback host is always reached directly.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from urllib.parse import unquote, urlsplit

from .address import is_loopback
from .splicedtunnel import read_through
from .tunnel import dial as dial_tcp

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
    if bypass(f"{host}:{port}", proxies):
        return None
    return proxy


def describe(proxy: str) -> str:
    """``proxy`` as an error message may name it: without its credentials."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}"


def _address(proxy: str) -> tuple[str, int, str | None]:
    """(host, port, ``Proxy-Authorization`` value or None) of an ``http://`` proxy URL; a
    URL without a scheme is taken as ``http://`` (as curl and ``urllib`` do)."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http":
        raise ProxyError(f"cannot use the proxy {describe(proxy)}: hud speaks to HTTP proxies "
                         "(http://) only; name the environment's host in no_proxy to reach "
                         "it directly")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyError(f"cannot use the proxy {describe(proxy)}: its port is not a number") \
            from None
    if not parts.hostname:
        raise ProxyError(f"cannot use the proxy {proxy!r}: it names no host")
    credentials = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        credentials = "Basic " + base64.b64encode(pair.encode()).decode()
    return parts.hostname, port, credentials


async def dial(proxy: str, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host:port`` through ``proxy``: the proxy's
    ``200`` is read and not a byte past it, so what follows is the target's alone. Raises
    :class:`ProxyError` naming the proxy when it cannot be used, reached, or says no, or
    has not connected within ``timeout`` seconds."""
    proxy_host, proxy_port, credentials = _address(proxy)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            return await _connect(proxy, proxy_host, proxy_port, credentials, authority)
    except TimeoutError:
        raise ProxyError(f"the proxy {describe(proxy)} did not connect to {authority} "
                         f"within {timeout:g} s") from None


async def _connect(proxy: str, proxy_host: str, proxy_port: int, credentials: str | None,
                   authority: str) -> socket.socket:
    try:
        sock = await dial_tcp(proxy_host, proxy_port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
        raise ProxyError(f"cannot reach the proxy {describe(proxy)}: {reason}") from None
    try:
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if credentials is not None:
            lines.append(f"Proxy-Authorization: {credentials}")
        await asyncio.get_running_loop().sock_sendall(
            sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await read_through(sock, b"\r\n\r\n", MAX_HEAD, "the proxy")
        except OSError as exc:
            raise ProxyError(f"the proxy {describe(proxy)} did not answer CONNECT "
                             f"{authority}: {exc}") from None
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise ProxyError(f"the proxy {describe(proxy)} answered CONNECT {authority} with "
                             f"something other than HTTP: {status_line[:80]!r}")
        if not 200 <= int(fields[1]) < 300:
            why = " ".join(fields[1:])
            hint = (" (its credentials go in the proxy URL: http://user:password@host:port)"
                    if fields[1] in ("401", "407") else "")
            raise ProxyError(f"the proxy {describe(proxy)} refused CONNECT {authority}: "
                             f"HTTP {why}{hint}")
    except BaseException:
        sock.close()
        raise
    return sock


def configured(proxy: str | bool | None, url: str) -> str | None:
    """The proxy a client given ``proxy`` uses for ``url``: ``True``, the environment
    variables' (:func:`from_environment`); ``None`` (or ``False``), none; a URL, that one."""
    if proxy is True:
        return from_environment(url)
    return proxy or None
