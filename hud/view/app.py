"""The ``hud view`` web app: server-rendered pages (Starlette + Jinja2) over a trace store.

Routes: ``/`` jobs, ``/jobs/{id}`` a job, ``/runs/{id}`` a run, ``/compare?a=&b=`` two jobs
on one taskset, ``/api/jobs/{id}`` what a running job's page polls, ``/runs/{id}/raw`` and
``/runs/{id}/files/{path}`` a run's JSON and step files, ``/blobs/...`` stored images,
``/static/...`` the page assets (all shipped in this package: nothing is fetched elsewhere).

With a token, every request must carry it (``Authorization: Bearer``, ``?token=``, or the
cookie a first ``?token=`` visit sets), as ``hud serve`` asks of its clients.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import UnknownId
from ..eval.store import TraceStore
from . import data, transcript, tree

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "hud_view_token"
# Only names the store writes are served: no "..", no hidden files, nothing outside it.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SHARD = re.compile(r"[0-9a-f]{2}")
_BLOB = re.compile(r"[0-9a-f]{64}\.[a-z]+")


def create_app(store: TraceStore, token: str | None = None) -> Starlette:
    """The app over ``store`` (which the caller opens and closes); ``token``: see module."""
    pages = Pages(store)
    routes = [
        Route("/", pages.jobs), Route("/jobs/{job_id}", pages.job),
        Route("/runs/{trace_id}", pages.run), Route("/compare", pages.compare),
        Route("/api/jobs/{job_id}", pages.job_status),
        Route("/runs/{trace_id}/raw", pages.raw),
        Route("/runs/{trace_id}/files/{path}", pages.step_file),
        Route("/blobs/{shard}/{name}", pages.blob),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={UnknownId: _not_found})
    if token is not None:
        app.add_middleware(_TokenGate, token=token)
    return app


class Pages:
    """The route handlers; each reads the store and renders one template."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.templates = Environment(loader=PackageLoader("hud.view", "templates"),
                                     autoescape=select_autoescape(default=True))
        self.templates.filters.update(reward=_reward, when=_when, seconds=_seconds,
                                      money=_money, advantage=_advantage)

    def render(self, name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(name).render(**context))

    async def jobs(self, request: Request) -> Response:
        listing = _listing(request)
        return self.render("jobs.html", jobs=data.jobs(self.store, listing), listing=listing,
                           sorts=data.JOB_SORTS)

    async def job(self, request: Request) -> Response:
        job_id = self.store.find_job(request.path_params["job_id"])
        listing = _listing(request)
        rows, total = data.runs(self.store, job_id, listing)
        job = data.job(self.store, job_id)
        return self.render(
            "job.html", job=job, tasks=data.tasks(self.store, job_id),
            histogram=data.histogram(self.store, job_id),
            errors=data.errors_by_phase(self.store, job_id), runs=rows, total=total,
            pages=math.ceil(total / data.PAGE_SIZE), listing=listing, sorts=data.RUN_SORTS,
            others=data.comparable(self.store, job), trees=tree.of_job(self.store, job_id))

    async def job_status(self, request: Request) -> Response:
        job_id = self.store.find_job(request.path_params["job_id"])
        return JSONResponse(data.status(self.store, job_id))

    async def compare(self, request: Request) -> Response:
        first = self.store.find_job(request.query_params.get("a", ""))
        second = self.store.find_job(request.query_params.get("b", ""))
        return self.render("compare.html", a=data.job(self.store, first),
                           b=data.job(self.store, second),
                           rows=data.compare(self.store, first, second))

    async def run(self, request: Request) -> Response:
        record = self.store.run(request.path_params["trace_id"])
        document = record["trace"]
        trace_id = record["trace_id"]
        return self.render(
            "run.html", run=record, doc=document, tree=tree.of_run(self.store, record),
            entries=transcript.entries(document, trace_id),
            waterfall=transcript.waterfall(document), edits=transcript.edits(document),
            raw=transcript.text(document, 200_000))

    async def raw(self, request: Request) -> Response:
        return JSONResponse(self.store.run(request.path_params["trace_id"])["trace"])

    async def step_file(self, request: Request) -> Response:
        record = self.store.run(request.path_params["trace_id"])
        return _file(Path(record["dir"]), request.path_params["path"])

    async def blob(self, request: Request) -> Response:
        shard, name = request.path_params["shard"], request.path_params["name"]
        if not (_SHARD.fullmatch(shard) and _BLOB.fullmatch(name)):
            return Response("not found", status_code=404)
        return _file(self.store.root / "blobs" / shard, name)


def _file(directory: Path, name: str) -> Response:
    """A file directly inside ``directory`` (no other path is served), else 404."""
    path = directory / name
    if not _NAME.fullmatch(name) or not path.is_file():
        return Response("not found", status_code=404)
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return HTMLResponse(f"<h1>Not found</h1><p>{_escape(str(exc))}</p>", status_code=404)


def _listing(request: Request) -> data.Listing:
    query = request.query_params
    try:
        page = max(int(query.get("page", "0")), 0)
    except ValueError:
        page = 0
    return data.Listing(sort=query.get("sort", "started"), descending=query.get("dir") != "asc",
                        text=query.get("q", "").strip(), status=query.get("status", ""),
                        page=page)


class _TokenGate:
    """Refuse (401) a request without the token; a right ``?token=`` sets a cookie so the
    links of the page keep working."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ")
        from_query = request.query_params.get("token", "")
        supplied = from_query or supplied or request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            response: Response = Response("missing or wrong token: open the URL `hud view` "
                                          "printed (it carries ?token=)", status_code=401)
            await response(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message["headers"] = [*message.get("headers", []),
                                      (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _reward(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.3f}"


def _advantage(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.3f}"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _money(value: float | None) -> str:
    return "\u2013" if not value else f"${value:.4f}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
