#!/usr/bin/env python3
"""Reference side of the side-by-side benchmark: PyPI ``hud==0.6.21`` as a black box.

Stdlib only, runnable with any Python >= 3.8. The reference lives in its own
virtualenv (default ``.bench/ref-venv``, created on demand with ``typer==0.28.0``
pinned). We serve ``bench/ref_env.py`` with the venv's interpreter
(``python -m hud.environment.server PATH --host 127.0.0.1 --port 0``, which
prints ``HUD_SERVE_PORT=<port>`` once bound) and talk to it with raw
newline-delimited JSON-RPC 2.0 over TCP, or through its ``hud task`` CLI.

Importable API (each bench returns one JSON-able record with ``bench`` and
``system`` keys)::

    ensure_ref_venv(path=DEFAULT_VENV) -> Path | None
    start_ref_server(venv, env_file=ENV_FILE) -> (Popen, port)
    stop_server(proc) -> None
    bench_cycle(port, n=2000, warmup=200)               # B1.asyncio_persistent
    bench_cycle_blocking(port, n=2000, warmup=200)      # B1.raw_persistent
    bench_conn_per_cycle(port, n=500, warmup=50)        # B1.raw_conn_per_cycle
    bench_concurrent(port, sessions=1000, server_pid=None)  # B2.concurrent_sessions
    bench_cli_cycle(venv, port, n=5, warmup=1)          # B5.cli_cycle

``python bench/reference.py`` runs them all and prints one JSON line per
result on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

try:  # POSIX only; without it the fd limit is simply left alone.
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".bench" / "ref-venv"
ENV_FILE = ROOT / "bench" / "ref_env.py"
SERVER_LOG = ROOT / ".bench" / "ref-server.log"  # the reference server's stderr

REF_VERSION = "0.6.21"
SYSTEM = "hud-" + REF_VERSION
REF_REQUIREMENTS = ("hud==" + REF_VERSION, "typer==0.28.0")
REF_PYTHONS = ((3, 11), (3, 12))  # hud 0.6.21: Requires-Python >=3.11,<3.13

HOST = "127.0.0.1"
PORT_PREFIX = "HUD_SERVE_PORT="
TASK_ID = "count_letter"
TASK_ARGS: dict = {}  # template defaults: word="strawberry", letter="r"
ANSWER = "3"
# The CLI otherwise posts usage analytics, checks PyPI for updates and writes an
# install id to ~/.hud/.env on every call; turned off so the timing is hermetic.
CLI_QUIET_ENV = {"HUD_CLI_ANALYTICS_ENABLED": "0", "HUD_SKIP_VERSION_CHECK": "1"}


def log(message: str) -> None:
    """Write one diagnostic line to stderr (stdout is reserved for results)."""
    print("[reference] " + message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- stats


def percentile(sorted_values: list, q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of pre-sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_ms(samples_ms: list) -> dict:
    """p50/p99/mean/max of latency samples in milliseconds (None when empty)."""
    if not samples_ms:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(percentile(ordered, 50), 4),
        "p99_ms": round(percentile(ordered, 99), 4),
        "mean_ms": round(sum(ordered) / len(ordered), 4),
        "max_ms": round(ordered[-1], 4),
    }


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for error reporting."""
    return f"{type(exc).__name__}: {exc}"


def _record(bench: str, **fields) -> dict:
    """A result record: bench name and system first, then the fields."""
    return {"bench": bench, "system": SYSTEM, **fields}


# ------------------------------------------------------------------- process


