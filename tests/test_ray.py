"""The ray runtime on a real two-node cluster on this machine (one CPU each): rollouts spread
over both nodes, a node killed under a rollout makes it an error, never a reward, and each
rollout's environment is a fresh process unless ``isolation=inprocess`` asks otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from hud.agents import create_agent
from hud.eval.taskset import Taskset
from hud.runtimes.ray import Capacity, RayRuntime, Request, request_for

pytestmark = pytest.mark.anyio
RAY = str(Path(sys.executable).parent / "ray")
# A cluster on loopback, for this test only: no token to hand to every process.
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}

ENV = '''
import asyncio, os, pathlib
from hud import Environment
from hud.runtimes.ray import resources

env = Environment("gated")
GATE = pathlib.Path({gate!r})

@env.template(solution=lambda n: str(n))
@resources(cpu=1)
async def wait(n: int):
    (GATE / f"started-{{n}}").write_text(str(os.getpid()))
    while not (GATE / "go").exists():
        await asyncio.sleep(0.05)
    answer = yield f"say {{n}}"
    yield 1.0 if answer == str(n) else 0.0

tasks = [wait(n=i) for i in range(4)]
'''

STATEFUL = '''
import json, os, pathlib
from hud import Environment

env = Environment("stateful")
OUT = pathlib.Path({out!r})
SEEN = []  # module state: what earlier rollouts in this process left

@env.template(solution=lambda n: "done")
async def remember(n: int):
    (OUT / f"{{n}}.json").write_text(json.dumps({{"seen": list(SEEN), "pid": os.getpid()}}))
    SEEN.append(n)
    answer = yield "say done"
    yield 1.0 if answer == "done" else 0.0

@env.template(solution=lambda n: "done")
async def crash(n: int):
    if n == 0:
        os._exit(3)  # the environment's process dies under the rollout
    answer = yield "say done"
    yield 1.0 if answer == "done" else 0.0

tasks = [remember(n=i) for i in range(4)] + [crash(n=i) for i in range(4)]
'''


class Cluster:
    def __init__(self, root: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.client_port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.client_url = f"ray://127.0.0.1:{self.client_port}"
        common = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20), "--block",
                  "--disable-usage-stats"]
        self.worker: subprocess.Popen[bytes] | None = None
        self.head = self._start([RAY, "start", "--head", "--port", str(self.port),
                                 "--node-ip-address", "127.0.0.1", "--include-dashboard",
                                 "false", "--ray-client-server-port", str(self.client_port),
                                 "--temp-dir", str(root), *common])
        self._wait_for(1)
        self.worker = self._start([RAY, "start", "--address", self.address,
                                   "--node-ip-address", "127.0.0.1", *common])
        self.head_node = self._alive()[0]
        self._wait_for(2)
        self.worker_node = next(n for n in self._alive() if n != self.head_node)

    def _start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        # its own session, so stopping it stops its raylet and workers, and nothing else
        return subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, **RAY_ENV})

    def _alive(self) -> list[str]:
        script = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                  "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **RAY_ENV})
        return done.stdout.split() if done.returncode == 0 else []

    def _wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 180
        while len(self._alive()) < count:
            assert time.monotonic() < deadline, f"the ray cluster did not reach {count} nodes"
            time.sleep(1)

    def worker_processes(self) -> list[int]:
        """The second node's every process (its raylet, Ray workers, and what they started):
        they put themselves in process groups of their own, so walk the tree from the
        ``ray start`` we started."""
        assert self.worker is not None
        table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True,
                               text=True, check=True).stdout.split()
        children: dict[int, list[int]] = {}
        for pid, ppid in zip(table[::2], table[1::2], strict=True):
            children.setdefault(int(ppid), []).append(int(pid))
        found, frontier = [], [self.worker.pid]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            frontier += children.get(pid, [])
        return found

    def kill_worker(self) -> None:
        """SIGKILL the second node's every process."""
        for pid in self.worker_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to each ``ray start`` alone: it drains its node and stops the node's
        processes in about two seconds. (Signalled too, its GCS would be gone before the
        drain, which then waits 30 s for it.) SIGKILL to what is left of its group after."""
        for proc in (self.worker, getattr(self, 'head', None)):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # a short temp dir: Ray's socket paths must fit in 107 bytes
    root = Path(f"/tmp/hudray{os.getpid()}")
    root.mkdir(exist_ok=True)
    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    started = Cluster.__new__(Cluster)
    started.head = started.worker = None  # type: ignore[assignment]
    try:
        started.__init__(root)  # type: ignore[misc]
        yield started
    finally:
        started.stop()
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.update({name: value})


def gated_env(folder: Path) -> Path:
    (folder / "env.py").write_text(textwrap.dedent(ENV.format(gate=str(folder))))
    return folder / "env.py"


def nodes_of(job: Any) -> list[str]:
    return [next(s.data["node"] for s in run.trace.steps if s.kind == "placement")
            for run in job.runs]


def ray_workers_of(job: Any) -> list[tuple[str, int] | None]:
    """The Ray worker process (node, pid) that ran each rollout, in the job's order (None:
    the rollout's trace has no placement, its Ray worker died under it)."""
    placements = [next((s.data for s in run.trace.steps if s.kind == "placement"), None)
                  for run in job.runs]
    return [(p["node"], p["pid"]) if p else None for p in placements]


