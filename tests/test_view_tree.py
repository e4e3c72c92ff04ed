"""``hud view`` shows branching runs (``tasks.fork``) as trees: a job made by
``Taskset.run(..., branch_at=1, branches=2)`` on the pool runtime, served by ``hud view`` in a
subprocess and clicked through in Debian's Chromium (screenshots as in :mod:`test_view`); and
a v2 store holding branches, migrated to the schema that indexes them."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fork_env import env
from test_fork_eval import RouteAgent
from test_store import count, make_run
from test_view import chromium, open_view, shoot

from hud import eventloop
from hud.eval import Taskset
from hud.eval.job import Job
from hud.eval.store import SCHEMA_VERSION, TraceStore
from hud.runtimes import PoolRuntime
from hud.view import tree


class Served:
    def __init__(self, url: str, branched: Job, plain: Job) -> None:
        self.url, self.branched, self.plain = url, branched, plain


async def branched_job(store: TraceStore) -> Job:
    """The route task: the prefix writes its note, each of two branches takes a way; the
    ``left`` branch earns 1, the ``right`` one 0."""
    taskset = Taskset([env.templates["plan"](want="left")], name="routes")
    async with PoolRuntime(size=1) as runtime:
        return await taskset.run(RouteAgent(), runtime=runtime, store=store, branch_at=1,
                                 branches=2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    traces = tmp_path_factory.mktemp("view-tree") / "traces"
    with TraceStore(traces) as store:
        branched = eventloop.run(branched_job(store))
        plain = Job("letters")
        store.begin_job(plain)
        store.save_run(make_run(plain, count(), "g", reward=1.0))
        store.end_job(plain)
    with open_view("--trace-dir", str(traces)) as url:
        yield Served(url, branched, plain)


@pytest.fixture(scope="module")
def page(served: Served) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        browser.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("HUD_VIEW_ARTIFACTS")  # as in test_view
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("view-tree-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rewards_by_branch(table: Any) -> dict[str, tuple[str, str]]:
    """Each row of a branch table: trace id → (reward, advantage) as shown."""
    rows = table.locator("tr.branch")
    return {rows.nth(i).get_attribute("data-trace"): (
        rows.nth(i).locator("td.reward").inner_text(),
        rows.nth(i).locator("td.advantage").inner_text()) for i in range(rows.count())}


def test_from_the_job_to_a_branch_to_its_prefix_and_back(served: Served, page: Any,
                                                        artifacts: Path) -> None:
    prefix, *branches = served.branched.runs
    ways = {b.trace_id: b.trace.steps[-2].data["way"] for b in branches}
    by_way = {way: trace_id for trace_id, way in ways.items()}
    expected = {by_way["left"]: ("1.000", "+1.000"), by_way["right"]: ("0.000", "-1.000")}
    page.goto(f"{served.url}jobs/{served.branched.id}")
    trees = page.locator("#trees ~ .trees .tree")
    assert trees.count() == 1
    assert trees.first.get_attribute("data-prefix") == prefix.trace_id
    head = trees.first.locator(".tree-head").inner_text()
    assert f"branched at step {branches[0].trace.branch_step} into 2" in head
    assert "mean reward 0.500" in head
    assert rewards_by_branch(trees.first) == expected
    shoot(page, artifacts, "job-tree")

    trees.first.locator(f"tr[data-trace='{by_way['right']}'] a.run-link").click()
    page.wait_for_url(f"**/runs/{by_way['right']}")
    assert f"at step {branches[0].trace.branch_step}" in page.inner_text("#prefix")
    siblings = page.locator("#tree table.branches")
    assert rewards_by_branch(siblings) == expected
    assert siblings.locator("tr.current").get_attribute("data-trace") == by_way["right"]
    assert page.locator("#reward").inner_text() == "0.000"
    # the transcript marks where the branch left its prefix
    after = page.locator("#branch-point + li .kind").text_content()
    assert after == "branch"
    shoot(page, artifacts, "run-branch")

    page.click(f"#prefix a[href='/runs/{prefix.trace_id}']")
    page.wait_for_url(f"**/runs/{prefix.trace_id}")
    assert "into 2 runs" in page.inner_text("#branched")
    assert rewards_by_branch(page.locator("#tree table.branches")) == expected
    assert page.locator("#prefix").count() == 0  # the prefix is no branch itself
    shoot(page, artifacts, "run-prefix")

    page.click(f"#tree a[href='/runs/{by_way['left']}']")
    page.wait_for_url(f"**/runs/{by_way['left']}")
    assert page.locator("#reward").inner_text() == "1.000"


def test_runs_without_branches_show_no_tree(served: Served, page: Any) -> None:
    page.goto(f"{served.url}jobs/{served.plain.id}")
    assert page.locator("#run-table tbody tr").count() == 1
    assert page.locator("#trees").count() == 0
    page.locator("#run-table a.run-link").first.click()
    page.wait_for_url("**/runs/*")
    assert page.locator("#tree").count() == 0 and page.locator("#branch-point").count() == 0


def fork_by_hand(job: Job, store: TraceStore) -> list[str]:
    """A prefix and two branches as the engine records them (their group is the prefix),
    and one run of another group; their trace ids."""
    prefix = make_run(job, count(), "g", reward=None)
    ids = [prefix.trace_id]
    for reward in (1.0, 0.0):
        branch = make_run(job, count(), prefix.trace_id, reward=reward)
        branch.trace.parent_id, branch.trace.branch_step = prefix.trace_id, 3
        ids.append(branch.trace_id)
    ids.append(make_run(job, count(), "other", reward=0.5).trace_id)
    for run in job.runs:
        store.save_run(run)
    return ids


def as_v2(index: Path) -> None:
    """Take the index back to schema v2, as stores written before this change are."""
    with sqlite3.connect(index) as db:
        db.execute("DROP INDEX runs_by_parent")
        db.execute("ALTER TABLE runs DROP COLUMN parent_id")
        db.execute("ALTER TABLE runs DROP COLUMN branch_step")
        db.execute("PRAGMA user_version=2")
    db.close()


def test_a_v2_store_with_branches_is_migrated(tmp_path: Path) -> None:
    job = Job("routes")
    with TraceStore(tmp_path) as store:
        prefix, left, right, other = fork_by_hand(job, store)
    as_v2(tmp_path / "index.db")
    with TraceStore(tmp_path) as store:
        assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 3
        rows = {r["trace_id"]: (r["parent_id"], r["branch_step"]) for r in store.query(
            "SELECT trace_id, parent_id, branch_step FROM runs")}
        assert rows == {prefix: (None, None), left: (prefix, 3), right: (prefix, 3),
                        other: (None, None)}
        trees = tree.of_job(store, job.id)
        assert trees is not None and trees["total"] == 1
        (only,) = trees["trees"]
        assert [(b["trace_id"], b["advantage"]) for b in only["branches"]] == [
            (left, 1.0), (right, -1.0)]
        placed = tree.of_run(store, store.run(right))
        assert placed is not None and placed["parent"]["trace_id"] == prefix


def test_the_tree_queries_use_the_parent_index(tmp_path: Path) -> None:
    with TraceStore(tmp_path) as store:
        fork_by_hand(Job("routes"), store)
        for sql in ("SELECT COUNT(DISTINCT parent_id) FROM runs WHERE job_id = ? AND "
                    "parent_id IS NOT NULL", "SELECT * FROM runs WHERE job_id IS ? AND "
                    "parent_id = ?"):
            plan = " ".join(str(tuple(r)) for r in store.query(f"EXPLAIN QUERY PLAN {sql}",
                                                                ("j", "p")[:sql.count("?")]))
            assert "runs_by_parent" in plan, plan
