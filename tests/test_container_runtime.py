"""``hud build`` and the ``container:IMAGE`` runtime, with podman and the examples' images,
and with the real docker CLI against podman's Docker-compatible API.

Opt-in like tests/test_container.py (HUD_TEST_CONTAINER=1, or CI=true where it must run):
the two images are built once per module, by ``hud build`` itself; the second build reuses
the first one's layers. The docker tests build on the letter_count image, in the same
storage (the API is podman's), and skip (fail in CI) without the docker CLI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hud.capabilities.sandbox import leftovers
from test_container import BASE_IMAGE, REPO_ROOT, _require_container_tools

from hud.agents import create_agent
from hud.client import Client
from hud.eval import Run, Taskset
from hud.protocol import errors
from hud.runtimes import RuntimeOptions, create_runtime
from hud.runtimes.container import ContainerRuntime
from hud.runtimes.engine import OWNER_LABEL, Engine, find_engine, owner_id

EXAMPLES = REPO_ROOT / "examples"
DOCKER_TAG = "localhost/hud-docker-test:1"


def hud(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def owned_by(owner: str) -> list[str]:
    """Names of the containers (running or not) whose owner label is ``owner``."""
    return podman("ps", "--all", f"--filter=label={OWNER_LABEL}={owner}",
                  "--format={{.Names}}").split()


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    """``hud build`` of the letter_count and coding examples: their tags, by example."""
    _require_container_tools()
    built = {}
    for example in ("letter_count", "coding"):
        proc = hud("build", ".", "--engine", "podman", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                   "--build-arg", f"ENV_PATH=examples/{example}/env.py")
        assert proc.returncode == 0, proc.stderr[-4000:]
        built[example] = proc.stdout
    try:
        yield {name: tag.strip() for name, tag in built.items()}
    finally:
        for tag in built.values():
            subprocess.run(["podman", "rmi", "--force", tag.strip()], capture_output=True)


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment in which hud drives the real docker CLI against podman's
    Docker-compatible API (``podman system service``, on a socket of its own)."""
    _require_container_tools()
    if shutil.which("docker") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the docker tests: the docker CLI is not on PATH")
        pytest.skip("the docker CLI is not on PATH")
    sock = tmp_path_factory.mktemp("docker") / "podman.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "HUD_CONTAINER_ENGINE": "docker"}
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode:
            if service.poll() is not None or time.monotonic() > deadline:
                service.kill()
                pytest.fail(f"podman system service did not serve: {service.communicate()[1]}")
            time.sleep(0.1)
        yield env
    finally:
        service.terminate()
        service.communicate(timeout=60)


def docker(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          env=env, timeout=120).stdout


@pytest.fixture(scope="module")
def docker_build(images: dict[str, str], docker_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[
                     subprocess.CompletedProcess[str]]:
    """``hud build --engine docker`` of a small image on the letter_count one (a COPY from
    the context and a RUN step), with BuildKit asked for where docker has no buildx."""
    context = tmp_path_factory.mktemp("docker-build")
    (context / "Dockerfile.hud").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY marker.txt /marker.txt\n"
        "RUN test -f /marker.txt\n")
    (context / "marker.txt").write_text("built by docker\n")
    env = dict(docker_env)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode:
        env["DOCKER_BUILDKIT"] = "1"
    proc = hud("build", str(context), "-t", DOCKER_TAG, "--engine", "docker",
               "--build-arg", f"BASE_IMAGE={images['letter_count']}", env=env)
    try:
        yield proc
    finally:
        subprocess.run(["podman", "rmi", "--force", DOCKER_TAG], capture_output=True)


def test_build_with_docker_without_buildx(docker_build: subprocess.CompletedProcess[str],
                                          docker_env: dict[str, str]) -> None:
    """docker without its buildx plugin refuses a BuildKit build: hud asks for the legacy
    builder, so the build works (and prints the tag alone on stdout)."""
    assert (docker_build.returncode, docker_build.stdout) == (0, f"{DOCKER_TAG}\n"), \
        docker_build.stderr[-4000:]
    marker = docker(docker_env, "run", "--rm", DOCKER_TAG, "cat", "/marker.txt")
    assert marker == "built by docker\n"