async def run_stateful(cluster: Cluster, folder: Path, spec: str, template: str) -> Any:
    """Four rollouts of ``template``, one at a time, on the runtime ``spec`` names."""
    from hud.runtimes import RuntimeOptions, create_runtime

    (folder / "env.py").write_text(textwrap.dedent(STATEFUL.format(out=str(folder))))
    taskset = Taskset.from_source(folder / "env.py")
    taskset = Taskset([t for t in taskset if t.id == template], name=template)
    runtime = create_runtime(spec, RuntimeOptions(solutions=True))
    async with runtime:
        return await taskset.run(create_agent("oracle"), runtime=runtime, max_concurrent=1)


def seen_by_rollouts_after_another_on_its_ray_worker(job: Any, folder: Path
                                                     ) -> dict[int, list[int]]:
    """For each rollout that ran on a Ray worker after an earlier one: what it saw."""
    reports = {run.task.args["n"]: json.loads((folder / f"{run.task.args['n']}.json")
                                               .read_text()) for run in job.runs}
    later: dict[int, list[int]] = {}
    for index, (run, worker) in enumerate(zip(job.runs, ray_workers_of(job), strict=True)):
        if worker in ray_workers_of(job)[:index]:
            later[run.task.args["n"]] = reports[run.task.args["n"]]["seen"]
    assert later, "no two rollouts ran on the same Ray worker"
    return later


async def test_rollouts_spread_over_both_nodes_through_the_ray_client(
        cluster: Cluster, tmp_path: Path) -> None:
    taskset = Taskset.from_source(gated_env(tmp_path))
    async with RayRuntime(cluster.client_url, solutions=True) as runtime:
        running = asyncio.ensure_future(taskset.run(create_agent("oracle"), runtime=runtime))
        # two rollouts at once, one CPU per node: they can only run on different nodes
        while len(list(tmp_path.glob("started-*"))) < 2:
            await asyncio.sleep(0.1)
        (tmp_path / "go").touch()
        job = await running
        assert runtime.capacity is not None and runtime.capacity.total["cpu"] == 2
    assert [run.reward for run in job.runs] == [1.0] * 4, [run.error for run in job.runs]
    assert set(nodes_of(job)) == {cluster.head_node, cluster.worker_node}


async def test_a_dead_node_is_an_error_not_a_reward(cluster: Cluster, tmp_path: Path) -> None:
    taskset = Taskset.from_source(gated_env(tmp_path))
    async with RayRuntime(cluster.address, solutions=True) as runtime:
        running = asyncio.ensure_future(taskset.run(create_agent("oracle"), runtime=runtime))
        while len(list(tmp_path.glob("started-*"))) < 2:
            await asyncio.sleep(0.1)
        # back-pressure: both CPUs are held, so the other two rows wait in the driver
        assert runtime.capacity is not None and runtime.capacity.free["cpu"] == 0
        # the environments' processes: which one runs on the second node
        on_worker = [p.name for p in tmp_path.glob("started-*")
                     if int(p.read_text()) in cluster.worker_processes()]
        await asyncio.to_thread(cluster.kill_worker)
        (tmp_path / "go").touch()
        job = await running
    died = [run for run in job.runs if run.errored]
    assert len(on_worker) == 1 and [run.task.args["n"] for run in died] == \
        [int(on_worker[0].removeprefix("started-"))]
    assert died[0].reward is None and died[0].error.phase == "environment"
    assert "the node or worker running this rollout died" in died[0].error.message
    assert sorted(run.reward for run in job.runs if not run.errored) == [1.0, 1.0, 1.0]


async def test_each_rollout_gets_a_fresh_environment_process_by_default(
        cluster: Cluster, tmp_path: Path) -> None:
    job = await run_stateful(cluster, tmp_path, f"ray:{cluster.address}", "remember")
    assert [run.reward for run in job.runs] == [1.0] * 4
    later = seen_by_rollouts_after_another_on_its_ray_worker(job, tmp_path)
    assert all(seen == [] for seen in later.values()), later


