"""The agent as the attacker: each attack runs as the agent, through the real ssh capability
(commands over SSH into the task's sandbox), and each must fail.

The attacks are small Python programs (``python3`` is there in every sandbox) that use raw
system calls through ctypes. They run with bubblewrap (Debian's ``bubblewrap``; CI installs
it); without it the module skips with the reason, in a dev run only. The last tests drive
the host side of the spawner protocol directly, over a socket pair.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from hud.capabilities.sandbox import bwrap_path
from hud.capabilities.sandbox.sandbox import sandbox_python
from hud.capabilities.sandbox.spawner import SandboxCompromised, Spawner, SpawnerGone
from hud.capabilities.ssh import Shell

from hud import Environment
from hud.client import open_client
from hud.loader import load_environment

pytestmark = pytest.mark.anyio
needs_bwrap = pytest.mark.skipif(bwrap_path() is None or sandbox_python() is None,
                                 reason="bubblewrap (or a python3 under /usr) is missing")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coding"
EPERM, ENOSYS = 1, 38

# Shared by the attacks: raw system calls, and the spawner found by its command line.
PRELUDE = r"""
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, *args):
    result = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return result, (ctypes.get_errno() if result < 0 else 0)

def spawner():
    for entry in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-I", b"-S", b"-c"]:
            return int(entry)

def steal(pid):
    # pidfd_open, then pidfd_getfd of each of the spawner's fds: its socket to the host
    pidfd, err = call(434, pid, 0)
    if pidfd < 0:
        return None, [err]
    errors = set()
    for fd in range(64):
        got, err = call(438, pidfd, fd, 0)
        if got < 0:
            errors.add(err)
            continue
        try:
            taken = socket.socket(fileno=got)
        except OSError:  # not a socket
            os.close(got)
            continue
        if taken.type == socket.SOCK_SEQPACKET:
            return taken, []
    return None, sorted(errors)
"""

STEAL = PRELUDE + r"""
pid = spawner()
sock, errors = steal(pid)
print(json.dumps({"spawner": pid, "stolen": sock is not None, "errors": errors}))
"""

# Waits for the grader's test run to start, then tells the host it passed.
FORGE = PRELUDE + r"""
sock, errors = steal(spawner())
print("stolen" if sock else f"refused {errors}", flush=True)
deadline = time.time() + 60
while sock and time.time() < deadline:
    for entry in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if b"unittest" in cmdline and entry != str(os.getpid()):
            for _ in range(1000):  # one is enough; more in case of a lost race
                sock.send(json.dumps({"op": "exit", "pid": int(entry), "status": 0}).encode())
            print("forged", entry, flush=True)
            sys.exit(0)
    time.sleep(0.001)
"""

TRACE = PRELUDE + r"""
PTRACE_SEIZE = 0x4206
attached, errors = [], set()
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == os.getpid():
        continue
    result, err = call(101, PTRACE_SEIZE, int(entry), 0, 0)
    if result == 0:
        attached.append(int(entry))
    else:
        errors.add(err)
