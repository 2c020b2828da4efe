"""What every chat teacher offers (``ChatTeacher``) and the errors teachers raise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

Messages = Sequence[Mapping[str, str]]


class TeacherError(RuntimeError):
    """A teacher could not answer. The message names the setting at fault and what to do."""


class TeacherConfigError(TeacherError):
    """A setting is wrong (missing key, rejected key, unknown model, invalid request): not retried."""


class TeacherUnavailableError(TeacherError):
    """The teacher kept failing (timeouts, refused connections, 429/5xx) after every retry."""


@runtime_checkable
class ChatTeacher(Protocol):
    """What ``generation.generate_synthetic`` needs from a chat teacher."""

    backend: str
    """Back-end name for the cache key and the origin column: ``openai``, ``transformers``."""
    model: str
    max_concurrency: int

    def cache_identity(self) -> dict:
        """Settings that change the reply besides messages and seed (back end, model, sampling)."""

    def request(self, messages: Messages, *, seed: int, n: int) -> str:
        """The reply text for one prompt asking for ``n`` pairs, sampled with ``seed``."""

    def complete(self, prompt: str, *, seed: int, stop: Sequence[str]) -> str:
        """Translate mode: the continuation of a plain-text ``prompt`` (no chat template), sampled
        with ``seed`` and cut before the first of the ``stop`` strings."""


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any ``stop`` string (what servers do with ``stop``)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]