def raise_nofile_limit() -> tuple:
    """Raise the soft open-files limit to the hard limit; return (soft, hard)."""
    if resource is None:
        return (None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return (soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log(f"could not raise RLIMIT_NOFILE: {exc}")
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def _child_env(extra: dict | None = None) -> dict:
    """Environment for reference processes: no PYTHONPATH, so nothing shadows it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra or {})
    return env


def _installed_version(venv: Path) -> str | None:
    """The ``hud`` distribution version in ``venv`` (cheap: no ``import hud``)."""
    python = _venv_python(venv)
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('hud'))"
    try:
        out = subprocess.run(
            [str(python), "-I", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(venv),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _base_python() -> str | None:
    """An interpreter the reference supports: this one, else python3.12/3.11."""
    if tuple(sys.version_info[:2]) in REF_PYTHONS:
        return sys.executable
    for major, minor in reversed(REF_PYTHONS):
        found = shutil.which(f"python{major}.{minor}")
        if found:
            return found
    return None


def _run_step(cmd: list, timeout: float) -> None:
    """Run an install step; raise RuntimeError with its output tail on failure."""
    log("$ " + " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: {(out.stderr or out.stdout)[-2000:]}")


def ensure_ref_venv(path: Path | str = DEFAULT_VENV, timeout: float = 900.0) -> Path | None:
    """Return a venv holding ``hud==0.6.21``, creating it if missing; None on failure."""
    venv = Path(path)
    if _installed_version(venv) == REF_VERSION:
        return venv
    base = _base_python()
    if base is None:
        log("no Python 3.11/3.12 found to build the reference venv")
        return None
    try:
        if not _venv_python(venv).exists():
            _run_step([base, "-m", "venv", str(venv)], timeout)
        _run_step(
            [str(_venv_python(venv)), "-m", "pip", "install", "-q", *REF_REQUIREMENTS], timeout
        )
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        log(f"reference install failed: {exc}")
        return None
    if _installed_version(venv) != REF_VERSION:
        log(f"reference venv at {venv} does not hold hud=={REF_VERSION}")
        return None
    return venv


def _pump_lines(stream, lines: queue.Queue) -> None:
    """Copy a child's stdout lines into a queue (None at EOF); keeps the pipe drained."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def _await_port(proc: subprocess.Popen, lines: queue.Queue, timeout: float) -> int:
    """Wait for the ``HUD_SERVE_PORT=<port>`` announcement and return the port."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"server announced no port within {timeout:.0f} s")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"server exited (rc={proc.poll()}) before announcing its port")
        if line.startswith(PORT_PREFIX):
            return int(line[len(PORT_PREFIX) :].strip())
        log("server stdout: " + line.rstrip())


def start_ref_server(
    venv: Path | str, env_file: Path | str = ENV_FILE, timeout: float = 120.0
) -> tuple:
    """Serve ``env_file`` with the reference; return ``(proc, port)``.

    It runs isolated (``-I``, cwd = the venv) because ``python -m`` would
    otherwise put the repository root, which holds the project's own ``hud``
    package, first on ``sys.path``. The fd limit is raised first so that the
    server inherits it; the server's stderr (a runpy warning, shutdown
    tracebacks) goes to ``SERVER_LOG``.
    """
    raise_nofile_limit()
    cmd = [
        str(_venv_python(Path(venv))),
        "-I",
        "-m",
        "hud.environment.server",
        str(Path(env_file).resolve()),
        "--host",
        HOST,
        "--port",
        "0",
    ]
    log(f"$ {' '.join(cmd)}  (stderr -> {SERVER_LOG})")
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(SERVER_LOG, "w") as errlog:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            cmd, cwd=str(venv), env=_child_env(), stdout=subprocess.PIPE, stderr=errlog, text=True
        )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        port = _await_port(proc, lines, timeout)
    except BaseException:
        stop_server(proc)
        log("server stderr tail: " + _tail(SERVER_LOG))
        raise
    log(f"reference server pid {proc.pid} on port {port}")
    return proc, port


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the server (it shuts down gracefully), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of /proc/<pid>/status, or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------- JSON-RPC


class RpcError(Exception):
    """An error reply, a mismatched id, or a reply that fails the benchmark's checks."""


def _frame(req_id: int, method: str, params: dict) -> bytes:
    msg = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _parse_reply(line: bytes, req_id: int) -> dict:
    """The ``result`` object of a reply line; raise on EOF, errors, or a wrong id."""
    if not line:
        raise ConnectionError("server closed the connection")
    msg = json.loads(line)
    if msg.get("id") != req_id:
        raise RpcError(f"reply id {msg.get('id')!r} != request id {req_id!r}")
    if "error" in msg:
        err = msg["error"]
        raise RpcError(f"{err.get('code')}: {err.get('message')}")
    result = msg.get("result")
    if not isinstance(result, dict):
        raise RpcError(f"non-object result: {result!r}")
    return result


def _check_prompt(result: dict) -> None:
    if not isinstance(result.get("prompt"), str):
        raise RpcError(f"tasks.start gave no prompt: {result!r}")


def _check_score(result: dict) -> None:
    if result.get("score") != 1.0:
        raise RpcError(f"tasks.grade score {result.get('score')!r} != 1.0")


class BlockingRpc:
    """One blocking TCP connection speaking newline JSON-RPC (one call in flight)."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.last_id = 0

    def call(self, method: str, params: dict) -> dict:
        self.last_id += 1
        self.sock.sendall(_frame(self.last_id, method, params))
        return _parse_reply(self.rfile.readline(), self.last_id)

    def cycle(self) -> None:
        """tasks.start then tasks.grade with the right answer, both checked."""
        _check_prompt(self.call("tasks.start", {"id": TASK_ID, "args": TASK_ARGS}))
        _check_score(self.call("tasks.grade", {"answer": ANSWER}))

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> BlockingRpc:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRpc:
    """One asyncio TCP connection speaking newline JSON-RPC (one call in flight)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer, self.last_id = reader, writer, 0

    @classmethod
    async def connect(cls, port: int) -> AsyncRpc:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def call(self, method: str, params: dict) -> dict:
        self.last_id += 1
        self.writer.write(_frame(self.last_id, method, params))
        await self.writer.drain()
        return _parse_reply(await self.reader.readline(), self.last_id)

    async def cycle(self) -> None:
        """tasks.start then tasks.grade with the right answer, both checked."""
        _check_prompt(await self.call("tasks.start", {"id": TASK_ID, "args": TASK_ARGS}))
        _check_score(await self.call("tasks.grade", {"answer": ANSWER}))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# ------------------------------------------------------------ B1: cycles


class _Tally:
    """Latency samples plus failure count and first error of a timed loop."""

    def __init__(self) -> None:
        self.samples: list = []
        self.failures = 0
        self.first_error: str | None = None
        self.wall_s = 0.0

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        if self.first_error is None:
            self.first_error = describe(exc)

    def fields(self, n: int) -> dict:
        ok = len(self.samples)
        return {
            "n": n,
            **summarize_ms(self.samples),
            "cycles_per_s": round(ok / self.wall_s, 1) if self.wall_s > 0 else None,
            "failures": self.failures,
            "first_error": self.first_error,
        }


def _timed_loop(step, n: int, warmup: int) -> _Tally:
    """Call ``step()`` warmup + n times; time the last n. RpcError is a failure."""
    for _ in range(warmup):
        step()
    tally = _Tally()
    begin = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            step()
        except RpcError as exc:
            tally.fail(exc)
            continue
        tally.samples.append((time.perf_counter() - t0) * 1000.0)
    tally.wall_s = time.perf_counter() - begin
    return tally


def _failed(bench: str, n: int, exc: BaseException, **extra) -> dict:
    """Record for a bench that aborted (transport error, timeout, crash)."""
    return _record(bench, n=n, failures=n, first_error=describe(exc), **extra)


def bench_cycle_blocking(
    port: int, n: int = 2000, warmup: int = 200, timeout: float = 10.0
) -> dict:
    """B1.raw_persistent: one blocking socket, ``hello`` once, n start+grade cycles."""
    extra = {"warmup": warmup, "connections": 1, "client": "blocking stdlib socket"}
    try:
        with BlockingRpc(port, timeout) as rpc:
            rpc.call("hello", {})
            tally = _timed_loop(rpc.cycle, n, warmup)
    except (OSError, ValueError, RpcError) as exc:
        return _failed("B1.raw_persistent", n, exc, **extra)
    return _record("B1.raw_persistent", **tally.fields(n), **extra)


def _conn_cycle(port: int, timeout: float) -> None:
    """Fresh connection: hello, start, grade, close."""
    with BlockingRpc(port, timeout) as rpc:
        rpc.call("hello", {})
        rpc.cycle()


def bench_conn_per_cycle(port: int, n: int = 500, warmup: int = 50, timeout: float = 10.0) -> dict:
    """B1.raw_conn_per_cycle: a new blocking connection (hello+start+grade) per cycle."""
    extra = {"warmup": warmup, "client": "blocking stdlib socket"}
    try:
        tally = _timed_loop(lambda: _conn_cycle(port, timeout), n, warmup)
    except (OSError, ValueError, RpcError) as exc:
        return _failed("B1.raw_conn_per_cycle", n, exc, **extra)
    return _record("B1.raw_conn_per_cycle", **tally.fields(n), **extra)


async def _async_timed_cycles(port: int, n: int, warmup: int) -> _Tally:
    rpc = await AsyncRpc.connect(port)
    try:
        await rpc.call("hello", {})
        for _ in range(warmup):
            await rpc.cycle()
        tally = _Tally()
        begin = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                await rpc.cycle()
            except RpcError as exc:
                tally.fail(exc)
                continue
            tally.samples.append((time.perf_counter() - t0) * 1000.0)
        tally.wall_s = time.perf_counter() - begin
        return tally
    finally:
        await rpc.close()


def bench_cycle(port: int, n: int = 2000, warmup: int = 200, timeout: float = 120.0) -> dict:
    """B1.asyncio_persistent: one asyncio connection, ``hello`` once, n cycles.

    ``timeout`` bounds the whole run (no per-call timer, to keep it off the path).
    """
    extra = {"warmup": warmup, "connections": 1, "client": "asyncio stdlib streams"}
    try:
        tally = asyncio.run(asyncio.wait_for(_async_timed_cycles(port, n, warmup), timeout))
    except (OSError, ValueError, RpcError, asyncio.TimeoutError) as exc:  # noqa: UP041
        return _failed("B1.asyncio_persistent", n, exc, **extra)
    return _record("B1.asyncio_persistent", **tally.fields(n), **extra)


# ------------------------------------------------- B2: concurrent sessions


async def _one_session(port: int, timeout: float) -> tuple:
    """hello + start + grade on a fresh connection; return (ms, None) or (None, error)."""
    t0 = time.perf_counter()

    async def body() -> float:
        rpc = await AsyncRpc.connect(port)
        try:
            await rpc.call("hello", {})
            await rpc.cycle()
            return (time.perf_counter() - t0) * 1000.0
        finally:
            await rpc.close()

    try:
        return await asyncio.wait_for(body(), timeout), None
    except Exception as exc:  # every failure is data here
        return None, describe(exc)


async def _poll_rss(pid: int, done: asyncio.Event, interval: float) -> int:
    """Max VmRSS (kB) of ``pid`` sampled every ``interval`` s until ``done``."""
    peak = 0
    while not done.is_set():
        peak = max(peak, _proc_status_kb(pid, "VmRSS") or 0)
        # asyncio.TimeoutError is not the builtin TimeoutError before 3.11.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), interval)
    return max(peak, _proc_status_kb(pid, "VmRSS") or 0)


async def _run_sessions(port: int, sessions: int, pid: int | None, timeout: float) -> tuple:
    """Launch all sessions at once; return (outcomes, wall_s, peak_rss_kb)."""
    done = asyncio.Event()
    poller = asyncio.ensure_future(_poll_rss(pid, done, 0.005)) if pid else None
    begin = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(_one_session(port, timeout) for _ in range(sessions)))
    finally:
        wall_s = time.perf_counter() - begin
        done.set()
        peak = await poller if poller else None
    return outcomes, wall_s, peak


