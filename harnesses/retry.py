"""Model requests with bounded, deadline-aware retries, for any provider's SDK.

Requests that fail with 408, 409, 429, 5xx or a connection error are retried with exponential
backoff (bounded in count and by the rollout's deadline, each retry recorded as a ``retry``
step); any other API error, or the last failed retry, raises :class:`ModelAPIError`, which
fails the run (phase ``agent``) and is never scored as a 0.
"""

from __future__ import annotations

import asyncio
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


@dataclass(slots=True)
class RequestPolicy:
    """How requests are sent: SDK timeout per request and the retry schedule
    (``retry_delay`` doubles each retry, up to ``max_retry_delay``, with jitter)."""

    request_timeout: float = 600.0
    max_retries: int = 4
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0


async def send_with_retries(run: Run, policy: RequestPolicy,
                            send: Callable[[float], Awaitable[T]],
                            errors: type[Exception] | tuple[type[Exception], ...],
                            describe: Callable[[Any], str] = str,
                            fail: Callable[[Any, int], str] | None = None) -> tuple[T, float]:
    """``await send(timeout)`` with bounded, deadline-aware retries: an exception of
    ``errors`` that :func:`retryable` accepts is retried with backoff (recorded as a
    ``retry`` step), any other, or the last, raises :class:`ModelAPIError` (its message
    ``fail(exc, attempts)`` when given). Works for any SDK whose errors carry ``status_code``
    and ``response.headers`` (openai, anthropic) or ``code`` (google-genai). Returns the
    result and how long its attempt took."""
    for attempt in range(policy.max_retries + 1):
        remaining = run.remaining()
        timeout = policy.request_timeout if remaining is None else max(
            min(policy.request_timeout, remaining), 0.001)
        started = time.monotonic()
        try:
            return await send(timeout), time.monotonic() - started
        except errors as exc:
            delay = retry_delay(policy, exc, attempt)
            left = run.remaining()
            if delay is None or (left is not None and delay >= left):
                message = fail(exc, attempt + 1) if fail else (
                    f"model request failed after {attempt + 1} attempt(s): {describe(exc)}")
                raise ModelAPIError(message) from exc
            run.record("retry", attempt=attempt + 1, error=describe(exc), delay=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def retry_delay(policy: RequestPolicy, exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when ``exc`` is final."""
    if attempt >= policy.max_retries or not retryable(exc):
        return None
    hinted = retry_after(exc)
    if hinted is not None:
        return min(hinted, policy.max_retry_delay)
    delay = min(policy.retry_delay * 2.0**attempt, policy.max_retry_delay)
    return delay * random.uniform(0.5, 1.0)  # jitter: concurrent rollouts spread out


def retryable(exc: BaseException) -> bool:
    """429, 408, 409 and 5xx replies, and connection failures (timeouts included): an SDK's
    connection error class, or a class it derives from, has "Connection" or "Timeout" in its
    name (openai's and anthropic's ``APIConnectionError`` and ``APITimeoutError``)."""
    if any("Connection" in kind.__name__ or "Timeout" in kind.__name__
           for kind in type(exc).__mro__):
        return True
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "code", None)  # google-genai's APIError
    return isinstance(status, int) and (status in RETRY_STATUSES or status >= 500)


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
