"""The method table of protocol v1: every method once, with its types and how it is run.

This table is the only list of methods. The codec builds its decoders from it, the schema
generator writes one schema file per row, the server's connection core schedules requests
by it, and the server's handlers (:mod:`hud.handlers`) are checked against it at import.

Adding a method is: its params and result Structs in :mod:`.messages`, its row here, its
handler in :mod:`hud.handlers`, and its call on :class:`hud.client.Client`.
"""

from __future__ import annotations

import enum

from .messages import (
    Body,
    ByeParams,
    ByeResult,
    CancelParams,
    CancelResult,
    ForkParams,
    ForkResult,
    GradeParams,
    GradeResult,
    ListParams,
    ListResult,
    ManifestParams,
    ManifestResult,
    Params,
    SolveParams,
    SolveResult,
    StartParams,
    StartResult,
    StatusParams,
    StatusResult,
)


class Schedule(enum.Enum):
    """How a server runs a method's requests on one connection."""

    INLINE = "inline"
    """Answered in turn: frames that arrive while it is being answered wait (unread) until
    its reply is out, so a pipelined ``tasks.start`` sees the session ``manifest`` opened."""

    QUEUED = "queued"
    """Runs the template: one at a time, in arrival order, beside inline requests (so
    ``tasks.cancel`` can interrupt it). Requests waiting their turn can be cancelled."""


class Method:
    """One row of the table. (A plain class: the CLI imports the table, and a dataclass
    costs it start-up time.)"""

    __slots__ = ("ends_session", "name", "needs_session", "optional", "params", "queued",
                 "result", "schedule")

    def __init__(self, name: str, params: type[Params], result: type[Body],
                 schedule: Schedule = Schedule.INLINE, *, needs_session: bool = True,
                 ends_session: bool = False, optional: str = "") -> None:
        self.name = name
        self.params = params
        self.result = result
        self.schedule = schedule
        self.queued = schedule is Schedule.QUEUED
        """``schedule`` is :attr:`Schedule.QUEUED` (read per request: on Python 3.11 each
        attribute of an enum class is looked up through ``EnumType.__getattr__``)."""
        self.needs_session = needs_session
        """False only for ``manifest``, which opens the session every other method needs."""
        self.ends_session = ends_session
        """True for ``bye``: after its reply, the next request must be ``manifest`` again."""
        self.optional = optional
        """Non-empty for a method a server may decline to serve: the reason it gives then."""

    def __repr__(self) -> str:
        return f"Method({self.name!r})"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("manifest", ManifestParams, ManifestResult, needs_session=False),
        Method("tasks.list", ListParams, ListResult),
        Method("tasks.status", StatusParams, StatusResult),
        Method("tasks.start", StartParams, StartResult, Schedule.QUEUED),
        Method("tasks.grade", GradeParams, GradeResult, Schedule.QUEUED),
        Method("tasks.solve", SolveParams, SolveResult, Schedule.QUEUED,
               optional="start the server with solutions enabled"),
        Method("tasks.cancel", CancelParams, CancelResult),
        Method("tasks.fork", ForkParams, ForkResult, Schedule.QUEUED,
               optional="this runtime does not run each task in its own process: use the "
                        "pool or subprocess runtime, or hud serve --max-forks N"),
        Method("bye", ByeParams, ByeResult, ends_session=True),
    )
}
"""Every method of protocol v1, by name."""