async def test_isolation_inprocess_shares_the_ray_workers_process_between_rollouts(
        cluster: Cluster, tmp_path: Path) -> None:
    job = await run_stateful(cluster, tmp_path,
                             f"ray:{cluster.address}?isolation=inprocess", "remember")
    assert [run.reward for run in job.runs] == [1.0] * 4
    later = seen_by_rollouts_after_another_on_its_ray_worker(job, tmp_path)
    assert all(seen != [] for seen in later.values()), later


async def test_an_environment_that_crashes_fails_its_rollout_only(
        cluster: Cluster, tmp_path: Path) -> None:
    job = await run_stateful(cluster, tmp_path, f"ray:{cluster.address}", "crash")
    crashed, *others = job.runs
    assert crashed.reward is None and crashed.error.phase == "setup"
    assert "connection to ws://127.0.0.1:" in crashed.error.message, crashed.error
    assert [run.reward for run in others] == [1.0, 1.0, 1.0]
    # the Ray worker that ran the crashed rollout lived on and ran another
    assert ray_workers_of(job)[0] in ray_workers_of(job)[1:]


def test_the_spec_picks_the_cluster_and_the_isolation() -> None:
    from hud.runtimes import RuntimeOptions, create_runtime

    def built(spec: str) -> tuple[str | None, str]:
        runtime = create_runtime(spec, RuntimeOptions())
        assert isinstance(runtime, RayRuntime)
        return runtime.address, runtime.isolation

    assert built("ray") == (None, "process")
    assert built("ray?isolation=inprocess") == (None, "inprocess")
    assert built("ray://head:10001?isolation=process") == ("ray://head:10001", "process")
    assert built("ray:10.0.0.1:6379?isolation=inprocess") == ("10.0.0.1:6379", "inprocess")
    with pytest.raises(ValueError, match="ray: isolation must be process or inprocess, not "
                                         "'container'"):
        built("ray?isolation=container")
    with pytest.raises(ValueError, match=r"ray: unknown option 'workers' \(the one option "
                                         r"is isolation=process\|inprocess\)"):
        built("ray?workers=2")
    with pytest.raises(ValueError, match="ray: options are KEY=VALUE pairs"):
        built("ray?inprocess")


def test_a_task_file_row_asks_for_resources_and_a_bad_field_is_named() -> None:
    from hud.environment import Environment

    env = Environment("rows")

    @env.template()
    async def mcp_task(row: dict[str, Any]):  # the shape of a task file's template
        yield "prompt"
        yield 1.0

    asks = mcp_task(row={"metadata": {"resources": {"cpu": 0.5, "memory_mb": 512, "gpu": 1}}})
    assert request_for(asks) == Request(cpu=0.5, memory_mb=512, gpu=1)
    assert Request(cpu=0.5, memory_mb=512, gpu=1).ray_options() == {
        "num_cpus": 0.5, "num_gpus": 1, "memory": 512 * 2**20}
    wrong = mcp_task(row={"metadata": {"resources": {"cpus": 2}}})
    with pytest.raises(ValueError, match=r"metadata.resources: .*'cpus'.* \(fields: cpu, "
                                         r"memory_mb, gpu\)"):
        request_for(wrong)


async def test_a_rollout_larger_than_the_cluster_is_refused_not_queued_forever() -> None:
    capacity = Capacity(cpu=2, gpu=0)
    with pytest.raises(ValueError, match="a rollout asks for 1 GPUs; the cluster has 0"):
        async with capacity.hold(Request(gpu=1)):
            pass
    async with capacity.hold(Request(cpu=2)):
        assert capacity.free == {"cpu": 0, "gpu": 0}
    assert capacity.free == {"cpu": 2, "gpu": 0}


async def test_a_ray_client_join_that_the_proxy_aborts_is_tried_again(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's client proxy now and then fails to start a new client's server ("Initialization
    failure from server"); the runtime joins on its next try instead of failing a rollout."""
    import ray

    real, calls = ray.init, []

    def aborted_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("address"))
        if len(calls) == 1:
            raise ConnectionAbortedError("Initialization failure from server: (as Ray says)")
        return real(*args, **kwargs)

    monkeypatch.setattr(ray, "init", aborted_once)
    async with RayRuntime(cluster.client_url) as runtime:
        await runtime._connected()
        # it read the cluster: one CPU a node, and the second node may be gone by now
        # (test_a_dead_node_is_an_error_not_a_reward kills it; Ray notices in its own time)
        assert runtime.capacity is not None and runtime.capacity.total["cpu"] in (1, 2)
    assert calls == [cluster.client_url] * 2
