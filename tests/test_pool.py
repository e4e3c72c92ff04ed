"""The pool's wiring: each worker's control connection is a Unix socket pair whose other end
the worker sends the pool with ``READY``; a worker listens on a port only for its
capabilities' tunnels; the zygote never loses a request for a worker; a ready worker waits
for its rollout however long it takes, and ends with the pool."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import eval_env
import pytest
from conftest import shouting_daemon

from hud.client import Client
from hud.eval import PoolRuntime
from hud.loader import load_environment
from hud.runtimes.pool import NO_PORT, Zygote
from hud.server import Server, ServerConfig

pytestmark = pytest.mark.anyio
TESTS = Path(__file__).resolve().parent


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _listening_tcp(pid: int) -> list[str]:
    """The local addresses of the TCP sockets ``pid`` listens on (the kernel's table)."""
    mine = _socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in mine:  # 0A: LISTEN
                found.append(fields[1])
    return found


async def _worker_pid(client) -> int:  # type: ignore[no-untyped-def]
    started = await client.start("whoami", {})
    return int(str(started.prompt).split()[0])


async def test_a_worker_without_capabilities_speaks_over_a_socket_pair_and_listens_nowhere(
) -> None:
    task = eval_env.whoami()
    async with PoolRuntime(size=1) as pool, pool.open(task) as client:
        pid = await _worker_pid(client)
        assert pid != os.getpid()
        ours = client.transport.transport.get_extra_info("socket")
        assert ours.family == socket.AF_UNIX
        # the kernel names the worker as the process at the other end
        creds = ours.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        assert int.from_bytes(creds[:4], sys.byteorder) == pid
        assert _listening_tcp(pid) == []
        assert client.url == NO_PORT + "/v1/control"
        assert (await client.grade("here")).reward == 1.0


def _capability_env(path: Path, port: int) -> Path:
    path.write_text(
        "import os\n"
        "from hud import Environment\n"
        "env = Environment('pool-capability')\n"
        f"env.add_capability('shout', 'tcp/1', 'tcp://127.0.0.1:{port}')\n"
        "@env.template()\n"
        "async def whoami():\n"
        "    answer = yield f'{os.getpid()} 1'\n"
        "    yield 1.0 if answer else 0.0\n")
    return path


async def _shout(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(data)), 5)
    finally:
        writer.close()


async def test_a_worker_with_capabilities_listens_for_their_tunnels(tmp_path: Path) -> None:
    """Its client shares the worker's network namespace (the kernel says so, through the
    socket pair's peer): the binding is the daemon's own address. Tunnelling everything,
    the client reaches the daemon through the worker's port."""
    async with shouting_daemon() as (port, _):
        env = load_environment(str(_capability_env(tmp_path / "env.py", port)))
        task = env.templates["whoami"]()
        async with PoolRuntime(size=1) as pool, pool.open(task) as client:
            pid = await _worker_pid(client)
            assert len(_listening_tcp(pid)) == 1
            assert client.url.startswith("ws://127.0.0.1:") and not client.url.startswith(NO_PORT)
            direct = await client.binding("shout")
            assert direct.url == f"tcp://127.0.0.1:{port}"
            client.tunnel_all = True
            tunnelled = await client.binding("shout")
            host, tunnel_port = tunnelled.url.split("/")[2].rsplit(":", 1)
            assert int(tunnel_port) != port
            assert await _shout(host, int(tunnel_port), b"through the port") \
                == b"THROUGH THE PORT"
            assert (await client.grade("ok")).reward == 1.0


async def test_workers_asked_for_while_the_channel_is_full_all_come() -> None:
    """Requests for workers that the zygote's channel has no room for (its send buffer is
    full while the zygote forks) wait for room instead of being lost."""
    zygote = Zygote(str(TESTS / "eval_env.py"), size=1, solutions=False, ready_timeout=60)
    await zygote.start()
    try:
        assert zygote._channel is not None
        zygote._channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the least
        for _ in range(40):
            zygote._fork(1)  # forty separate requests, sent while the zygote is forking
        assert zygote._owed > 0  # some found no room: they wait for it
        async with asyncio.timeout(120):
            workers = [await zygote.acquire() for _ in range(41)]
        assert len({w.pid for w in workers}) == 41
        for worker in workers:
            zygote.release(worker)
    finally:
        await zygote.aclose()


async def test_a_ready_worker_waits_for_its_rollout_and_ends_with_the_pool() -> None:
    """A worker adopted its connection with no handshake deadline: the pool may hold it
    ready far longer than a port's handshake timeout. Its end closed unused, it exits."""
    config = ServerConfig(host="127.0.0.1", port=0, handshake_timeout=0.05)
    async with Server(eval_env.env, config) as server:
        ours, theirs = socket.socketpair()
        ended = await server.adopt(ours)
        await asyncio.sleep(0.3)  # six handshake timeouts
        assert not ended.done()
        client = await Client.connect(server.url, sock=theirs)
        assert (await client.start("count_letter", {})).prompt
        await client.aclose()
        async with asyncio.timeout(10):
            await ended

    zygote = Zygote(str(TESTS / "eval_env.py"), size=1, solutions=False, ready_timeout=60)
    await zygote.start()
    try:
        async with asyncio.timeout(60):
            worker = await zygote.acquire()
        pidfd = os.pidfd_open(worker.pid)
        try:
            sock = worker.take()
            assert sock is not None
            sock.close()  # no rollout came: its connection ends, with no signal
            loop = asyncio.get_running_loop()
            gone = loop.create_future()
            loop.add_reader(pidfd, gone.set_result, None)
            try:
                async with asyncio.timeout(30):
                    await gone
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
    finally:
        await zygote.aclose()