# process_vm_readv of one byte of the spawner's memory
buf = ctypes.create_string_buffer(1)
local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 1)
remote = (ctypes.c_void_p * 2)(0x400000, 1)
_, vm_err = call(310, spawner(), ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
print(json.dumps({"attached": attached, "errors": sorted(errors), "vm_readv": vm_err}))
"""

# What a shell has no use for, each with arguments that would otherwise get past the
# argument checks: the filter must answer EPERM before the kernel looks at them.
REFUSED = PRELUDE + r"""
calls = {
    "keyctl": (250, 0, 0, 0), "add_key": (248, 0, 0, 0, 0, 0), "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0), "userfaultfd": (323, 0),
    "unshare": (272, 0x10000000), "setns": (308, 0, 0), "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0), "pivot_root": (155, 0, 0), "init_module": (175, 0, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0), "iopl": (172, 3), "ioperm": (173, 0, 1, 1),
    "io_uring_setup": (425, 1, 0), "process_vm_writev": (311, 1, 0, 0, 0, 0, 0),
    "open_tree": (428, -100, 0, 0), "personality": (135, 0x0400000),
    "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0), "ioctl_tiocsti": (16, 0, 0x5412, 0),
}
answers = {name: call(*args)[1] for name, args in calls.items()}
answers["clone3"] = call(435, 0, 0)[1]
print(json.dumps(answers))
"""

X32 = PRELUDE + r"""
print("before", flush=True)
call(0x40000000 | 39)  # getpid through the x32 ABI
print("survived", flush=True)
"""


def workspace_env(root: Path) -> Environment:
    env = Environment("hostile")
    env.workspace(root)

    @env.template()
    async def task():
        yield "break out"
        yield 0.0

    return env


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "repo"
    ws.mkdir()
    (ws / "README.md").write_text("pristine\n")
    return ws


@pytest.fixture
async def shell(root: Path) -> AsyncIterator[Shell]:
    async with serving(workspace_env(root)) as server, open_client(server.url) as client:
        await client.start("task")
        yield await client.open("shell")


async def attack(shell: Shell, program: str) -> Any:
    await shell.write_file("attack.py", program)
    result = await shell.run("python3 attack.py")
    assert result.exit_status == 0, result.stderr
    return json.loads(result.stdout)


@needs_bwrap
async def test_the_spawners_socket_cannot_be_taken(shell: Shell) -> None:
    outcome = await attack(shell, STEAL)
    assert outcome["spawner"] is not None  # found, and in sight
    assert outcome == {"spawner": outcome["spawner"], "stolen": False, "errors": [EPERM]}


@needs_bwrap
async def test_a_forged_exit_status_does_not_pass_the_grader() -> None:
    env = load_environment(EXAMPLE / "env.py")
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("fix_failing_test")
        shell = await client.open("shell")
        await shell.write_file("/tmp/forge.py", FORGE)
        await shell.run("setsid python3 /tmp/forge.py > /tmp/forge.log 2>&1 < /dev/null &")
        for _ in range(100):  # the forger has tried to steal the socket
            if (await shell.run("cat /tmp/forge.log")).stdout:
                break
            await asyncio.sleep(0.05)
        forger = (await shell.run("cat /tmp/forge.log")).stdout
        graded = await client.grade("done")  # the tests still fail: nothing was fixed
    assert graded.reward == 0.0
    assert forger.startswith("refused"), forger


@needs_bwrap
async def test_no_process_can_be_traced_or_read(shell: Shell) -> None:
    outcome = await attack(shell, TRACE)
    assert outcome["attached"] == []
    assert outcome["errors"] == [EPERM]
    assert outcome["vm_readv"] == EPERM


@needs_bwrap
async def test_what_a_shell_does_not_need_is_refused(shell: Shell) -> None:
    answers = await attack(shell, REFUSED)
    assert answers == {**{name: EPERM for name in answers}, "clone3": ENOSYS}


@needs_bwrap
async def test_a_foreign_abi_call_kills_the_caller(shell: Shell) -> None:
    await shell.write_file("x32.py", X32)
    result = await shell.run("python3 x32.py")
    assert result.stdout == "before\n"
    assert result.exit_status == -signal.SIGSYS


@needs_bwrap
async def test_the_agent_is_an_unprivileged_user_of_its_own(shell: Shell, root: Path) -> None:
    ids = await shell.run("id -u; id -g; whoami; stat -c %u:%g /workspace")
    assert ids.stdout.split() == ["1000", "1000", "agent", "1000:1000"]
    # the agent's user still owns its workspace (it edits and creates files) and may use
    # /tmp and /dev/shm (POSIX semaphores live there)
    await shell.run("echo changed > README.md && mkdir -p new && echo x > new/file", check=True)
    await shell.run("touch /tmp/t /dev/shm/t && python3 -c 'import multiprocessing as m; "
                    "m.Lock()'", check=True)
    assert (await shell.read_text("new/file")) == "x\n"
    assert (root / "README.md").read_text() == "pristine\n"


@needs_bwrap
async def test_host_secrets_and_the_sandboxes_pid_1_are_refused(shell: Shell) -> None:
    for path in ("/proc/1/environ", "/proc/1/mem", "/etc/shadow", "/proc/1/root/etc/shadow"):
        result = await shell.run(f"cat {path}")
        assert result.exit_status != 0, path
        assert "Permission denied" in result.stderr or "No such file" in result.stderr, path
    pid1 = await shell.run("stat -c %u /proc/1")
    assert pid1.stdout.strip() != "1000"  # pid 1 (the spawner) is not the agent's


# -- the host side of the protocol, over a socket pair ----------------------------------


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Spawner, socket.socket]]:
    host, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spawner = Spawner(host)
    inside.send(b'{"op": "ready"}')
    await spawner.wait_ready(5)
    try:
        yield spawner, inside
    finally:
        await spawner.aclose()
        inside.close()


async def closed_by_host(inside: socket.socket) -> bool:
    inside.setblocking(False)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while True:
            try:
                if await loop.sock_recv(inside, 1 << 16) == b"":
                    return True
            except ConnectionError:
                return True


async def test_an_exit_for_a_pid_never_spawned_closes_the_sandbox(
    pair: tuple[Spawner, socket.socket],
) -> None:
    spawner, inside = pair
    inside.send(json.dumps({"op": "exit", "pid": 4242, "status": 0}).encode())
    assert await closed_by_host(inside)
    assert not spawner.alive
    with pytest.raises(ProcessLookupError):
        await spawner.wait(4242)  # no state was made for it
    with pytest.raises(SpawnerGone):
        await spawner.spawn(["true"], [], env={}, cwd="/")


async def answer_spawn(inside: socket.socket, pid: int) -> None:
    loop = asyncio.get_running_loop()
    inside.setblocking(False)
    request = json.loads(await loop.sock_recv(inside, 1 << 16))
    inside.send(json.dumps({"op": "spawned", "id": request["id"], "pid": pid}).encode())


async def test_a_second_exit_of_a_child_breaks_the_protocol(
    pair: tuple[Spawner, socket.socket],
) -> None:
    spawner, inside = pair
    answering = asyncio.create_task(answer_spawn(inside, 7))
    pid = await spawner.spawn(["true"], [], env={}, cwd="/")
    await answering
    waiting = asyncio.create_task(spawner.wait(pid))
    inside.send(json.dumps({"op": "exit", "pid": 7, "status": 3}).encode())
    assert await waiting == 3
    inside.send(json.dumps({"op": "exit", "pid": 7, "status": 0}).encode())  # forged
    assert await closed_by_host(inside)
    assert not spawner.alive


@pytest.mark.parametrize("message", [
    b"not json", b"[1]", b'{"op": "ready"}', b'{"op": "spawned", "id": 99, "pid": 5}',
    b'{"op": "failed", "id": 99, "error": "x"}', b'{"op": "exit", "pid": "1", "status": 0}',
    b'{"op": "surprise"}',
])
async def test_any_message_out_of_place_closes_the_sandbox(
    pair: tuple[Spawner, socket.socket], message: bytes
) -> None:
    spawner, inside = pair
    inside.send(message)
    assert await closed_by_host(inside)
    with pytest.raises(SandboxCompromised):
        await spawner.spawn(["true"], [], env={}, cwd="/")


async def test_a_late_answer_to_a_cancelled_spawn_is_no_violation(
    pair: tuple[Spawner, socket.socket],
) -> None:
    spawner, inside = pair
    inside.setblocking(False)
    loop = asyncio.get_running_loop()
    spawning = asyncio.create_task(spawner.spawn(["sleep", "9"], [], env={}, cwd="/"))
    request = json.loads(await loop.sock_recv(inside, 1 << 16))
    spawning.cancel()  # the caller gave up before the child started
    await asyncio.gather(spawning, return_exceptions=True)
    inside.send(json.dumps({"op": "spawned", "id": request["id"], "pid": 11}).encode())
    async with asyncio.timeout(5):
        kill = json.loads(await loop.sock_recv(inside, 1 << 16))
    assert kill == {"op": "kill", "pid": 11, "sig": 9}  # nobody holds it: the host ends it
    inside.send(json.dumps({"op": "exit", "pid": 11, "status": -9}).encode())
    await asyncio.sleep(0.05)
    assert spawner.alive
