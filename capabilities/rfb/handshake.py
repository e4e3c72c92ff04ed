"""The opening of an RFB connection (RFC 6143 §7.1), both ends of it, up to the point where
the session proper (``ClientInit``) starts.

Security types used: None (1) and VNC Authentication (2): a 16-byte challenge that the client
encrypts with DES under its password (RFC 6143 §7.2.2). The desktop's proxy plays the server
to learn which task a connection belongs to from its password, then plays the client (3.8) to
the task's own VNC server, which has no password and listens where only the proxy reaches it.

As a server it speaks what RFC 6143 asks of one: 3.8, 3.7, and 3.3 for any other version a
client names. The versions differ here (RFC 6143 §7.1.2, §7.1.3 and Appendix A): in 3.3 the
server picks the security type and sends it as a u32; only 3.8 explains a failed
SecurityResult (3.3 and 3.7 just close); a refusal before authentication carries a reason in
every version.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re

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


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Agree on the protocol version with a client: returns the minor version, 3, 7 or 8."""
    writer.write(VERSION)
    line = await reader.readexactly(12)
    if re.fullmatch(rb"RFB \d{3}\.\d{3}\n", line) is None:
        raise RFBRefused(f"not a VNC client (it answered {line!r})")
    # RFC 6143 §7.1.1: other version numbers "should be interpreted as 3.3"
    return {b"RFB 003.008\n": 8, b"RFB 003.007\n": 7}.get(line, 3)


async def refuse_early(writer: asyncio.StreamWriter, version: int, text: str) -> None:
    """After :func:`greet`, refuse at once with ``text`` as the reason: no security types
    (3.7, 3.8), or security type 0 (3.3)."""
    writer.write((b"\x00" if version >= 7 else b"\x00" * 4) + reason(text))
    await writer.drain()


async def challenge(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int
) -> tuple[bytes, bytes]:
    """After :func:`greet`, require VNC Authentication: returns ``(challenge, response)``.
    The caller answers with :func:`accept` or :func:`refuse`."""
    if version >= 7:
        writer.write(bytes([1, VNC_AUTH]))
        chosen = (await reader.readexactly(1))[0]
        if chosen != VNC_AUTH:
            raise RFBRefused(f"the client chose security type {chosen}; only VNC "
                             "Authentication (2) was offered")
    else:
        writer.write(VNC_AUTH.to_bytes(4, "big"))
    sent = os.urandom(16)
    writer.write(sent)
    return sent, await reader.readexactly(16)


async def accept(writer: asyncio.StreamWriter) -> None:
    writer.write(OK.to_bytes(4, "big"))
    await writer.drain()


async def refuse(writer: asyncio.StreamWriter, version: int, text: str) -> None:
    """A failed SecurityResult; 3.8 carries ``text`` as the reason, 3.3 and 3.7 have no room
    for one (the caller closes the connection)."""
    writer.write(FAILED.to_bytes(4, "big") + (reason(text) if version >= 8 else b""))
    await writer.drain()
