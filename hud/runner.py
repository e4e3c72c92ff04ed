"""Drives one task: a template's async generator from setup, through the answer, to cleanup.

The generator's life has three phases, and an error names the one it happened in:

* ``setup``: from the call up to the first ``yield`` (the prompt);
* ``grade``: from sending the answer in up to the second ``yield`` (the reward); a
  :class:`~hud.errors.CapabilityLost` raised here (the agent killed its sandbox, crashed its
  browser) is the agent's failure: reward 0 with ``info["cause"]``, not an error;
* ``cleanup``: whatever runs after the second ``yield``, or in ``finally`` when the task is
  cancelled, expires, or fails.

Every step is bounded by a timeout, runs in place in the caller's task and is watched for
blocking the event loop (:mod:`hud.steps`): a template that ignores its cancellation is
abandoned, not waited for. What the generator yields is checked here and turned into wire
types; anything malformed is a :class:`TemplateError`, never passed on as-is.

The environment's *task hooks* (capabilities such as the workspace) wrap the whole task: each
is an async context manager entered at the start of setup, whose value (bindings by capability
name) joins the prompt's, and exited once the task is over, however it ends (graded,
cancelled, replaced, expired, failed). A :class:`TaskScope` ties them to the template's code:
every step runs with :func:`current_scope` set and the scope's step contexts entered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from typing import Any, Literal

import msgspec

from .errors import CapabilityLost
from .protocol.errors import TemplateError
from .protocol.messages import ContentBlock, ImageBlock, Message, Subscore, TextBlock
from .steps import run_step

log = logging.getLogger(__name__)

Phase = Literal["setup", "grade", "cleanup"]

_messages_type = list[Message]


class Prompt(msgspec.Struct, kw_only=True):
    """A normalised first yield."""

    prompt: str | list[ContentBlock]
    messages: list[Message] | msgspec.UnsetType = msgspec.UNSET
    bindings: dict[str, dict[str, Any]] = {}


class Reward(msgspec.Struct, kw_only=True):
    """A normalised second yield."""

    reward: float
    subscores: list[Subscore] | msgspec.UnsetType = msgspec.UNSET
    info: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


def _new_id_prefix() -> None:
    """A task's id is unique across processes without a system call per task: a random
    prefix per process (made again in a forked child; always eight hex digits), then a
    count."""
    global _id_prefix, _id_numbers
    _id_prefix, _id_numbers = os.urandom(4).hex(), itertools.count()


_id_prefix, _id_numbers = "", itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


class TaskScope:
    """One task, from setup to cleanup, as its hooks and its template's code see it.

    ``id`` is unique per task. A hook keeps per-task state here and calls
    :meth:`during_steps` to have a context manager entered around every step of the template,
    whichever asyncio task runs that step (the server runs setup and grade in different ones).
    ``phase`` is the phase of the step running now, or of the last one.
    """

    def __init__(self, template_id: str) -> None:
        self.id = f"task-{_id_prefix}{next(_id_numbers)}"  # letters and digits only
        self.template = template_id
        self.phase: Phase = "setup"
        self.state: dict[object, Any] = {}
        self._step_contexts: list[Callable[[], contextlib.AbstractContextManager[Any]]] = []

    def during_steps(self, factory: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        """Enter ``factory()`` around each later step of this task (setup, grade, cleanup)."""
        self._step_contexts.append(factory)

    def entered(self) -> _Entered:
        """A context manager: this scope is :func:`current_scope` inside it, and the step
        contexts from :meth:`during_steps` are entered around it."""
        return _Entered(self)


class _Entered:
    """:meth:`TaskScope.entered`, as a plain class: it wraps every step of every task, so it
    avoids a generator and an ``ExitStack`` when no hook asked for step contexts."""

    __slots__ = ("scope", "stack", "token")

    def __init__(self, scope: TaskScope) -> None:
        self.scope = scope
        self.stack: contextlib.ExitStack | None = None

    def __enter__(self) -> TaskScope:
        self.token = _current_scope.set(self.scope)
        if self.scope._step_contexts:
            self.stack = contextlib.ExitStack()
            try:
                for factory in self.scope._step_contexts:
                    self.stack.enter_context(factory())
            except BaseException:
                self.stack.close()
                _current_scope.reset(self.token)
                raise
        return self.scope

    def __exit__(self, *exc_info: Any) -> bool | None:
        try:
            return None if self.stack is None else self.stack.__exit__(*exc_info)
        finally:
            _current_scope.reset(self.token)


_current_scope: ContextVar[TaskScope | None] = ContextVar("hud_task_scope", default=None)

Bindings = dict[str, dict[str, Any]]
TaskHook = Callable[[TaskScope], contextlib.AbstractAsyncContextManager[Bindings | None]]
BranchHook = Callable[[TaskHook], contextlib.AbstractAsyncContextManager[Bindings | None]]


def current_scope() -> TaskScope | None:
    """The task whose template code is running now, or None outside any task."""
    return _current_scope.get()


async def _ended(generator: AsyncGenerator[Any, Any]) -> bool:
    """Run ``generator`` on to its next yield: True when it ends instead (the common case,
    its cleanup done). The end is caught here, where it is raised: a ``StopAsyncIteration``
    that went up through the step's frames would get a traceback entry in each."""
    try:
        await generator.__anext__()
    except StopAsyncIteration:
        return True
    return False


