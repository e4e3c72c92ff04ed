"""The pool's wiring: each worker's control connection is a Unix socket pair whose other end
the worker sends the pool with ``READY``; a worker listens on a port only for its
capabilities' tunnels; the zygote never loses a request for a worker; a ready worker waits
for its rollout however long it takes, and ends with the pool."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import eval_env
import pytest
from conftest import shouting_daemon

from hud import localtunnel
from hud.client import Client
from hud.errors import HudConnectionError
from hud.eval import PoolRuntime
from hud.forward import Tunnels
from hud.loader import load_environment
from hud.runtimes.pool import NO_PORT, Zygote
from hud.server import Server, ServerConfig
from hud.splicedtunnel import open_bare

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


def _capability_env(path: Path, port: int, *, at_start: bool) -> Path:
    declare = f"env.add_capability('shout', 'tcp/1', 'tcp://127.0.0.1:{port}')\n"
    path.write_text(
        "import os\n"
        "from hud import Environment\n"
        "env = Environment('pool-capability')\n"
        + ("@env.initialize\ndef declare():\n    " + declare if at_start else declare) +
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


@pytest.mark.parametrize("at_start", [False, True], ids=["at-import", "in-initialize"])
async def test_a_worker_with_capabilities_listens_for_their_tunnels(
        tmp_path: Path, at_start: bool) -> None:
    """Its client shares the worker's network namespace (the kernel says so, through the
    socket pair's peer): the binding is the daemon's own address. Tunnelling everything,
    the client reaches the daemon through the worker's port; so it does for a capability
    an initialize hook declares (in the worker, after the fork)."""
    async with shouting_daemon() as (port, _):
        env = load_environment(str(_capability_env(tmp_path / "env.py", port,
                                                   at_start=at_start)))
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
        async with asyncio.timeout(120):  # (taking none: acquire would ask for more)
            while zygote._ready.qsize() < 41:
                await asyncio.sleep(0.05)
        workers = [zygote._ready.get_nowait() for _ in range(41)]
        assert len({w.pid for w in workers if not isinstance(w, Exception)}) == 41
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



async def test_a_portless_url_is_never_dialled() -> None:
    """A worker without a port gives its client NO_PORT; port 0 must not become port 80
    (the default some libraries put in its place), where anyone could listen and read the
    pool's token."""
    listener = socket.socket()
    try:  # where this process may: something on port 80 to be dialled by mistake
        listener.bind(("127.0.0.1", 80))
        listener.listen()
        listener.setblocking(False)
    except OSError:
        listener.close()
        listener = None  # type: ignore[assignment]
    try:
        with pytest.raises(HudConnectionError, match="names no port"):
            await Client.connect(NO_PORT, token="secret")
        tunnels = Tunnels(NO_PORT + "/v1/control", "secret")
        assert await tunnels._probe() is None
        with pytest.raises(HudConnectionError, match="listens on no port"):
            await tunnels.forwarder("shout")
        assert await localtunnel.probe(NO_PORT, "secret") is None
        with pytest.raises(OSError):
            await open_bare(NO_PORT + "/v1/tunnel/shout", {"Authorization": "Bearer secret"})
        if listener is not None:
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody came
    finally:
        if listener is not None:
            listener.close()


def _write_env(path: Path, initialize: str) -> str:
    path.write_text(
        "import os, signal, subprocess, sys\n"
        "from hud import Environment\n"
        "env = Environment('starts-badly')\n"
        "@env.initialize\n"
        "def begin():\n"
        f"    {initialize}\n"
        "@env.template()\n"
        "async def run(where: str = ''):\n"
        "    answer = yield 'say ok'\n"
        "    yield 1.0\n")
    return str(path)


@pytest.mark.parametrize(("initialize", "said"), [
    ("os._exit(3)", "exited before it was ready (exit code 3)"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "exited before it was ready (killed by signal 9)"),
    ("raise BrokenPipeError('from the hook')", "BrokenPipeError: from the hook"),
])
async def test_a_worker_that_dies_before_it_is_ready_fails_its_rollout(
        tmp_path: Path, initialize: str, said: str) -> None:
    """The zygote reports a worker that exits without reporting (the pool used to wait for
    it forever), and a hook's own BrokenPipeError is an error like any other."""
    target = _write_env(tmp_path / "env.py", initialize)
    zygote = Zygote(target, size=1, solutions=False, ready_timeout=60)
    await zygote.start()
    try:
        async with asyncio.timeout(60):  # the old pool waited here forever
            with pytest.raises(HudConnectionError, match="a pool worker failed to start") as err:
                await zygote.acquire()
        assert said in str(err.value)
    finally:
        await zygote.aclose()


