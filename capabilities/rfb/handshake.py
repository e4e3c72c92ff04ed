"""The opening of an RFB 3.8 connection (RFC 6143 §7.1), both ends of it, up to the point
where the session proper (``ClientInit``) starts.

Security types used: None (1) and VNC Authentication (2): a 16-byte challenge that the client
encrypts with DES under its password (RFC 6143 §7.2.2). The desktop's proxy plays the server
to learn which task a connection belongs to from its password, then plays the client to the
task's own VNC server, which has no password and listens where only the proxy reaches it.
"""

from __future__ import annotations

import asyncio
import hmac
import os

VERSION = b"RFB 003.008\n"
NONE, VNC_AUTH = 1, 2
OK, FAILED = 0, 1


class RFBRefused(ConnectionError):
    """The VNC server refused the connection; the message is its reason."""


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The challenge encrypted with DES under the password: the key is the password's first
    eight bytes, NUL-padded, each byte's bits mirrored (RFC 6143 §7.2.2, errata)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # K1=K2=K3 is plain DES
    return encryptor.update(challenge) + encryptor.finalize()


def password_matches(password: str, challenge: bytes, response: bytes) -> bool:
    return hmac.compare_digest(vnc_auth_response(password, challenge), response)


async def read_reason(reader: asyncio.StreamReader) -> str:
    length = int.from_bytes(await reader.readexactly(4), "big")
    return (await reader.readexactly(length)).decode("utf-8", errors="replace")


def reason(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


# -- the client's end ------------------------------------------------------------------------


async def client_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str | None = None
) -> None:
    """Agree on 3.8 and authenticate: VNC Authentication when ``password`` is given and the
    server offers it, else None. Raises :class:`RFBRefused` with the server's reason."""
    server_version = await reader.readexactly(12)
    if not server_version.startswith(b"RFB 003."):
        raise RFBRefused(f"not a VNC server (it greeted with {server_version!r})")
    writer.write(VERSION)
    count = (await reader.readexactly(1))[0]
    if count == 0:
        raise RFBRefused(await read_reason(reader))
    offered = set(await reader.readexactly(count))
    if password is not None and VNC_AUTH in offered:
        writer.write(bytes([VNC_AUTH]))
        writer.write(vnc_auth_response(password, await reader.readexactly(16)))
    elif NONE in offered:
        writer.write(bytes([NONE]))
    elif VNC_AUTH in offered:
        raise RFBRefused("the VNC server wants a password: a task's bindings carry it "
                         "(start a task first)")
    else:
        raise RFBRefused(f"no security type in common (offered: {sorted(offered)})")
    if int.from_bytes(await reader.readexactly(4), "big") != OK:
        raise RFBRefused(await read_reason(reader))


# -- the server's end ------------------------------------------------------------------------


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Agree on the protocol version with a client (3.7 or 3.8)."""
    writer.write(VERSION)
    version = await reader.readexactly(12)
    if not version.startswith(b"RFB 003.") or version < b"RFB 003.007":
        raise RFBRefused(f"the client speaks {version!r}; only RFB 3.7 and 3.8 are served")


async def offer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, anonymous: bool
) -> tuple[int, bytes, bytes]:
    """After :func:`greet`, offer VNC Authentication (and None when ``anonymous``).

    Returns ``(type chosen, challenge, response)``; both are empty for None. The caller
    answers with :func:`accept` or :func:`refuse`.
    """
    types = [VNC_AUTH, NONE] if anonymous else [VNC_AUTH]
    writer.write(bytes([len(types), *types]))
    chosen = (await reader.readexactly(1))[0]
    if chosen not in types:
        raise RFBRefused(f"the client chose security type {chosen}, which was not offered")
    if chosen == NONE:
        return chosen, b"", b""
    challenge = os.urandom(16)
    writer.write(challenge)
    return chosen, challenge, await reader.readexactly(16)


async def refuse_early(writer: asyncio.StreamWriter, text: str) -> None:
    """After :func:`greet`, refuse at once (no security types), giving ``text`` as reason."""
    writer.write(b"\x00" + reason(text))
    await writer.drain()


async def accept(writer: asyncio.StreamWriter) -> None:
    writer.write(OK.to_bytes(4, "big"))
    await writer.drain()


async def refuse(writer: asyncio.StreamWriter, text: str) -> None:
    """A failed SecurityResult carrying ``text`` (3.8 sends a reason)."""
    writer.write(FAILED.to_bytes(4, "big") + reason(text))
    await writer.drain()