class TaskRunner:
    """Owns one template generator. Not safe for concurrent use: the session serialises calls."""

    def __init__(
        self, template_id: str, generator: AsyncGenerator[Any, Any],
        hooks: Sequence[TaskHook] = (),
    ) -> None:
        self.template_id = template_id
        self._named = f"template {template_id!r}"  # the start of each step's label
        self._gen = generator
        self.started = False
        self.closed = False
        self.abandoned = False
        """A step ignored its cancellation and was left running (see :mod:`hud.steps`)."""
        self.scope = TaskScope(template_id)
        self._hooks = list(hooks)
        self._entered: contextlib.AsyncExitStack | None = None
        self._copied_hooks: contextlib.AsyncExitStack | None = None
        self._bindings: Bindings = {}

    async def start(self, timeout: float | None) -> Prompt:
        """Enter the task hooks, run setup up to the first yield and return the prompt."""
        try:
            prompt = await self._start(timeout)
        finally:
            if self.closed:
                await self._release()
        for name, params in self._bindings.items():  # the template's own values win
            prompt.bindings[name] = {**params, **prompt.bindings.get(name, {})}
        return prompt

    async def adopt_in_branch(self, enter: BranchHook) -> Bindings:
        """In a branch made by ``tasks.fork``: let go of the task hooks entered in the parent
        (without exiting them: what they hold is the parent's) and enter ``enter(hook)`` for
        each instead, the branch's own copy of what that hook set up. Returns their bindings."""
        # kept, never exited: exiting (or collecting) it would tear down the parent's resources
        self._copied_hooks, self._entered = self._entered, contextlib.AsyncExitStack()
        self.scope._step_contexts.clear()
        bindings: Bindings = {}
        for hook in self._hooks:
            added = await self._entered.enter_async_context(enter(hook))
            bindings.update(added or {})
        return bindings

    async def _setup(self) -> Any:
        if not self._hooks:
            return await self._gen.__anext__()
        self._entered = contextlib.AsyncExitStack()
        for hook in self._hooks:
            added = await self._entered.enter_async_context(hook(self.scope))
            self._bindings.update(added or {})
        with self.scope.entered():  # again: the hooks may have added step contexts
            return await self._gen.__anext__()

    async def _release(self, timeout: float = 10.0) -> None:
        """Exit the task hooks, once, after the generator is done."""
        entered, self._entered = self._entered, None
        if entered is None:
            return
        try:
            await self._bounded("closing its task hooks", entered.aclose(), timeout)
        except Exception:
            log.exception("template %r: a task hook failed while closing", self.template_id)

    def _bounded(self, what: str, step: Awaitable[Any], timeout: float | None
                 ) -> Coroutine[Any, Any, Any]:
        """One step, to await, run in this task's scope (see :mod:`hud.steps`): the step's
        own coroutine, not one more around it."""
        return run_step(step, label=f"{self._named} {what}", timeout=timeout,
                        enter=self.scope.entered, on_abandon=self._abandon)

    def _abandon(self) -> None:
        self.abandoned = True

    async def _start(self, timeout: float | None) -> Prompt:
        """Run setup up to the first yield and return the prompt."""
        try:
            value = await self._step("setup", self._setup(), timeout)
        except StopAsyncIteration:
            await self.aclose()
            raise self._error("setup", "ended before yielding a prompt") from None
        self.started = True
        try:
            return normalize_prompt(value)
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            await self.aclose()
            raise self._error("setup", f"yielded an invalid prompt: {exc}") from None

    async def grade(self, answer: Any, timeout: float | None) -> Reward:
        """Send the answer in, return the reward, then run the generator's cleanup."""
        try:
            return await self._grade(answer, timeout)
        finally:
            if self.closed:
                await self._release()

    async def _grade(self, answer: Any, timeout: float | None) -> Reward:
        try:
            value = await self._step("grade", self._gen.asend(answer), timeout)
        except StopAsyncIteration:
            self.closed = True
            raise self._error("grade", "ended without yielding a reward") from None
        except TemplateError as exc:
            if not isinstance(exc.__cause__, CapabilityLost):
                raise
            log.info("template %r: scored 0, %s", self.template_id, exc.__cause__)
            return Reward(reward=0.0, info={"cause": str(exc.__cause__)})
        try:
            reward = normalize_reward(value)
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            await self.aclose()
            raise self._error("grade", f"yielded an invalid reward: {exc}") from None
        problem = await self._finish(timeout)
        if problem:
            info = {} if reward.info is msgspec.UNSET else dict(reward.info)
            info["cleanup_error"] = problem
            reward.info = info
        return reward

    async def _finish(self, timeout: float | None) -> str | None:
        """Run the code after the second yield; a failure there is reported, not fatal."""
        try:
            ended = await self._step("cleanup", _ended(self._gen), timeout)
        except TemplateError as exc:
            return exc.message
        if ended:
            self.closed = True
            return None
        await self.aclose()
        return "yielded more than twice; the extra values were ignored"

    async def _step(self, phase: Phase, step: Awaitable[Any], timeout: float | None) -> Any:
        self.scope.phase = phase
        try:
            return await self._bounded(f"during {phase}", step, timeout)
        except StopAsyncIteration:
            raise
        except TimeoutError:
            await self.aclose()
            raise self._error(phase, f"timed out after {timeout:g} s", timeout=timeout) from None
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except CapabilityLost as exc:
            self.closed = True
            raise self._error(phase, f"lost a capability: {exc}", error="CapabilityLost") \
                from exc
        except Exception as exc:
            self.closed = True  # a generator that raised is finished
            log.error("template %r failed during %s", self.template_id, phase, exc_info=exc)
            raise self._error(
                phase, f"{type(exc).__name__}: {exc}", error=type(exc).__name__
            ) from exc

    async def aclose(self, timeout: float = 10.0) -> None:
        """Cancel the task: run the generator's ``finally`` blocks (bounded), at most once."""
        if self.closed:
            await self._release(timeout)
            return
        self.closed = True
        self.scope.phase = "cleanup"
        if self.abandoned:  # its generator is still running, in the abandoned step
            await self._release(timeout)
            return
        try:
            await self._bounded("during cleanup", self._gen.aclose(), timeout)
        except TimeoutError:
            log.error("template %r: cleanup did not finish in %g s", self.template_id, timeout)
        except Exception:
            log.exception("template %r: cleanup failed", self.template_id)
        await self._release(timeout)

    def _error(self, phase: Phase, what: str, **data: Any) -> TemplateError:
        message = f"template {self.template_id!r} {what} (phase: {phase})"
        return TemplateError(message, {"phase": phase, "template": self.template_id, **data})