async def test_rollouts_waiting_when_the_zygote_dies_all_get_its_error(tmp_path: Path) -> None:
    target = _write_env(tmp_path / "env.py", "import time; time.sleep(60)")  # never ready
    zygote = Zygote(target, size=1, solutions=False, ready_timeout=60)
    await zygote.start()
    try:
        waiting = [asyncio.ensure_future(zygote.acquire()) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert zygote._proc is not None
        pid = zygote._proc.pid
        workers = [int(child) for task in os.listdir(f"/proc/{pid}/task")
                   for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        for each in [pid, *workers]:  # all at once, as the kernel's OOM killer may
            os.kill(each, 9)
        async with asyncio.timeout(30):  # only the first used to get it; the rest hung
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert [str(o) for o in outcomes] == [f"{target}: the pool's zygote exited"] * 3
    finally:
        await zygote.aclose()


async def test_a_ready_worker_that_died_fails_its_rollout_in_the_pools_words() -> None:
    task = eval_env.whoami()
    async with PoolRuntime(size=1) as pool:
        async with pool.open(task) as client:
            await client.start(task.id, task.args)
        zygote = next(iter(pool._zygotes.values()))
        async with asyncio.timeout(60):
            while zygote._ready.qsize() < 1:
                await asyncio.sleep(0.02)
        ready = zygote._ready._queue[0]  # type: ignore[attr-defined]
        os.kill(ready.pid, 9)
        with pytest.raises(HudConnectionError,
                           match=f"pool worker {ready.pid} ended before its rollout began"):
            async with pool.open(task):
                pass


async def test_programs_a_worker_starts_inherit_none_of_the_pools_descriptors(
        tmp_path: Path) -> None:
    """Not the channel to the pool (a program could report workers on it), not its end
    of another worker's connection, nor what the pool's own process left inheritable (this
    test's runner holds several): what the environment runs gets stdio alone."""
    out = tmp_path / "fds"
    target = tmp_path / "env.py"
    target.write_text(
        "import subprocess\n"
        "from hud import Environment\n"
        "env = Environment('spawns')\n"
        "@env.template()\n"
        "async def run(where: str):\n"
        "    listing = subprocess.run(\n"
        "        ['bash', '-c', 'for f in /proc/self/fd/*; do echo $f $(readlink $f); done'],\n"
        "        close_fds=False, capture_output=True, text=True).stdout\n"
        "    open(where, 'w').write(listing)\n"
        "    answer = yield 'say ok'\n"
        "    yield 1.0\n")
    task = load_environment(str(target)).templates["run"](where=str(out))
    async with PoolRuntime(size=2) as pool, pool.open(task) as client:
        await client.start(task.id, task.args)
    # ls's own: stdio (its stdout a pipe) and the directory it reads
    # bash's own: stdio and the directory it lists (nothing of hud's, nor of this process)
    fds = dict(line.split(" ", 1) if " " in line else (line, "")
               for line in out.read_text().splitlines())
    assert sorted(fds) == [f"/proc/self/fd/{n}" for n in (0, 1, 2, 3)], fds


ZYGOTE_PRINTS = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import eval_env
from hud.eval import PoolRuntime, Taskset
from hud.agents import create_agent

async def main():
    async with PoolRuntime(size=1, solutions=True) as pool:
        job = await Taskset([eval_env.chatty()]).run(create_agent("oracle"), runtime=pool)
    print(json.dumps({"reward": job.reward}))

asyncio.run(main())
"""


def test_what_an_environment_prints_in_a_pool_worker_goes_to_stderr() -> None:
    """A program of its own (not hud's CLI, which already sends user code's prints to
    stderr) running the pool: its stdout holds only what it prints itself."""
    done = subprocess.run([sys.executable, "-c", ZYGOTE_PRINTS, str(TESTS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"reward": 1.0}
    assert "chatty worker" in done.stderr