def _mb(kb: int | None) -> float | None:
    return round(kb / 1024.0, 1) if kb else None


def _rss_fields(idle_kb: int | None, peak_kb: int | None, pid: int | None, sessions: int) -> dict:
    per_session = None
    if idle_kb and peak_kb:
        per_session = round((peak_kb - idle_kb) / float(sessions), 2)
    return {
        "server_idle_rss_mb": _mb(idle_kb),
        "server_peak_rss_mb": _mb(peak_kb),
        "server_hwm_mb": _mb(_proc_status_kb(pid, "VmHWM") if pid else None),
        "per_session_kb": per_session,
    }


def bench_concurrent(
    port: int, sessions: int = 1000, server_pid: int | None = None, timeout: float = 60.0
) -> dict:
    """B2.concurrent_sessions: ``sessions`` connections at once, each hello+start+grade.

    With ``server_pid`` the server's VmRSS is read before (idle) and polled every
    5 ms during the run (peak); per-session memory = (peak - idle) / sessions.
    ``timeout`` bounds each session.
    """
    soft, _hard = raise_nofile_limit()
    idle_kb = _proc_status_kb(server_pid, "VmRSS") if server_pid else None
    outcomes, wall_s, peak_kb = asyncio.run(_run_sessions(port, sessions, server_pid, timeout))
    times = [ms for ms, _err in outcomes if ms is not None]
    errors = [err for _ms, err in outcomes if err is not None]
    return _record(
        "B2.concurrent_sessions",
        n=sessions,
        **summarize_ms(times),
        wall_s=round(wall_s, 4),
        sessions_per_s=round(len(times) / wall_s, 1),
        ok=len(times),
        failures=len(errors),
        first_error=errors[0] if errors else None,
        n_ge_1s=sum(1 for ms in times if ms >= 1000.0),
        **_rss_fields(idle_kb, peak_kb, server_pid, sessions),
        nofile_soft=soft,
    )