def test_eval_with_docker_in_fresh_containers_leaves_none(
        docker_build: subprocess.CompletedProcess[str], docker_env: dict[str, str],
        tmp_path: Path) -> None:
    """``hud eval --runtime container:IMAGE`` through the docker CLI: every rollout graded in
    its own container, each removed (the warm one too) by the time hud exits."""
    assert docker_build.returncode == 0, docker_build.stderr[-4000:]
    eval_letter_count_in_containers(DOCKER_TAG, tmp_path, env=docker_env)


@pytest.mark.anyio
async def test_a_docker_container_is_published_on_loopback_only(
        docker_build: subprocess.CompletedProcess[str], docker_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert docker_build.returncode == 0, docker_build.stderr[-4000:]
    for key, value in docker_env.items():
        monkeypatch.setenv(key, value)
    taskset = Taskset.from_source(EXAMPLES / "letter_count" / "tasks.py").filter(["0"])
    seen: dict[str, str] = {}

    async def agent(run: Run) -> None:
        [name] = owned_by(owner_id())
        seen["ports"] = docker(docker_env, "port", name).strip()
        with pytest.raises(errors.Unauthorized):
            await Client.connect(run.client.url.replace("/v1/control", ""))
        run.answer = 3

    async with ContainerRuntime(DOCKER_TAG) as runtime:
        assert runtime.engine.dialect == "docker"
        job = await taskset.run(agent, runtime=runtime)
    [run] = job.runs
    assert (run.status, run.reward) == ("completed", 1.0), run.error
    host_port = int(seen["ports"].rpartition(":")[2])
    assert seen["ports"] == f"8765/tcp -> 127.0.0.1:{host_port}"
    assert owned_by(owner_id()) == []


def test_build_tags_the_image_with_the_environments_name_and_version(
        images: dict[str, str]) -> None:
    assert images == {"letter_count": "letter-count:1.0.0", "coding": "coding:1.0.0"}
    served = podman("image", "inspect", "--format={{.Config.Env}}", images["coding"])
    assert "HUD_ENV_PATH=/src/examples/coding/env.py" in served


def test_build_without_an_engine_says_so(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.hud").write_text("FROM scratch\n")
    env = {**os.environ, "PATH": str(tmp_path)}  # no podman, no docker
    proc = hud("build", str(tmp_path), "-t", "x:1", env=env)
    assert (proc.returncode, proc.stdout) == (9, "")
    assert proc.stderr == ("error: no container engine found: install podman or docker "
                           "(neither is on PATH)\n")


def test_a_failed_build_exits_9_with_the_engines_output(tmp_path: Path) -> None:
    _require_container_tools()
    (tmp_path / "Dockerfile.hud").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo the-step-failed >&2; exit 3\n")
    proc = hud("build", str(tmp_path), "-t", "hud-test-fails:1", "--engine", "podman")
    assert (proc.returncode, proc.stdout) == (9, "")
    assert "the-step-failed" in proc.stderr
    assert proc.stderr.endswith("error: podman build of hud-test-fails:1 failed with exit "
                                "code 3 (its output is above)\n"), proc.stderr[-2000:]


def test_eval_in_fresh_containers_leaves_none(images: dict[str, str], tmp_path: Path) -> None:
    """``hud eval --runtime container:IMAGE`` with a warm container and one start at a time:
    every rollout graded, every container (the warm one too) gone when it exits."""
    eval_letter_count_in_containers(images["letter_count"], tmp_path, "--max-starting", "1")


def eval_letter_count_in_containers(image: str, tmp_path: Path, *flags: str,
                                    env: dict[str, str] | None = None) -> None:
    """``hud eval`` of letter_count's five tasks, a container per rollout and one warm:
    every run completed with reward 1, and no container of that hud left when it exits."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "eval", "examples/letter_count/tasks.py", "oracle",
         "--runtime", f"container:{image}", "--warm", "1", *flags, "--max-concurrent", "2",
         "--json", "--trace-dir", str(tmp_path / "traces")],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    runs = msgspec.json.decode(out)["runs"]
    assert [(run["status"], run["reward"]) for run in runs] == [("completed", 1.0)] * 5
    assert owned_by(owner_id(proc.pid)) == []


@pytest.mark.anyio
async def test_the_coding_workspace_runs_inside_the_container(images: dict[str, str]) -> None:
    """The ssh capability is a shell inside the rollout's own container; the one published
    port is on 127.0.0.1 only and wants the token. Through the socket directory the runtime
    mounts, hud's ssh opener gets the daemon's connection itself (no relay), and a program
    given the binding's host:port has its connection handed to the server in the container
    (one relay) instead of a bare tunnel (two)."""
    taskset = Taskset.from_source(EXAMPLES / "coding" / "tasks.py").filter(["fix_failing_test"])
    seen: dict[str, Any] = {}

    async def agent(run: Run) -> None:
        shell = await run.client.open("shell")
        seen["handed"] = shell.handed is not None
        port = int((await run.client.binding("shell")).url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen["banner"] = await asyncio.wait_for(reader.readline(), 30)
        forwarder = run.client._tunnels.forwarders["shell"]
        seen["local"], seen["bare"] = forwarder.local, len(forwarder._splices)
        seen["mounts"] = runtime._mount_root
        writer.close()
        seen["hostname"] = (await shell.run("hostname")).stdout.strip()
        seen["tests"] = (await shell.run("python3 -m unittest -q")).stderr
        [name] = owned_by(owner_id())
        seen["id"] = podman("inspect", "--format={{.Config.Hostname}}", name).strip()
        seen["ports"] = podman("port", name).strip()
        url = run.client.url.replace("/v1/control", "")
        with pytest.raises(errors.Unauthorized):
            await Client.connect(url)
        run.answer = "done"

    async with ContainerRuntime(images["coding"], engine="podman") as runtime:
        job = await taskset.run(agent, runtime=runtime)
    [run] = job.runs
    assert (run.status, run.reward) == ("completed", 0.0), run.error
    assert seen["hostname"] == seen["id"]
    assert "FAILED" in seen["tests"]
    assert seen["handed"] and seen["banner"].startswith(b"SSH-2.0-")
    assert seen["local"].startswith(seen["mounts"] + "/") and seen["bare"] == 0
    assert not os.path.exists(seen["mounts"])  # removed with the runtime
    host_port = int(seen["ports"].rpartition(":")[2])
    assert seen["ports"] == f"8765/tcp -> 127.0.0.1:{host_port}"
    assert owned_by(owner_id()) == []


@pytest.mark.anyio
async def test_failed_and_cancelled_rollouts_leave_no_container(images: dict[str, str]) -> None:
    taskset = Taskset.from_source(EXAMPLES / "letter_count" / "tasks.py").filter(["0"])
    in_agent = asyncio.Event()

    async def crashes(run: Run) -> None:
        raise RuntimeError("the agent crashed")

    async def hangs(run: Run) -> None:
        in_agent.set()
        await asyncio.sleep(3600)

    async with ContainerRuntime(images["letter_count"], engine="podman", warm=1) as runtime:
        failed = await taskset.run(crashes, runtime=runtime)
        hung = asyncio.ensure_future(taskset.run(hangs, runtime=runtime))
        await in_agent.wait()
        assert len(owned_by(owner_id())) == 2  # the hung rollout's, and the warm one
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
    [run] = failed.runs
    assert (run.status, run.error and run.error.phase) == ("error", "agent")
    assert owned_by(owner_id()) == []


@pytest.mark.anyio
async def test_an_image_that_does_not_serve_is_an_environment_error() -> None:
    """The base image's command (bash, no terminal) exits at once: the rollout fails in its
    environment phase, saying so with the container's logs, and the container is removed."""
    _require_container_tools()
    taskset = Taskset.from_source(EXAMPLES / "letter_count" / "tasks.py").filter(["0"])

    async def never_runs(run: Run) -> None:
        raise AssertionError("no environment, no agent")

    async with ContainerRuntime(BASE_IMAGE, engine="podman") as runtime:
        job = await taskset.run(never_runs, runtime=runtime)
    [run] = job.runs
    assert (run.status, run.error and run.error.phase) == ("error", "environment")
    assert run.error and run.error.message.startswith(
        f"container of {BASE_IMAGE} exited before serving:")
    assert owned_by(owner_id()) == []


FAULTY_ENGINE = """#!/bin/sh
# podman, but with a fault: "port" fails its first run as when another process binds the
# host port that the engine picked before the engine binds it; "mount" fails every run that
# mounts a directory, as Docker Desktop does for a path it does not share
if [ "$1" = run ]; then
    case "{fault}" in
    port) if [ ! -e "{flag}" ]; then
              touch "{flag}"
              echo "Error: listen tcp 127.0.0.1:40000: bind: address already in use" >&2
              exit 126
          fi ;;
    mount) case "$*" in *--volume=*)
              touch "{flag}"
              echo "docker: Error response from daemon: Mounts denied: the path is not shared" >&2
              exit 125 ;;
           esac ;;
    esac
fi
exec {podman} "$@"
"""


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["port", "mount"])
async def test_an_engine_fault_at_start_is_survived(
        fault: str, images: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A start whose published port another process took first ("address already in use")
    is tried again under a new name; an engine that will not mount the socket directory
    gets containers without it (bare tunnels). Either way the rollout runs, and no container
    is left behind."""
    real = shutil.which("podman")
    assert real is not None
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "podman"
    wrapper.write_text(FAULTY_ENGINE.format(fault=fault, flag=tmp_path / "faulted", podman=real))
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    taskset = Taskset.from_source(EXAMPLES / "letter_count" / "tasks.py").filter(["0"])
    mounted: list[object] = []

    async def oracle(run: Run) -> None:
        mounted.append(run.client.local_mount)
        await create_agent("oracle")(run)

    async with ContainerRuntime(images["letter_count"], engine="podman",
                                solutions=True) as runtime:
        assert runtime.engine.path == str(wrapper)
        job = await taskset.run(oracle, runtime=runtime)
        assert runtime.mounts == (fault != "mount")
    [run] = job.runs
    assert (run.status, run.reward, run.error) == ("completed", 1.0, None)
    assert (tmp_path / "faulted").exists()  # the fault did happen
    assert (mounted[0] is None) == (fault == "mount")
    assert owned_by(owner_id()) == []


HANGING_EVAL = """
import asyncio, sys
from hud.eval import Taskset
from hud.runtimes.container import ContainerRuntime

async def hangs(run):
    print("in agent", flush=True)
    await asyncio.sleep(3600)

async def main():
    taskset = Taskset.from_source(sys.argv[2]).filter(["0"])
    async with ContainerRuntime(sys.argv[1], engine=sys.argv[3]) as runtime:
        await taskset.run(hangs, runtime=runtime)

asyncio.run(main())
"""


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_a_killed_hud_leaves_no_container(images: dict[str, str], engine: str,
                                          request: pytest.FixtureRequest) -> None:
    """SIGKILL gives hud no chance to clean up: its reaper removes the container."""
    env = request.getfixturevalue("docker_env") if engine == "docker" else None
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_EVAL, images["letter_count"],
         str(EXAMPLES / "letter_count" / "tasks.py"), engine],
        stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "in agent\n"
    owner = owner_id(proc.pid)
    assert len(owned_by(owner)) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while owned_by(owner) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert owned_by(owner) == []


@pytest.mark.anyio
@pytest.mark.parametrize("engine", ["podman", "docker", "podman-docker"])
async def test_leftovers_of_a_dead_hud_are_swept(engine: str, request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """Containers whose owner is a process gone from this host (its reaper died with it)
    are removed by the next container runtime; live owners' containers are left alone.
    Another label whose value holds a space, a comma and our label's name does not
    confuse the owner's. ``podman-docker``: a ``docker`` that is podman speaks podman."""
    _require_container_tools()
    if engine == "docker":
        for key, value in request.getfixturevalue("docker_env").items():
            monkeypatch.setenv(key, value)
    dead = _dead_pid()
    names = {f"hud-test-sweep-{dead}": owner_id(dead),
             f"hud-test-keep-{os.getpid()}": owner_id()}
    for name, owner in names.items():
        podman("create", f"--name={name}", f"--label={OWNER_LABEL}={owner}",
               f"--label=a.note=see also,{OWNER_LABEL}=elsewhere:1", BASE_IMAGE)
    try:
        cli = Engine(_podman_docker(tmp_path) if engine == "podman-docker" else
                     find_engine(engine))
        swept = await cli.sweep()
        assert f"hud-test-sweep-{dead}" in swept
        assert owned_by(owner_id(dead)) == []
        assert owned_by(owner_id()) == [f"hud-test-keep-{os.getpid()}"]
        await cli.remove(*names)  # the first is gone already: the second goes all the same
        assert owned_by(owner_id()) == []
    finally:
        podman("rm", "--force", "--ignore", *names)


def _podman_docker(folder: Path) -> str:
    """A ``docker`` command that is podman, as the podman-docker package installs."""
    shim = folder / "docker"
    shim.write_text(f'#!/bin/sh\nexec {shutil.which("podman")} "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_runtime_is_registered_and_wants_an_image(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HUD_CONTAINER_ENGINE", raising=False)
    runtime = create_runtime("container:my-env:1.0", RuntimeOptions(warm=2, max_starting=3))
    assert isinstance(runtime, ContainerRuntime)
    assert (runtime.image, runtime.engine.path, runtime.warm) == ("my-env:1.0", str(fake), 2)
    with pytest.raises(ValueError, match=r"^the container runtime wants an image: container:"):
        create_runtime("container")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ValueError, match=r"^no container engine found: install podman or docker"):
        create_runtime("container:my-env:1.0")


@pytest.mark.anyio
async def test_a_dead_huds_mount_directory_is_removed_by_the_next_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hud killed together with its reaper leaves its containers' mount directory: the
    next container runtime removes it, and no live hud's, nor anything only named like
    one (whatever its name, the sweep does not stop the runtime). A reaper whose engine
    fails still removes its own runtime's, and says why the containers were not removed."""
    dead = _dead_pid()
    engines = tmp_path / "bin"
    engines.mkdir()
    fake = engines / "docker"
    fake.write_text("#!/bin/sh\necho 'engine broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(engines))
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: sockets' paths fit in it
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    live = subprocess.Popen(["/bin/sleep", "60"])
    stale, kept = temp / f"hud-mounts-{dead}-x", temp / f"hud-mounts-{live.pid}-y"
    (stale / "1").mkdir(parents=True)
    (stale / "1" / "tunnels").touch()
    kept.mkdir()
    named = [temp / "hud-mounts-2147483648-x", temp / "hud-mounts-\u00b2-x"]  # no pids
    for directory in named:
        directory.mkdir()
    (temp / f"hud-mounts-{dead}-link").symlink_to(kept)
    leftovers.sweep_once.cache_clear()
    runtime = ContainerRuntime("my-env:1.0", engine="docker")
    try:
        await runtime._begin()
        assert not stale.exists() and kept.is_dir() and all(d.is_dir() for d in named)
        assert (temp / f"hud-mounts-{dead}-link").is_symlink()
        assert runtime._mount_root is not None
        root = Path(runtime._mount_root)
        assert root.parent == temp and root.name.startswith(f"hud-mounts-{os.getpid()}-")
        reaper, runtime._reaper = runtime._reaper, None
        assert reaper is not None and reaper.stdin is not None
        reaper.stdin.close()  # what the kernel does when hud is killed
        assert reaper.wait(timeout=60) == 1
        assert not root.exists()
    finally:
        live.kill()
        live.wait()
        await runtime.aclose()
        leftovers.sweep_once.cache_clear()
        shutil.rmtree(temp)


def test_a_long_temp_dir_puts_the_mounts_where_socket_paths_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers' sockets in the mounted directories are reached by their host paths,
    which a Unix socket limits to 107 bytes: under a long ``TMPDIR`` they go to /tmp."""
    from hud.runtimes.container import _new_mount_root

    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    root = Path(_new_mount_root())
    try:
        assert root.parent == Path("/tmp") and root.name.startswith(f"hud-mounts-{os.getpid()}-")
        assert len(str(root / "999999" / "hud-local-12345678" / "tunnels")) <= 107
    finally:
        root.rmdir()