def normalize_prompt(value: Any) -> Prompt:
    """Accept a string, content blocks, chat messages, or ``{"prompt": ..., "bindings": ...}``."""
    if isinstance(value, str):
        return Prompt(prompt=value)
    if isinstance(value, (TextBlock, ImageBlock)):
        return Prompt(prompt=[value])
    if isinstance(value, dict) and "prompt" in value:
        unknown = set(value) - {"prompt", "bindings"}
        if unknown:
            raise ValueError(f"unexpected keys {sorted(unknown)} beside 'prompt'")
        prompt = normalize_prompt(value["prompt"])
        prompt.bindings = msgspec.convert(value.get("bindings", {}), dict[str, dict[str, Any]])
        return prompt
    if isinstance(value, (list, tuple)) and value:
        items = [msgspec.to_builtins(v) for v in value]
        if all(isinstance(v, dict) and "role" in v for v in items):
            messages = msgspec.convert(items, _messages_type)
            users = [m for m in messages if m.role == "user"]
            if not users:
                raise ValueError("a conversation prompt needs at least one user message")
            return Prompt(prompt=users[-1].content, messages=messages)
        return Prompt(prompt=msgspec.convert(items, list[ContentBlock]))
    raise TypeError(
        f"expected a string, content blocks or chat messages, got {type(value).__name__}"
    )


