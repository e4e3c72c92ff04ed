"""``hud view`` in a real browser: jobs made by ``hud eval`` (:mod:`traced_jobs`), the app
served by the ``hud view`` command in a subprocess, pages opened and clicked through by
Playwright driving Debian's Chromium.

Each page's screenshot is written as a test artifact: under ``$HUD_VIEW_ARTIFACTS`` when set,
else a pytest temporary directory; the path is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hud.capabilities.cdp import BrowserNotFound, find_chromium
from traced_jobs import EXAMPLES, browser_job, failing_job, hud

ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str:
    try:
        return find_chromium()
    except BrowserNotFound as exc:
        pytest.skip(f"{exc}")


class Served:
    def __init__(self, traces: Path, jobs: dict[str, Any], url: str) -> None:
        self.traces, self.jobs, self.url = traces, jobs, url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    traces = tmp_path_factory.mktemp("view") / "traces"
    jobs = {"browser": browser_job(traces), "failing": failing_job(traces)}
    oracle = hud("eval", str(EXAMPLES / "letter_count" / "tasks.py"), "oracle", "--json",
                 traces=traces)
    assert oracle.returncode == 0, oracle.stderr
    jobs["oracle"] = json.loads(oracle.stdout)
    with open_view("--trace-dir", str(traces)) as url:
        yield Served(traces, jobs, url)


class open_view:
    """``hud view --port 0 ARGS`` in a subprocess; entering gives the URL it printed."""

    def __init__(self, *args: str, host: str = "127.0.0.1") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hud", "view", "--port", "0", "--host", host, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("http://"), self.proc.stderr.read() if self.proc.stderr else ""
        return line

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0 and err == ""  # SIGTERM: a clean stop, no noise


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("HUD_VIEW_ARTIFACTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("view-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(served: Served) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # No request may leave the machine: every asset is served by hud view itself.
        outside: list[str] = []
        context.on("request", lambda r: outside.append(r.url)
                   if not r.url.startswith((served.url.split("?")[0], "data:")) else None)
        yield context.new_page()
        assert outside == []
        browser.close()


def shoot(page: Any, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    print(f"screenshot: {path}")


def test_jobs_list_to_a_run_with_screenshots(served: Served, page: Any,
                                            artifacts: Path) -> None:
    job = served.jobs["browser"]
    page.goto(served.url)
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 3
    text = page.locator("#jobs").inner_text()
    assert "claude-sonnet-4-6" in text and "oracle" in text and "1.000" in text
    shoot(page, artifacts, "jobs")

    page.click(f"a[href='/jobs/{job['job']}']")
    page.wait_for_url(f"**/jobs/{job['job']}")
    assert page.locator("#tasks tbody tr").count() == 2  # the two sign-up tasks
    assert page.locator("#histogram .bin").count() == 10
    assert "No errors." in page.inner_text("body")
    shoot(page, artifacts, "job")

    page.locator("#run-table a.run-link").first.click()
    page.wait_for_url("**/runs/*")
    transcript = page.locator("#transcript")
    assert "The browser shows a sign-up form" in transcript.inner_text()
    assert "Step 1: I will screenshot." in transcript.inner_text()
    assert transcript.locator(".call .tool-name", has_text="computer").count() == 3
    shots = transcript.locator("img.shot")
    assert shots.count() == 3
    src = shots.first.get_attribute("src")
    assert src is not None and src.startswith("/blobs/")
    # Loaded, and shown at a readable size (the tool's 640-wide screenshot, not a thumbnail).
    width = shots.first.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width >= 600 and shots.first.bounding_box()["width"] >= 600
    grade = page.inner_text("#grade")
    for name in ("submitted", "name", "email", "plan", "terms"):
        assert name in grade
    lanes = page.inner_text("#waterfall")
    assert all(phase in lanes for phase in ("environment", "setup", "agent", "grade"))
    page.click("#raw summary")
    assert '"version": 2' in page.inner_text("#raw")
    shoot(page, artifacts, "run")


def test_a_job_with_errors_shows_them_by_phase(served: Served, page: Any,
                                              artifacts: Path) -> None:
    job = served.jobs["failing"]
    page.goto(f"{served.url}jobs/{job['job'][:8]}")
    errors = page.inner_text("#errors")
    assert "agent" in errors and "ModelAPIError" in errors
    assert page.locator("#errors tbody td.num").inner_text() == "2"
    page.select_option("select[name=status]", "errored")
    page.click("#runs ~ form button")
    assert page.locator("#run-table tbody tr").count() == 2
    shoot(page, artifacts, "job-errors")
    page.locator("#run-table a.run-link").first.click()
    page.wait_for_url("**/runs/*")
    assert "Error in the agent phase" in page.inner_text("#error")
    assert "prompt is too long" in page.inner_text("#error")
    shoot(page, artifacts, "run-error")


def test_sorting_filtering_and_comparing(served: Served, page: Any, artifacts: Path) -> None:
    page.goto(served.url)
    page.click("a[data-sort=reward]")  # descending first: the oracle's 1.000 on top
    assert "oracle" in page.locator("#jobs tbody tr").first.inner_text()
    page.fill("input[name=q]", "oracle")
    page.click("form.filter button")
    assert page.locator("#jobs tbody tr").count() == 1
    # The oracle and the failing job ran the same taskset: compare them task by task.
    page.goto(f"{served.url}jobs/{served.jobs['failing']['job']}")
    page.select_option("select[name=b]", served.jobs["oracle"]["job"])
    page.click("form[action='/compare'] button")
    page.wait_for_url("**/compare*")
    rows = page.locator("#compare tbody tr")
    assert rows.count() == 6  # all tasks, then the five letter-count tasks
    assert "+1.000" in page.inner_text("#compare")  # a refused task (no reward) has no delta
    shoot(page, artifacts, "compare")


def test_a_running_job_updates_live(served: Served, page: Any, tmp_path: Path) -> None:
    from test_store import count, make_run

    from hud.eval.job import Job
    from hud.eval.store import TraceStore

    with TraceStore(served.traces) as store:
        job = Job("live", agent="scripted")
        job.planned = 2
        store.begin_job(job)
        store.save_run(make_run(job, count(), "g", reward=1.0))
        page.goto(served.url)
        assert page.get_attribute("#jobs", "data-live") == "true"  # the list reloads too
        page.goto(f"{served.url}jobs/{job.id}")
        assert "running" in page.inner_text("#live")
        assert page.inner_text("#job-runs").startswith("1 of 2")
        store.save_run(make_run(job, count(word="kiwi", letter="i"), "h", reward=0.0))
        page.wait_for_function("document.querySelector('#job-runs').innerText"
                               ".startsWith('2 of 2')", timeout=10_000)
        assert page.locator("#run-table tbody tr").count() == 2


def test_beyond_loopback_a_token_is_required(served: Served) -> None:
    with open_view("--trace-dir", str(served.traces), host="0.0.0.0") as url:
        assert "?token=" in url
        base, token = url.split("?token=")
        port = re.search(r":(\d+)/", base)
        assert port is not None
        local = f"http://127.0.0.1:{port.group(1)}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(local, timeout=10)
        assert refused.value.code == 401
        wrong = urllib.request.Request(local, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, timeout=10)
        right = urllib.request.Request(local, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(right, timeout=10) as response:
            assert b"Jobs" in response.read()
        with urllib.request.urlopen(f"{local}?token={token}", timeout=10) as response:
            assert "hud_view_token" in response.headers["Set-Cookie"]


def test_only_stored_files_are_served(served: Served) -> None:
    run = served.jobs["browser"]["runs"][0]["trace_id"]
    for path in ("blobs/../index.db", "blobs/..%2F/index.db", "blobs/aa/..%2F..%2Findex.db",
                 f"runs/{run}/files/..%2Ftrace.json", f"runs/{run}/files/trace.json%00",
                 "static/../index.db"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(served.url + path, timeout=10)
        assert refused.value.code == 404, path
    with urllib.request.urlopen(f"{served.url}runs/{run}/files/trace.json",
                                timeout=10) as response:  # a file of the run's own: served
        assert json.loads(response.read())["id"] == run


def test_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hud", "view", "--trace-dir",
                             str(tmp_path / "none")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "no trace store" in result.stderr
    assert result.stdout == ""


def test_the_wheel_ships_the_pages_and_assets(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = tmp_path.glob("hud_runtime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"hud/view/{p.relative_to(ROOT / 'hud' / 'view').as_posix()}"
               for p in (ROOT / "hud" / "view").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and not shipped - names
    pages = (ROOT / "hud" / "view" / "templates").glob("*.html")
    for template in pages:  # nothing from elsewhere: no absolute URLs in the pages
        assert not re.search(r"(src|href)=\"(https?:)?//", template.read_text()), template