# ------------------------------------------------------------ B5: CLI


def _run_cli(cmd: list, env: dict, timeout: float) -> str:
    """Run one CLI process (cwd = its venv, away from the project's ``hud``).

    Return stdout; raise RpcError on a non-zero exit.
    """
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(Path(cmd[0]).parent.parent),
    )
    if out.returncode != 0:
        what = " ".join(cmd[1:3])
        raise RpcError(f"{what} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return out.stdout


def _cli_once(hud: str, url: str, env: dict, timeout: float) -> tuple:
    """``hud task start`` then ``hud task grade``; return (start_ms, grade_ms)."""
    t0 = time.perf_counter()
    prompt = _run_cli([hud, "task", "start", TASK_ID, "--url", url], env, timeout)
    t1 = time.perf_counter()
    score = _run_cli(
        [hud, "task", "grade", TASK_ID, "--answer", ANSWER, "--url", url], env, timeout
    )
    t2 = time.perf_counter()
    if "strawberry" not in prompt:
        raise RpcError(f"unexpected prompt: {prompt[:200]!r}")
    if score.strip() != "1.0":
        raise RpcError(f"unexpected score output: {score[:200]!r}")
    return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0


def cli_cycles(once: Callable[[], tuple], n: int, warmup: int) -> tuple:
    """Run ``once()`` (start, then grade, as two CLI processes) warmup + n times; return
    (tally of the cycles, start ms, grade ms) for the n after the warmup."""
    starts: list[float] = []
    grades: list[float] = []
    tally = _Tally()
    for i in range(warmup + n):
        try:
            start_ms, grade_ms = once()
        except (RpcError, OSError, subprocess.SubprocessError) as exc:
            if i >= warmup:
                tally.fail(exc)
            continue
        if i >= warmup:
            starts.append(start_ms)
            grades.append(grade_ms)
            tally.samples.append(start_ms + grade_ms)
    tally.wall_s = sum(tally.samples) / 1000.0
    return tally, starts, grades


def bench_cli_cycle(
    venv: Path | str,
    port: int,
    n: int = 5,
    warmup: int = 1,
    timeout: float = 120.0,
    quiet_network: bool = True,
) -> dict:
    """B5.cli_cycle: ``hud task start`` + ``hud task grade --answer 3`` as two processes.

    ``grade`` on a fresh connection adopts the single parked runner left by
    ``start``. With ``quiet_network`` the CLI's analytics post and PyPI version
    check are disabled (see CLI_QUIET_ENV).
    """
    hud = str(Path(venv) / "bin" / "hud")
    url = f"tcp://{HOST}:{port}"
    env = _child_env(CLI_QUIET_ENV if quiet_network else None)
    tally, starts, grades = cli_cycles(lambda: _cli_once(hud, url, env, timeout), n, warmup)
    return _record(
        "B5.cli_cycle",
        **tally.fields(n),
        warmup=warmup,
        start_p50_ms=summarize_ms(starts)["p50_ms"],
        grade_p50_ms=summarize_ms(grades)["p50_ms"],
        cli_env=",".join(f"{k}={v}" for k, v in sorted(CLI_QUIET_ENV.items()))
        if quiet_network
        else "default",
    )


# ------------------------------------------------------------------- main

BENCHES = ("blocking", "asyncio", "conn", "cli", "concurrent")


def _parse_args(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="reference venv path")
    parser.add_argument("--n", type=int, default=2000, help="B1 persistent cycles")
    parser.add_argument("--warmup", type=int, default=200, help="B1 persistent warmup")
    parser.add_argument("--conn-n", type=int, default=500, help="B1 conn-per-cycle cycles")
    parser.add_argument("--sessions", type=int, default=1000, help="B2 concurrent sessions")
    parser.add_argument("--cli-n", type=int, default=5, help="B5 CLI cycles")
    parser.add_argument(
        "--cli-default-env", action="store_true", help="leave the CLI's analytics/version check on"
    )
    parser.add_argument(
        "--only", default=",".join(BENCHES), help="comma list from: " + ",".join(BENCHES)
    )
    return parser.parse_args(argv)


def _run_benches(args: argparse.Namespace, venv: Path, proc: subprocess.Popen, port: int) -> None:
    """Run the selected benches in a fixed order (B2 last: it leaves RSS grown)."""
    only = set(args.only.split(","))
    plan = [
        ("blocking", lambda: bench_cycle_blocking(port, args.n, args.warmup)),
        ("asyncio", lambda: bench_cycle(port, args.n, args.warmup)),
        ("conn", lambda: bench_conn_per_cycle(port, args.conn_n, max(1, args.conn_n // 10))),
        (
            "cli",
            lambda: bench_cli_cycle(venv, port, args.cli_n, quiet_network=not args.cli_default_env),
        ),
        ("concurrent", lambda: bench_concurrent(port, args.sessions, proc.pid)),
    ]
    for name, run in plan:
        if name in only:
            log(f"running {name}")
            print(json.dumps(run()), flush=True)


def main(argv: list | None = None) -> int:
    args = _parse_args(argv)
    venv = ensure_ref_venv(args.venv)
    if venv is None:
        log("reference unavailable; nothing measured")
        return 2
    try:
        proc, port = start_ref_server(venv)
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        log(f"reference server did not start: {exc}")
        return 2
    try:
        _run_benches(args, venv, proc, port)
    finally:
        stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
