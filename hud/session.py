"""Sessions, and the registry that lets them outlive connections.

A session holds at most one task. Its states, and what moves it between them:

==========  =====================================  ==========
state       event                                  next state
==========  =====================================  ==========
attached    connection closes, task in progress    parked
attached    connection closes, no task             (removed)
parked      ``manifest`` with its id (resume)      attached
parked      ``tasks.grade`` adopts it              attached
parked      parked longer than the TTL             (expired: cleanup runs, removed)
any         graded, cancelled, ``bye``             task cleared
==========  =====================================  ==========

The registry does no I/O and starts no tasks: the server drives it and runs the cleanup
of whatever :meth:`Registry.expire` hands back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from .protocol.errors import (
    AmbiguousSessions,
    LimitExceeded,
    NoTaskInProgress,
    SessionBusy,
    UnknownSession,
)
from .protocol.messages import TaskRef
from .runner import TaskRunner


def new_session_id() -> str:
    """Unguessable: it resumes the session. ``secrets.token_hex`` draws the same bytes from
    ``os.urandom``, through three calls more."""
    return "sess-" + os.urandom(8).hex()


class Session:
    __slots__ = ("attached", "id", "parked_at", "runner", "started_at", "task")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.runner: TaskRunner | None = None
        self.task: TaskRef | None = None
        self.attached = True
        self.parked_at = 0.0
        self.started_at = 0.0

    @property
    def has_task(self) -> bool:
        return self.runner is not None and not self.runner.closed

    def hold(self, runner: TaskRunner, task: TaskRef) -> None:
        """Make ``runner`` (running ``task``) this session's task, from now."""
        self.runner, self.task, self.started_at = runner, task, time.monotonic()

    def take_runner(self) -> TaskRunner | None:
        """Detach the task from the session, for the caller to finish or close."""
        runner, self.runner, self.task = self.runner, None, None
        return runner


class Registry:
    """Every live and parked session of one server, with the limits that bound them."""

    def __init__(self, *, park_ttl: float, max_sessions: int, max_parked: int) -> None:
        self.park_ttl = park_ttl
        self.max_sessions = max_sessions
        self.max_parked = max_parked
        self._sessions: dict[str, Session] = {}
        self._parked: dict[str, Session] = {}  # insertion order = parking order

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    @property
    def parked(self) -> list[str]:
        return list(self._parked)

    def create(self) -> Session:
        if len(self._sessions) >= self.max_sessions:
            raise LimitExceeded(
                f"too many sessions (limit {self.max_sessions})",
                {"limit": "max_sessions", "value": self.max_sessions},
            )
        session = Session(new_session_id())
        self._sessions[session.id] = session
        return session

    def resume(self, session_id: str) -> Session:
        """Attach the parked session ``session_id`` to the calling connection."""
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(
                f"no session {session_id!r}: it was never opened, was graded or cancelled, "
                "or expired",
                {"session_id": session_id},
            )
        if session.attached:
            raise SessionBusy(
                f"session {session_id!r} is attached to another live connection",
                {"session_id": session_id},
            )
        return self._attach(session)

    def adopt(self, template: str | None = None) -> Session:
        """Attach the only parked session holding a task (of ``template``, when given)."""
        candidates = [
            s for s in self._parked.values()
            if s.has_task and (template is None or (s.task and s.task.template == template))
        ]
        if not candidates:
            what = f"of template {template!r} " if template else ""
            raise NoTaskInProgress(
                f"no task {what}in progress: start one first (hud task start, or "
                "tasks.start); a parked task may also have expired"
            )
        if len(candidates) > 1:
            ids = [s.id for s in candidates]
            raise AmbiguousSessions(
                f"{len(ids)} parked tasks could be graded ({', '.join(ids)}); pick one with "
                "--session ID (protocol: manifest with its session_id)",
                {"sessions": ids},
            )
        return self._attach(candidates[0])

    def _attach(self, session: Session) -> Session:
        self._parked.pop(session.id, None)
        session.attached = True
        return session

    def detach(self, session: Session) -> TaskRunner | None:
        """The connection is gone: park the session if it holds a task, else drop it.

        Returns a runner the caller must close when parking is impossible (limit reached).
        """
        session.attached = False
        if not session.has_task:
            self.remove(session)
            return None
        if len(self._parked) >= self.max_parked:
            self.remove(session)
            return session.take_runner()
        session.parked_at = time.monotonic()
        self._parked[session.id] = session
        return None

    @property
    def holds_tasks(self) -> bool:
        """Whether any session holds a task (attached or parked)."""
        return any(s.has_task for s in self._sessions.values())

    def park_branch(self, session_id: str, runner: TaskRunner, task: TaskRef) -> Session:
        """A new session ``session_id`` holding ``runner``, parked: a branch made by
        ``tasks.fork``, waiting for a client to resume it (or for the park TTL)."""
        session = Session(session_id)
        session.hold(runner, task)
        self._sessions[session.id] = session
        self.detach(session)
        return session

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        self._parked.pop(session.id, None)

    def expire(self, now: float | None = None) -> list[TaskRunner]:
        """Drop sessions parked longer than the TTL; return their runners to close."""
        now = time.monotonic() if now is None else now
        runners: list[TaskRunner] = []
        for session in list(self._parked.values()):
            if now - session.parked_at < self.park_ttl:
                break  # parked in order: the rest are younger
            self.remove(session)
            runner = session.take_runner()
            if runner is not None:
                runners.append(runner)
        return runners
