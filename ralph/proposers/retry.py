"""Retry policy for API calls: exponential backoff with full jitter, honouring ``retry-after``.

The SDK client is built with ``max_retries=0`` so this is the only retry loop, and the number of
attempts, the waits and the reasons are ours to log and test.
"""
from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, TypeVar

import anthropic

log = logging.getLogger("ralph.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    base_s: float = 1.0  # first backoff; doubles each retry
    max_s: float = 60.0  # no single wait longer than this, retry-after included


class GaveUp(Exception):
    """Every attempt failed with a retryable error; ``str`` says the last one."""


def retry_after_s(error: Exception) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or HTTP date), if the server sent one."""
    value = error.response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retryable(error: Exception, sdk: ModuleType = anthropic) -> bool:
    if isinstance(error, (sdk.APIConnectionError, sdk.RateLimitError)):
        return True  # APITimeoutError is an APIConnectionError
    return isinstance(error, sdk.APIStatusError) and (error.status_code >= 500 or error.status_code == 408)


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *, rng: random.Random | None = None,
                    sleep: Callable[[float], None] = time.sleep, sdk: ModuleType = anthropic) -> T:
    """``sdk`` is the client library whose errors ``fn`` raises: ``anthropic`` or ``openai`` (the
    two share the error classes' names and meaning)."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except sdk.APIError as e:
            if not _retryable(e, sdk):
                raise
            if attempt == policy.attempts:
                raise GaveUp(f"gave up after {attempt} attempts: {_describe(e)}") from e
            wait = rng.uniform(0, min(policy.max_s, policy.base_s * 2 ** (attempt - 1)))  # full jitter
            if isinstance(e, sdk.APIStatusError):
                hinted = retry_after_s(e)
                if hinted is not None:
                    wait = min(policy.max_s, max(wait, hinted))
            log.info("%s: %s; retry %d/%d in %.1fs", sdk.__name__, _describe(e), attempt, policy.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status}"
    return type(e).__name__
