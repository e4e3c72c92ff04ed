"""``hud view``: a local web app over the trace store (see :mod:`hud.view.app`).

:func:`serve_view` binds (loopback by default), prints the URL on stdout and serves until
cancelled. Beyond loopback a token is required, by the rule ``hud serve`` follows: one is
generated when none is given, and the printed URL carries it.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys
from pathlib import Path

from ..address import is_loopback

log = logging.getLogger(__name__)


def view_token(host: str, token: str | None) -> str | None:
    """The token the app requires: ``token``, else a new one when ``host`` is beyond
    loopback, else none."""
    if token is None and not is_loopback(host):
        return secrets.token_urlsafe(24)
    return token


async def serve_view(root: Path | None, *, host: str = "127.0.0.1", port: int = 8766,
                     token: str | None = None) -> None:
    """Serve the store at ``root`` (see :func:`hud.eval.store.default_root`) until
    cancelled; the URL (with ``?token=`` when one is required) goes to stdout once bound.
    Raises :class:`~hud.errors.StoreError` when there is no store, ``OSError`` when the
    address cannot be bound."""
    import uvicorn

    from ..eval.store import TraceStore
    from .app import create_app

    token = view_token(host, token)
    with TraceStore(root, create=False) as store:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)  # connections wait in the backlog from the moment the URL shows
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(create_app(store, token), log_level="warning",
                                access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        with sock:
            await server.serve(sockets=[sock])
