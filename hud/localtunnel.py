"""Local tunnels: a client on the environment's host hands its connection to the server.

A bare tunnel (:mod:`hud.tunnel`) crosses three TCP connections and two relays: reader →
forwarder → server → daemon. Where the client runs on the environment's host, as the same
user, the forwarder can instead pass the TCP socket it accepted (the reader's connection)
to the server over a Unix socket (``SCM_RIGHTS``); the server dials the daemon and splices
the two. One TCP connection and one relay fewer, and the relay runs in the server's
process, not in the reader's.

Negotiation is opt-in: the client asks ``GET /v1/local`` on the control port, with the
token as on every path. A server that offers local tunnels answers ``200`` with the Unix
socket's path as the body (to a peer on loopback only, unless its directory is mounted
from the client's side: :data:`DIR_ENV`); anything else means "not offered", and the
client keeps to bare tunnels. So does a client that cannot reach the path (another host,
another mount namespace, a container without that mount).

Per tunnel, on a new connection to that path, the client sends one line,
``tunnel NAME EARLY TOKEN`` (name and token percent-quoted, ``-`` for no token, EARLY the
count of bytes that follow: what the client had read from the reader before handing it
over), with the reader's socket attached to the first byte. The server answers ``ok`` or
``error REASON`` as a bare tunnel does. The connection then stays open for as long as the
tunnel: the server closes it when the tunnel ends, and the client closing it ends the
tunnel.

The answer also carries the server's id (``Hud-Local-Id``, random per server). A client
may check, once, whether the server shares its network namespace (:func:`same_network`):
over the Unix socket it says ``hello - 0 TOKEN`` and the server answers ``ok ID``, which
ties the socket to a server that answered ``/v1/local``; the kernel then names the process
at the socket's other end (``SO_PEERCRED``), which must hold the server's end of the
client's control connection (in the client's own TCP table) and be in the client's network
namespace (``/proc/PID/ns/net``). Nothing the server says decides it. A client
in the same one reaches a daemon on a loopback address exactly as the server does, so it
needs no tunnel at all: it is given the daemon's own address (``hud.forward``).

A client that can use a socket itself (hud's own openers: ``ssh`` over asyncssh, say) may
ask for the daemon's connection instead of a tunnel: ``dial NAME 0 TOKEN``, with no socket
attached. The server dials the daemon and answers ``ok`` with the connected socket attached
(or ``error REASON``): no relay at all, the bytes go straight between the client and the
daemon. The Unix connection is again the lifeline: the server keeps its own descriptor of
the daemon's connection and shuts it down (for both) when the client closes the lifeline
or the server closes.

Safety: the socket is in a directory only the server's user may enter (``mkdtemp``,
0700); each side checks that the other runs as its own user (``SO_PEERCRED``); the token
and the declared capability are checked as on the control port. The server holds every
socket of the tunnel, so it cuts the tunnel when it closes. The path in the answer is the
server's to write (and, in a mounted directory, :data:`DIR_ENV`, the directory's contents
are the container's), so the client trusts it only for a socket of the server's shape
(:func:`plausible`) whose bound name is that path (:func:`connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

VERBS = ("tunnel", "dial", "hello")
"""The requests a connection to the Unix socket may make (see the module's docstring)."""
LOCAL_PATH = "/v1/local"
"""Where a client asks for the Unix socket's path (see the module's docstring)."""
ID_HEADER = "Hud-Local-Id"
"""The header of that answer carrying the server's id (:attr:`LocalTunnels.id`)."""
ID_FIELD = re.compile(rb"\r\n" + ID_HEADER.encode() + rb":[ \t]*([0-9a-f]{32})[ \t]*(?=\r\n|\Z)",
                      re.IGNORECASE)
MAX_EARLY = 1 << 20
"""Most bytes a hand-over may carry ahead of the socket."""
HANDSHAKE_TIMEOUT = 10.0
AVAILABLE = hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED") \
    and hasattr(socket, "send_fds")

DIR_ENV = "HUD_LOCAL_DIR"
"""A directory to make the socket's directory in instead of the temp dir: one that a
container runtime mounts from the host (``hud.runtimes.container``), so that a client on the
host reaches the socket (it is told where the directory is on its side). It must be this
user's alone (mode 0700); a server that is not on the client's loopback then answers
``/v1/local`` too (the token still gates it)."""
DIR_PREFIX = "hud-local-"
"""The socket directory's name in the temp dir (``mkdtemp`` adds a random suffix)."""
STALE_AFTER = 60.0
"""Seconds after which a socket directory without a listener is taken as left behind."""
SUN_PATH_MAX = 107
"""Bytes in a Unix socket's path at most (``sun_path`` holds 108, with the NUL)."""
_OWN_BYTES = len(f"/{DIR_PREFIX}12345678/tunnels")  # what the directory and socket add

StartTunnel = Callable[[socket.socket, socket.socket, str, bytes], None]
"""``start_tunnel(reader, control, name, early)``: the server's part of a tunnel."""
StartHanded = Callable[[socket.socket, str], None]
"""``start_handed(control, name)``: the server's part of a handed connection (``dial``)."""


def _mounted_dir() -> str | None:
    """:data:`DIR_ENV`'s directory, if it is one this user alone may enter; None otherwise
    (unset, or not safe to use: then a fresh directory in the temp dir is used)."""
    given = os.environ.get(DIR_ENV)
    if not given:
        return None
    try:
        info = os.stat(given)
    except OSError as exc:
        log.warning("%s=%s cannot be used: %s", DIR_ENV, given, exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        log.warning("%s=%s is not a directory that only this user may enter: not used",
                    DIR_ENV, given)
        return None
    return given


def short_temp_dir(room: int = _OWN_BYTES) -> str:
    """The temp dir, or ``/tmp`` where a Unix socket's path that needs ``room`` bytes
    under the temp dir would be too long (a long ``TMPDIR``) and ``/tmp`` may be written."""
    tmp = tempfile.gettempdir()
    if len(os.fsencode(tmp)) + room > SUN_PATH_MAX and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return tmp


def _sweep_stale(tmp: str) -> None:
    """Remove the socket directories, this user's, that a server left when it was killed
    (SIGKILL: no cleanup ran): those whose socket has no listener (connecting is refused)
    and that are older than :data:`STALE_AFTER`. A live server's socket answers, whatever
    its pid namespace."""
    uid, settled = os.geteuid(), time.time() - STALE_AFTER
    with contextlib.suppress(OSError), os.scandir(tmp) as entries:
        for entry in entries:
            if not entry.name.startswith(DIR_PREFIX):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mtime > settled:
                continue  # not ours, or one that a starting server has not listened in yet
            if not _listened(os.path.join(entry.path, "tunnels")):
                shutil.rmtree(entry.path, ignore_errors=True)


def _listened(path: str) -> bool:
    """Whether a server listens on Unix socket ``path`` (a connection it would take)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:  # EAGAIN (its backlog is full), EACCES...: someone's, leave it
            return True
        return True


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of Unix socket ``sock``."""
    return _peer(sock)[1]


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of Unix socket ``sock``, as the
    kernel has them (in this process's namespaces; pid 0 for one this process cannot see)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return int(pid), int(uid), int(gid)


class LocalTunnels:
    """The server's end: a Unix socket in a fresh 0700 directory. ``start()`` binds it
    (False where it cannot: the platform, a path too long); each connection that passes the
    checks becomes a tunnel through ``start_tunnel``; :meth:`close` stops listening and removes the
    directory (the server closes the tunnels themselves). ``refusal(name)`` returns why a
    tunnel to ``name`` may not open (undeclared, over a limit), or None; ``spawn`` runs a
    handshake in the server's task group. A ``dial`` request that passes the same checks
    goes to ``start_handed``."""

    def __init__(self, token: str | None, refusal: Callable[[str], str | None],
                 start_tunnel: StartTunnel, start_handed: StartHanded,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.token = token
        self.path: str | None = None
        self.id = secrets.token_hex(16)
        """Named in the answer to ``/v1/local`` and to ``hello`` on the socket: what ties
        the two to one server."""
        self._refusal, self._start_tunnel, self._spawn = refusal, start_tunnel, spawn
        self._start_handed = start_handed
        self._listener: socket.socket | None = None
        self._dir: str | None = None
        self.mounted = False
        """Whether the socket is in a directory mounted from the client's side
        (:data:`DIR_ENV`): then a client that is not on loopback may be told its path."""

    def start(self) -> bool:
        if not AVAILABLE:
            return False
        parent = _mounted_dir()
        self.mounted = parent is not None
        if parent is None:
            parent = short_temp_dir()
        _sweep_stale(parent)
        try:
            self._dir = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=parent)  # 0700: ours alone
        except OSError as exc:  # a temp dir that cannot be written
            log.info("no local tunnels: cannot make a directory in %s: %s", parent, exc)
            return False
        path = os.path.join(self._dir, "tunnels")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(128)
        except OSError as exc:  # e.g. a path longer than sun_path's 108 bytes
            log.info("no local tunnels: cannot listen on %s: %s", path, exc)
            listener.close()
            self.close()
            return False
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener, self._accept)
        self._listener, self.path = listener, path
        return True

    def close(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.path = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # gone before we took it
        except OSError as exc:  # out of descriptors: readable again at once, so stop
            log.warning("local tunnels stopped: %s (clients use bare tunnels)", exc)
            self.close()
            return
        conn.setblocking(False)
        if peer_uid(conn) != os.geteuid():  # the directory's mode should make this moot
            conn.close()
            return
        self._spawn(self._handshake(conn))

    async def _handshake(self, conn: socket.socket) -> None:
        reader: socket.socket | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                line, early, reader = await _read_request(conn)
            name, refused = self._check(line)
        except (OSError, ValueError, TimeoutError) as exc:
            log.info("local tunnel refused: %s", exc)
            name, refused = "", f"bad request: {exc}"
        except BaseException:  # cancelled: the server is closing, and nothing may leak
            conn.close()
            if reader is not None:
                reader.close()
            raise
        if refused is not None:
            with contextlib.suppress(OSError):
                conn.send(f"error {refused}\n".encode())
            conn.close()
            if reader is not None:
                reader.close()
            return
        if line.startswith("hello "):
            with contextlib.suppress(OSError):
                conn.send(f"ok {self.id}\n".encode())
            conn.close()
        elif reader is None:
            self._start_handed(conn, name)
        else:
            self._start_tunnel(reader, conn, name, early)

    def _check(self, line: str) -> tuple[str, str | None]:
        """The capability a request line names, and why it is refused (None: it is not)."""
        verb, name, _, token = _split_request(line)
        if verb not in VERBS:
            raise ValueError(f"unknown request {verb!r}")
        if self.token is not None and not hmac.compare_digest(
                token.encode(), self.token.encode()):
            return name, "unauthorized: missing or wrong token"
        return name, None if verb == "hello" else self._refusal(name)


def _split_request(line: str) -> tuple[str, str, int, str]:
    verb, name, early, token = line.split(" ")
    return verb, unquote(name), int(early), unquote(token)


async def wait_readable(sock: socket.socket) -> None:
    """Until ``sock`` has something to read (or has ended)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock, ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(sock)


async def _read_request(conn: socket.socket) -> tuple[str, bytes, socket.socket | None]:
    """The request line, the early bytes and the socket handed over with them (None for
    ``dial``, which hands none and has no early bytes). Raises ``ValueError`` for a
    malformed request (a ``tunnel`` with no socket or more than one, a socket that is not a
    stream, a ``dial`` with any)."""
    data, fds = b"", []
    try:
        while b"\n" not in data or len(data) < data.index(b"\n") + 1 + _early(data):
            if len(data) > MAX_EARLY + 4096:
                raise ValueError("request too long")
            await wait_readable(conn)
            more, got, _, _ = socket.recv_fds(conn, 65536, 4)
            fds += got
            if not more:
                raise ValueError("the client hung up mid-request")
            data += more
        line, _, early = data.partition(b"\n")
        if line.startswith((b"dial ", b"hello ")):
            if fds or early:
                raise ValueError(f"a {line.split(b' ', 1)[0].decode()} request hands over "
                                 "nothing")
            return line.decode(), b"", None
        if len(fds) != 1:
            raise ValueError(f"{len(fds)} sockets handed over, not one")
        reader = socket.socket(fileno=fds[0])  # ENOTSOCK for anything else (closed below)
        fds.clear()
    finally:
        for fd in fds:
            os.close(fd)
    if reader.type != socket.SOCK_STREAM:
        reader.close()
        raise ValueError("the socket handed over is not a stream")
    reader.setblocking(False)
    return line.decode(), early, reader


def _early(data: bytes) -> int:
    """The early-byte count of the request line at the start of ``data``."""
    count = _split_request(data.partition(b"\n")[0].decode())[2]
    if not 0 <= count <= MAX_EARLY:
        raise ValueError(f"early bytes out of range: {count}")
    return count


# -- the client's end -------------------------------------------------------------------------


class Offer(NamedTuple):
    """What a server offers a client on its host (``GET /v1/local``)."""

    path: str
    """The Unix socket for local tunnels."""
    id: str | None
    """The server's id (:attr:`LocalTunnels.id`), where it said."""


async def probe(control_url: str, token: str | None) -> Offer | None:
    """What the server at ``control_url`` offers for local tunnels, or None: not offered,
    not a loopback server, or not reachable."""
    parts = urlsplit(control_url)
    if parts.scheme != "ws" or parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        return None
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {LOCAL_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}\r\n"
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            port = 80 if parts.port is None else parts.port  # (0 is no port, not 80)
            reader, writer = await asyncio.open_connection(parts.hostname, port)
            try:
                writer.write(request.encode())
                answer = await reader.read()  # the server closes after its answer
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 ") or not body.strip():
        return None
    said = ID_FIELD.findall(head)  # said twice, it says nothing
    return Offer(body.decode(errors="replace").strip(),
                 said[0].decode().lower() if len(said) == 1 else None)


def plausible(path: str, bound: str) -> bool:
    """Whether ``path`` (``bound``, the path a server says it bound its socket at, or this
    process's name for it) looks like a server's socket and nothing else: a socket named
    ``tunnels`` in a directory of :data:`DIR_PREFIX` that this user alone may enter, with
    no link on the way from that directory. A server that answers with anything else
    (another program's socket: the answer is the server's to make) is not trusted with
    this client's connections."""
    name, parent = os.path.basename(bound), os.path.basename(os.path.dirname(bound))
    if name != "tunnels" or not parent.startswith(DIR_PREFIX):
        return False
    try:
        folder, sock = os.lstat(os.path.dirname(path)), os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(folder.st_mode) and folder.st_uid == os.geteuid() \
        and not folder.st_mode & 0o077 and stat.S_ISSOCK(sock.st_mode)


async def connect(path: str, bound: str | None = None) -> socket.socket | None:
    """A connection to the server's Unix socket at ``path``, or None where it cannot be
    reached or answers as another user. ``bound``: the path the server bound it at, where
    ``path`` is another name for it (a mounted directory, :data:`DIR_ENV`): a socket bound
    anywhere else is not the server's, whatever link led to it (the directory is the
    container's to write in), and is refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
        if peer_uid(sock) == os.geteuid() and sock.getpeername() == (bound or path):
            return sock
    except OSError:
        pass
    sock.close()
    return None


async def same_network(path: str, offer: Offer, token: str | None,
                       control: tuple[Any, Any] | None) -> bool:
    """Whether the server of ``offer`` (its socket reached at ``path``, this process's name
    for it) runs in this process's network namespace, as the kernel says. ``control``: the
    (local, remote) addresses of this client's control connection to it. The process at the
    socket's other end (``SO_PEERCRED``) must hold the server's end of that connection,
    listed in this namespace's TCP table, and be in this namespace itself
    (``/proc/PID/ns/net``); the socket must answer ``hello`` with ``offer``'s id. False on
    any doubt (a server elsewhere can name another server's socket and id: not its
    connection)."""
    if offer.id is None or control is None:
        return False
    conn = await connect(path, offer.path)
    if conn is None:
        return False
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await loop.sock_sendall(conn, f"hello - 0 {quote(token or '-', safe='')}\n".encode())
            answer = b""
            while b"\n" not in answer and len(answer) < 4096:
                more = await loop.sock_recv(conn, 4096)
                if not more:
                    return False
                answer += more
        if answer.partition(b"\n")[0] != f"ok {offer.id}".encode():
            return False
        pid = _peer(conn)[0]
        if pid <= 0:
            return False
        inode = _tcp_inode(local=control[1], remote=control[0])
        if inode is None or not _holds(pid, inode):
            return False
        return _in_this_network(pid)
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        conn.close()


def peer_shares_network(control: socket.socket) -> bool:
    """Whether the server at the other end of ``control``, a Unix control connection (a
    pool worker's socket pair), runs in this process's network namespace, as the kernel
    says (``SO_PEERCRED``, then ``/proc/PID/ns/net``). False on any doubt."""
    try:
        pid = _peer(control)[0]
        return pid > 0 and _in_this_network(pid)
    except (OSError, AttributeError):  # (AttributeError: no SO_PEERCRED on this platform)
        return False


def _in_this_network(pid: int) -> bool:
    theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _kernel_address(address: Any, six: bool) -> str:
    """``(host, port, ...)`` as /proc/net/tcp (``six``: tcp6) writes it: each 32-bit word of
    the address in this machine's byte order, in hex, then the port."""
    host, port = address[0], int(address[1])
    if six:
        packed = socket.inet_pton(socket.AF_INET6, host if ":" in host else f"::ffff:{host}")
    else:
        packed = socket.inet_pton(socket.AF_INET, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"


def _tcp_inode(local: Any, remote: Any) -> int | None:
    """The inode of the TCP socket in this process's network namespace whose own address is
    ``local`` and whose peer is ``remote``; None where there is none."""
    for table, six in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not six and (":" in local[0] or ":" in remote[0]):
            continue
        want = (_kernel_address(local, six), _kernel_address(remote, six))
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            next(rows, None)  # the header
            for row in rows:
                fields = row.split()
                if len(fields) > 9 and (fields[1], fields[2]) == want:
                    return int(fields[9])
    return None


def _holds(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has the socket of ``inode`` open."""
    target = f"socket:[{inode}]"
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        with contextlib.suppress(OSError):
            if os.readlink(f"{folder}/{fd}") == target:
                return True
    return False


async def hand_over(conn: socket.socket, name: str, token: str | None,
                    reader: socket.socket, early: bytes) -> str:
    """Hand ``reader`` (and ``early``, bytes already read from it) to the server over
    ``conn`` for a tunnel to capability ``name``; the server's status line (``ok``, or
    ``error REASON``). The caller still holds its own copy of ``reader``: close it."""
    line = f"tunnel {quote(name, safe='')} {len(early)} {quote(token or '-', safe='')}\n"
    data = line.encode() + early
    sent = socket.send_fds(conn, [data], [reader.fileno()])  # a fresh socket takes it all
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(conn, data[sent:])
    answer = b""
    while b"\n" not in answer:
        more = await loop.sock_recv(conn, 4096)
        if not more:
            raise OSError("the environment hung up during a local tunnel's hand-over")
        answer += more
    return answer.partition(b"\n")[0].decode(errors="replace")


async def dial(conn: socket.socket, name: str, token: str | None
               ) -> tuple[str, socket.socket | None]:
    """Ask the server over ``conn`` for a connection to capability ``name``'s daemon: its
    status line (``ok``, or ``error REASON``) and, with ``ok``, the connected socket. The
    caller holds ``conn`` as the connection's lifeline from then on."""
    line = f"dial {quote(name, safe='')} 0 {quote(token or '-', safe='')}\n".encode()
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(conn, line)
    answer, fds = b"", []
    try:
        while b"\n" not in answer:
            await wait_readable(conn)
            more, got, _, _ = socket.recv_fds(conn, 4096, 1)
            fds += got
            if not more:
                raise OSError("the environment hung up before it answered a dial")
            answer += more
        status = answer.partition(b"\n")[0].decode(errors="replace")
        if status != "ok" or len(fds) != 1:
            return (status if status != "ok" else "error no socket came with ok"), None
        sock = socket.socket(fileno=fds.pop())
    finally:
        for fd in fds:
            os.close(fd)
    if sock.type != socket.SOCK_STREAM:
        sock.close()
        return "error the socket handed over is not a stream", None
    sock.setblocking(False)
    return "ok", sock
