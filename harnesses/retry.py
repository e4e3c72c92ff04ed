"""Model requests with bounded, deadline-aware retries, for any provider's SDK.

Requests that fail with 408, 409, 429, 5xx (529, Anthropic's "overloaded", included), a
dropped or refused connection, or a timeout are retried (bounded in count and by the
rollout's deadline, each retry recorded as a ``retry`` step). The wait is the server's
``Retry-After`` when it sends one, honoured in full as long as it ends before the rollout's
deadline (with no deadline, up to ``max_retry_after``); otherwise exponential backoff with
jitter. Any other API error, a ``Retry-After`` past the deadline, or the last failed retry
raises :class:`ModelAPIError`, which fails the run (phase ``agent``) and is never scored as a 0.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hud.errors import ModelAPIError

if TYPE_CHECKING:
    from hud.eval.run import Run

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 409, 429})
_sleep = asyncio.sleep  # the one place retries wait: tests replace it with a recording clock


@dataclass(slots=True)
class RequestPolicy:
    """How requests are sent: SDK timeout per request and the retry schedule
    (``retry_delay`` doubles each retry, up to ``max_retry_delay``, with jitter; a server's
    ``Retry-After`` is honoured up to the deadline, or ``max_retry_after`` without one)."""

    request_timeout: float = 600.0
    max_retries: int = 4
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0
    max_retry_after: float = 600.0


async def send_with_retries(run: Run, policy: RequestPolicy,
                            send: Callable[[float], Awaitable[T]],
                            errors: type[BaseException] | tuple[type[BaseException], ...],
                            describe: Callable[[Any], str] = str,
                            fail: Callable[[Any, int], str] | None = None) -> tuple[T, float]:
    """``await send(timeout)`` with bounded, deadline-aware retries: an exception of
    ``errors`` (or a transport error, see :func:`retryable`) that may be retried is retried
    after :func:`retry_delay` (recorded as a ``retry`` step); any other, or the last, raises
    :class:`ModelAPIError` (its message ``fail(exc, attempts)`` when given). Returns the
    result and how long its attempt took."""
    caught = (errors if isinstance(errors, tuple) else (errors,)) + transport_errors()
    for attempt in range(policy.max_retries + 1):
        remaining = run.remaining()
        timeout = policy.request_timeout if remaining is None else max(
            min(policy.request_timeout, remaining), 0.001)
        started = time.monotonic()
        try:
            return await send(timeout), time.monotonic() - started
        except caught as exc:
            delay = retry_delay(policy, exc, attempt, run.remaining())
            if delay is None:
                message = _failure(exc, attempt + 1, describe, fail)
                hinted = retry_after(exc)
                if hinted is not None and retryable(exc) and attempt < policy.max_retries:
                    message += (f" (the server asked for a retry after {hinted:g} s, past "
                                "the rollout's deadline)")
                raise ModelAPIError(message) from exc
            run.record("retry", attempt=attempt + 1, error=describe(exc), delay=delay)
            await _sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _failure(exc: BaseException, attempts: int, describe: Callable[[Any], str],
             fail: Callable[[Any, int], str] | None) -> str:
    if fail is not None:
        return fail(exc, attempts)
    return f"model request failed after {attempts} attempt(s): {describe(exc)}"


def retry_delay(policy: RequestPolicy, exc: BaseException, attempt: int,
                remaining: float | None = None) -> float | None:
    """Seconds to wait before retrying, or None when ``exc`` is final: not retryable,
    retries used up, or the wait would end at or past the deadline (``remaining`` seconds
    away; None: no deadline)."""
    if attempt >= policy.max_retries or not retryable(exc):
        return None
    hinted = retry_after(exc)
    if hinted is not None:
        delay = hinted if remaining is not None else min(hinted, policy.max_retry_after)
    else:
        delay = min(policy.retry_delay * 2.0**attempt, policy.max_retry_delay)
        delay *= random.uniform(0.5, 1.0)  # jitter: concurrent rollouts spread out
    if remaining is not None and delay >= remaining:
        return None
    return delay


def retryable(exc: BaseException) -> bool:
    """429, 408, 409 and 5xx replies, and transport failures: a timeout, a refused or dropped
    connection (:func:`transport_errors`, or an SDK class whose name, or a base's, has
    "Connection" or "Timeout" in it: openai's and anthropic's ``APIConnectionError`` and
    ``APITimeoutError``)."""
    if isinstance(exc, transport_errors()) or any(
            "Connection" in kind.__name__ or "Timeout" in kind.__name__
            for kind in type(exc).__mro__):
        return True
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "code", None)  # google-genai's APIError
    return isinstance(status, int) and (status in RETRY_STATUSES or status >= 500)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP stacks' own transport failures, which some SDKs (google-genai) let through
    unwrapped: httpx's or its fork httpx2's (``ConnectError``, ``RemoteProtocolError``,
    ``ReadTimeout``...), aiohttp's, whichever are installed, and the builtin
    ``ConnectionError`` and ``TimeoutError``."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx", ("TransportError",)), ("httpx2", ("TransportError",)),
                          ("aiohttp", ("ClientConnectionError", "ClientPayloadError"))):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        kinds.extend(getattr(loaded, name) for name in names)
    return tuple(kinds)


def retry_after(exc: BaseException) -> float | None:
    """The server's ``retry-after-ms`` or ``retry-after`` (seconds) header, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(float(headers[name]) * scale, 0.0)
        except (KeyError, ValueError, TypeError):
            continue
    return None