def normalize_reward(value: Any) -> Reward:
    """Accept a number, ``{"reward"|"score": ..., "subscores", "info"}`` or an object with
    ``.reward``. The reward and every subscore's score must be finite numbers in [0, 1], each
    weight a finite number (negative for a penalty, as :class:`hud.graders.Grade` makes them),
    and ``info`` an object that JSON can carry as is: anything else raises ``TypeError`` or
    ``ValueError`` naming what was wrong, never a reply the client would have to reject."""
    if type(value) is float or type(value) is int:  # the common case: a bare number
        return Reward(reward=_unit_interval(value, "the reward"))
    fields = _reward_fields(value)
    fields["reward"] = _unit_interval(fields.get("reward"), "the reward")
    if fields.get("subscores") is not None:
        fields["subscores"] = _subscores(fields["subscores"])
    if fields.get("info") is not None:
        if not isinstance(fields["info"], dict):
            raise TypeError(f"info must be an object, got {type(fields['info']).__name__}")
        fields["info"] = _json_value(fields["info"], "info", 0)
    return msgspec.convert(fields, Reward)


def _reward_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        fields = dict(value)
        if "score" in fields and "reward" not in fields:
            fields["reward"] = fields.pop("score")
        return fields
    if hasattr(value, "reward") and not isinstance(value, (int, float)):
        return {
            name: getattr(value, name)
            for name in ("reward", "subscores", "info")
            if getattr(value, name, None) is not None
        }
    return {"reward": value}


def _number(value: Any, what: str) -> float:
    """``value`` as a finite float; ``what`` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int past 1.8e308: no float, no JSON number a client reads
        raise ValueError(f"{what} must be a finite number, got an integer of "
                         f"{len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _unit_interval(value: Any, what: str) -> float:
    number = _number(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value!r}")
    return number


def _subscores(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        items = [{"name": k, "score": v} for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [msgspec.to_builtins(s) for s in value]
    else:
        raise TypeError(f"subscores must be a list or an object, got {type(value).__name__}")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TypeError(f"subscores[{index}] must be an object with a string 'name'")
        name = item["name"]
        checked.append({
            "name": name,
            "score": _unit_interval(item.get("score"), f"the score of subscore {name!r}"),
            "weight": _number(item.get("weight", 1.0), f"the weight of subscore {name!r}"),
        })
    return checked


MAX_INFO_DEPTH = 64
"""Nesting allowed in a reward's ``info`` (the codec's readers refuse deeper documents)."""


def _json_value(value: Any, path: str, depth: int) -> Any:
    """``value`` as JSON builtins, checked: non-finite floats and objects JSON cannot carry
    raise, naming their path. Structs, dataclasses, dates, sets and bytes are converted the
    way the wire encoder would (msgspec's builtins)."""
    if depth > MAX_INFO_DEPTH:
        raise ValueError(f"{path} is nested more than {MAX_INFO_DEPTH} levels deep")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a key of type {type(key).__name__} ({key!r}); "
                                "JSON object keys are strings")
            out[key] = _json_value(item, f"{path}[{key!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    try:
        converted = msgspec.to_builtins(value)
    except TypeError:
        raise TypeError(f"{path} is a {type(value).__name__}, which JSON cannot carry; "
                        "convert it to a string, number, list or object") from None
    return _json_value(converted, path, depth + 1)
