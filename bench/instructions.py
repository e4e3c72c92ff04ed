"""Instructions per operation, counted by valgrind's callgrind: the steady measure of a change.

    .venv/bin/python bench/instructions.py                          # every workload
    .venv/bin/python bench/instructions.py --workload conn --n 300
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/instructions.py   # A/B

On this shared machine a CPU-time figure moves by 10-50 % from run to run; the number of
instructions a process executes for the same work does not (repeat runs agree to 0.1 %).
It is no timing: it leaves out the kernel's work and what the caches do, so it says whether
a change removes work, not how much time that saves. ``server_cpu.py`` says the time.

Workloads, each the server's user-space instructions per operation (``hud serve``'s code on
uvloop, under callgrind, counting only while the bench client of core.py drives it):

- ``cycle``: start+grade on one open connection;
- ``conn``: a new connection per manifest+start+grade (core.py's ``B1.raw_conn_per_cycle``);
- ``bare``: a new connection, its upgrade and close, nothing sent between;
- ``floor-cycle``, ``floor-conn``: the same two against server_cpu.py's ``Floor``, a server
  that answers without any hud code;
- ``client``: ``hud.Client`` itself, per connect + start + grade + ``aclose`` on asyncio's
  loop (``client-uvloop``: on uvloop), against a ``hud serve`` of this checkout; counted as
  the difference between two runs of 100 and 300 cycles, so start-up cancels out.

Prints one JSON line per workload. Needs ``valgrind`` (Debian: ``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ("cycle", "conn", "bare", "floor-cycle", "floor-conn", "client", "client-uvloop")
WARMUP = 50

SERVE = """
import asyncio, signal, sys
sys.path.insert(0, {bench!r})
import uvloop

async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if {floor!r}:
        import server_cpu
        server = await loop.create_server(server_cpu.Floor, "127.0.0.1", 0)
        print(f"ws://127.0.0.1:{{server.sockets[0].getsockname()[1]}}", flush=True)
        await stop.wait()
        return
    from hud.loader import load_environment
    from hud.server import Server, ServerConfig
    env = load_environment({env!r})
    async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
        print(server.url, flush=True)
        await stop.wait()

uvloop.run(main())
"""

DRIVE = """
import sys
sys.path.insert(0, {bench!r})
import core
url, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "conn":
    for _ in range(n):
        core._conn_cycle(url)
elif kind == "bare":
    for _ in range(n):
        with core.BlockingWs(url):
            pass
else:
    ws = core.BlockingWs(url)
    if {hud!r}:
        ws.call("manifest", core.MANIFEST)
    for _ in range(n):
        ws.cycle()
    ws.close()
"""

CLIENT = """
import asyncio, sys
sys.path.insert(0, {bench!r})
import core
from hud import Client
url, n, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]

async def main() -> None:
    for _ in range(n):
        client = await Client.connect(url)
        await core._start_and_grade(client)
        await client.aclose()

if loop == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def _collected(text: str) -> int:
    match = re.search(r"Collected : ([\d,]+)", text)
    if match is None:
        raise RuntimeError(f"callgrind reported no count:\n{text[-2000:]}")
    return int(match.group(1).replace(",", ""))


def _serve(floor: bool, under_callgrind: Path | None) -> tuple[subprocess.Popen, str]:
    code = SERVE.format(bench=str(HERE), floor=floor, env=str(HERE / "bench_env.py"))
    command = [sys.executable, "-c", code]
    if under_callgrind is not None:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={under_callgrind}", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        proc.kill()
        raise RuntimeError(f"the server did not start: {proc.communicate()[1][-2000:]}")
    return proc, url


def _drive(url: str, kind: str, n: int, hud: bool) -> None:
    code = DRIVE.format(bench=str(HERE), hud=hud)
    subprocess.run([sys.executable, "-c", code, url, kind, str(n)], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def server_instructions(workload: str, n: int, workdir: Path) -> int:
    """The server's instructions per operation of ``workload``, counted while driven."""
    floor = workload.startswith("floor")
    kind = workload.removeprefix("floor-")
    out = workdir / f"server-{workload}.out"
    proc, url = _serve(floor, out)
    try:
        _drive(url, kind, WARMUP, not floor)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       capture_output=True)
        _drive(url, kind, n, not floor)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                       capture_output=True)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=120)
    return round(_collected(stderr) / n)


def client_instructions(loop: str, n: int, workdir: Path) -> int:
    """``hud.Client``'s instructions per cycle: two runs, ``n`` and ``3 n`` cycles."""
    proc, url = _serve(False, None)
    counts = []
    try:
        for cycles in (n, 3 * n):
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/client.out",
                 sys.executable, "-c", CLIENT.format(bench=str(HERE)), url, str(cycles), loop],
                capture_output=True, text=True, check=True)
            counts.append(_collected(done.stderr))
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    return round((counts[1] - counts[0]) / (2 * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--n", type=int, default=300, help="operations counted per workload")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench/instructions.py needs valgrind (Debian: apt install valgrind)")
    import hud

    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workload or WORKLOADS:
            began = time.monotonic()
            if workload.startswith("client"):
                loop = "uvloop" if workload.endswith("uvloop") else "asyncio"
                count = client_instructions(loop, max(args.n // 3, 50), Path(tmp))
            else:
                count = server_instructions(workload, args.n, Path(tmp))
            print(json.dumps({
                "bench": "P.instructions", "workload": workload, "n": args.n,
                "instructions_per_op": count,
                "hud": str(Path(hud.__file__).parent.parent),
                "seconds": round(time.monotonic() - began, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
