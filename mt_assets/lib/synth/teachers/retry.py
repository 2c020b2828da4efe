"""How a teacher behind an HTTP API retries: the policy (``RetryPolicy``), the server's
Retry-After header (``parse_retry_after``), and error texts with the secrets taken out (``scrub``)."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request is tried, and how long this module waits where the client does not.

    ``max_attempts`` bounds every attempt of one request: the ``openai`` client's own retries
    (timeouts, refused connections, 408/409/429, 5xx, with its exponential backoff from 0.5 s to
    8 s and its Retry-After handling up to 2 minutes) and ours (below) together.
    ``backoff_base_s``/``backoff_max_s`` set what the client has no setting for: the pause every
    thread of the teacher takes after a 429 without Retry-After, and the wait before retrying a
    reply that is not a chat completion. Attempt k waits ``min(backoff_max_s, backoff_base_s *
    2**(k-1))`` scaled by a random factor in [0.5, 1]. A Retry-After over ``max_retry_after_s``
    fails at once rather than stall the run; one the client will not wait for (over 2 minutes)
    but within ``max_retry_after_s`` is waited out here.
    """

    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"setting max_attempts={self.max_attempts} must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("settings backoff_base_s and backoff_max_s must be >= 0")
        if self.max_retry_after_s < 0:
            raise ValueError(f"setting max_retry_after_s={self.max_retry_after_s} must be >= 0")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * rng.random())


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP-date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    millis = lower.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def scrub(text: str, secrets: Sequence[str], limit: int = 300) -> str:
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text if len(text) <= limit else text[:limit] + "..."
