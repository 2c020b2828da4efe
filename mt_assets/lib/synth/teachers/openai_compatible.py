"""A teacher behind any OpenAI-compatible endpoint (vLLM, TGI, Ollama, llama.cpp's llama-server, HF
Inference Providers, OpenAI), through the official ``openai`` client: chat completions in topics
mode, plain completions (``/v1/completions``) in translate mode.

Secrets: the API key is read from a named environment variable at call time and never written
into an exception, a log record or a repr (the server's error text is left out of 401/403
errors, because providers echo the key they were sent). Credentials inside ``base_url`` (user
information, query string) are shown only redacted (``lib.urls.redact_url``) and sent as an
authorization header and query parameters, so no library logs them as part of a URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mt_assets.lib.synth.teachers.base import Messages, TeacherConfigError, TeacherUnavailableError, cut_at_stop
from mt_assets.lib.synth.teachers.retry import RetryPolicy, parse_retry_after, scrub
from mt_assets.lib.urls import credential_parts, redact_logged_urls, redact_url

log = logging.getLogger(__name__)

DEFAULT_TEACHER_MODEL = "Qwen/Qwen2.5-32B-Instruct"
DEFAULT_API_KEY_ENV = "MT_TEACHER_API_KEY"
NO_AUTH_KEY = "no-key"
"""Sent as the API key when ``api_key_env`` is None (local servers without authentication)."""


class _InvalidResponse(Exception):
    """A 200 whose body is not a chat completion (a proxy's HTML page, a cut-off body)."""


def _attempt_watching_client():
    """The ``openai`` client's default HTTP client class, reporting every attempt to its teacher:
    the client retries inside ``chat.completions.create``, and ``send`` is where each attempt is
    seen (to wait for another thread's 429 pause, and to count what went wrong)."""
    import openai

    http = sys.modules[openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]]

    class AttemptWatchingClient(openai.DefaultHttpxClient):
        def __init__(self, teacher: OpenAITeacher, **kwargs):
            super().__init__(**kwargs)
            self.teacher = teacher

        def send(self, request, **kwargs):
            self.teacher._before_attempt()
            try:
                response = super().send(request, **kwargs)
            except http.TimeoutException as err:
                self.teacher._after_failure("timeouts", type(err).__name__)
                raise
            except http.RequestError as err:
                self.teacher._after_failure("connection_errors", type(err).__name__)
                raise
            self.teacher._after_response(response.status_code, response.headers)
            return response

    return AttemptWatchingClient


# --- OpenAI-compatible endpoint --------------------------------------------------------------

@dataclass
class OpenAITeacher:
    """Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` client.

    ``base_url`` is the API root, e.g. ``http://localhost:8000/v1`` (vLLM),
    ``https://router.huggingface.co/v1`` (HF Inference Providers). The key comes from the
    environment variable named by ``api_key_env`` (None: a server without authentication).
    ``max_tokens=None`` allows ``tokens_base + tokens_per_pair * n`` tokens for n pairs.
    The client retries transport faults, 429 and 5xx itself; ``retry`` bounds all attempts and
    sets what the client lacks: a 429 pauses every thread of this teacher for the Retry-After (or
    backoff) delay, and a 200 that is not a chat completion is retried.
    """

    base_url: str = field(repr=False)
    model: str = DEFAULT_TEACHER_MODEL
    api_key_env: str | None = DEFAULT_API_KEY_ENV
    max_concurrency: int = 4
    timeout_s: float = 120.0
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int | None = None
    tokens_base: int = 256
    tokens_per_pair: int = 128
    json_schema: bool = False
    """Send ``response_format`` with ``prompt.REPLY_SCHEMA`` (vLLM, OpenAI support it)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    backend: ClassVar[str] = "openai"

    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _client_key_digest: str | None = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _not_before: float = field(default=0.0, init=False, repr=False, compare=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False, compare=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)
    stats: Counter = field(default_factory=Counter, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise TeacherConfigError(
                f"teacher base_url {redact_url(str(self.base_url))!r} must be an http(s) URL of the API "
                "root, e.g. http://localhost:8000/v1"
            )
        if not self.model:
            raise TeacherConfigError("teacher model is empty: set it, e.g. Qwen/Qwen2.5-32B-Instruct")
        if self.max_concurrency < 1:
            raise TeacherConfigError(f"teacher max_concurrency={self.max_concurrency} must be at least 1")
        if self.timeout_s <= 0:
            raise TeacherConfigError(f"teacher timeout_s={self.timeout_s} must be positive")

    # settings
    def cache_identity(self) -> dict:
        return {
            "backend": self.backend,
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "tokens_base": self.tokens_base,
            "tokens_per_pair": self.tokens_per_pair,
            "json_schema": self.json_schema,
        }

    def max_tokens_for(self, n: int) -> int:
        return self.max_tokens if self.max_tokens is not None else self.tokens_base + self.tokens_per_pair * n

    def _api_key(self) -> str:
        if self.api_key_env is None:
            return NO_AUTH_KEY
        key = os.environ.get(self.api_key_env, "")
        if not key.strip():
            raise TeacherConfigError(
                f"environment variable {self.api_key_env} is not set (setting api_key_env): export it "
                f"with the API key for the teacher at {redact_url(self.base_url)}, or set api_key_env to None "
                "for a server without authentication"
            )
        return key.strip()

    def _get_client(self, key: str):
        import openai

        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            if self._client is None or self._client_key_digest != digest:
                url, query, userinfo = credential_parts(self.base_url)
                # openai and httpx log request URLs: credentials go as basic auth (what httpx
                # makes of a URL's user information) and default query parameters instead.
                if query:  # the HTTP library (httpx, by its module name) logs every request URL
                    redact_logged_urls(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
                self._client = openai.OpenAI(
                    base_url=url, api_key=key, timeout=self.timeout_s,
                    max_retries=self.retry.max_attempts - 1, default_query=query or None,
                    http_client=_attempt_watching_client()(self, auth=userinfo),
                )
                self._client_key_digest = digest
            return self._client

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _wait_turn(self) -> None:
        while True:
            with self._lock:
                wait = self._not_before - time.monotonic()
            if wait <= 0:
                return
            self.sleep(wait)

    def _pause_all(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    # What the client lacks, seen from its HTTP client: every attempt, its own retries included
    def _before_attempt(self) -> None:
        """Wait out a pause another thread's 429 started; count the attempt (and the retry)."""
        self._wait_turn()
        self._local.attempts = getattr(self._local, "attempts", 0) + 1
        self._count("attempts")
        if self._local.attempts > 1:
            self._count("retries")

    def _after_failure(self, counter: str, what: str) -> None:
        self._count(counter)
        log.warning("teacher %r at %s: attempt %d/%d failed (%s)", self.model, redact_url(self.base_url),
                    self._local.attempts, self.retry.max_attempts, what)

    def _after_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Count an error status; after a 429, hold every thread of this teacher off (the client
        only delays the thread that got it). A Retry-After beyond ``max_retry_after_s`` fails at once."""
        if status < 400:
            return
        self._after_failure("rate_limited" if status == 429 else f"http_{status}", f"HTTP {status}")
        if status != 429:
            return
        retry_after = parse_retry_after(headers)
        if retry_after is not None and retry_after > self.retry.max_retry_after_s:
            raise TeacherUnavailableError(
                f"teacher {self.model!r} at {redact_url(self.base_url)} asked to wait {retry_after:.0f} s "
                f"before retrying (HTTP 429, Retry-After), more than setting max_retry_after_s="
                f"{self.retry.max_retry_after_s:g}; try again later or raise that setting. Answered "
                "requests are cached: running again resumes")
        if retry_after is None:
            retry_after = self.retry.backoff(self._local.attempts, self._rng)
        self._pause_all(retry_after)

    def _create_kwargs(self, messages: Messages, seed: int, n: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "seed": seed,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens_for(n),
        }
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if self.json_schema:
            from mt_assets.lib.synth.prompt import REPLY_SCHEMA

            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "sentence_pairs", "schema": REPLY_SCHEMA, "strict": True},
            }
        return kwargs

    def request(self, messages: Messages, *, seed: int, n: int) -> str:
        """Send one chat completion (topics mode); the reply's text."""
        kwargs = self._create_kwargs(messages, seed, n)
        return self._call(lambda client: client.chat.completions.create(**kwargs))

    def complete(self, prompt: str, *, seed: int, stop: Sequence[str]) -> str:
        """Translate mode: one plain-text completion (``/v1/completions``: no chat template, so a
        base model such as Gemma 3 270M behind llama-server continues the few-shot prompt as it
        was trained to); the text cut before the first ``stop`` string."""
        kwargs: dict[str, Any] = {"model": self.model, "prompt": prompt, "seed": seed, "stop": list(stop),
                                  "temperature": self.temperature, "max_tokens": self.max_tokens_for(1)}
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        return cut_at_stop(self._call(lambda client: client.completions.create(**kwargs)), stop)

    def _call(self, create: Callable[[Any], Any]) -> str:
        """``create(client)`` with retries; the reply's text. The client retries transport faults,
        429 and 5xx; this loop only retries what it does not: a 200 that is not a completion, and
        a 429 whose Retry-After the client will not wait for (see ``RetryPolicy``)."""
        import openai

        key = self._api_key()
        client = self._get_client(key)
        where = f"teacher {self.model!r} at {redact_url(self.base_url)}"
        max_attempts = self.retry.max_attempts
        self._local.attempts = 0
        last = "no attempt made"
        while (before := self._local.attempts) < max_attempts:
            left = max_attempts - before - 1  # the client's retries for this call
            try:
                response = create(client.with_options(max_retries=left))
                return self._content(response)
            except openai.APIStatusError as err:
                verdict, detail = self._classify_status(err, key, where)
            except openai.APITimeoutError:
                verdict, detail = "final", f"no answer within timeout_s={self.timeout_s:g}"
            except openai.APIConnectionError as err:
                cause = type(err.__cause__).__name__ if err.__cause__ is not None else "unknown cause"
                verdict, detail = "final", f"connection failed ({cause})"
            except (_InvalidResponse, ValueError, openai.APIResponseValidationError) as err:
                verdict, detail = "again", f"invalid response body ({type(err).__name__})"
                self._after_failure("invalid_responses", detail)
            # Decide outside the except block, so no raised error carries the client's exception
            # (whose text and request may hold the key) as its context.
            if verdict == "fatal":
                raise detail
            last = detail
            if verdict == "final" or self._local.attempts == before:  # the client gave up, or sent nothing
                break
            if verdict == "again" and self._local.attempts < max_attempts:  # "paused": see _after_response
                self.sleep(self.retry.backoff(self._local.attempts, self._rng))
        raise TeacherUnavailableError(
            f"{where} failed {self._local.attempts} attempts (last: {last}). Check that the server "
            f"is up and setting base_url; raise timeout_s or max_attempts for a slow or busy "
            "server. Requests already answered are cached: running again resumes"
        )

    def _classify_status(self, err, key: str, where: str) -> tuple[str, Any]:
        """(verdict, detail or error) for an HTTP error status the client did not retry (further):
        "fatal" (a setting is wrong), "paused" (a 429: its Retry-After was too long for the client,
        or its retries are spent) or "final" (the client's retries are spent)."""
        status = err.status_code
        _, query, userinfo = credential_parts(self.base_url)  # servers echo what they were sent
        message = scrub(str(getattr(err, "message", "")), [key, *query.values(), *(userinfo or ())])
        if status in (401, 403):
            env = self.api_key_env
            return ("fatal", TeacherConfigError(
                f"{where} refused the request as unauthorised (HTTP {status}) with the API key from "
                f"environment variable {env}. Set {env} to a valid key for this endpoint with access "
                "to the model"
                if env else
                f"{where} requires an API key (HTTP {status}) but setting api_key_env is None: set "
                "api_key_env to the name of an environment variable holding the key"
            ))
        if status == 404:
            return ("fatal", TeacherConfigError(
                f"{where} answered HTTP 404 ({message}): check setting base_url (the API root, "
                "usually ending in /v1) and setting model"
            ))
        if status in (408, 409, 429) or status >= 500:
            return ("paused" if status == 429 else "final", f"HTTP {status}: {message}")
        return ("fatal", TeacherConfigError(
            f"{where} rejected the request with HTTP {status} ({message}): check settings model, "
            "max_tokens, temperature and json_schema for this server"
        ))

    def _content(self, response: Any) -> str:
        if isinstance(response, (str, bytes)):
            raise _InvalidResponse("body is not a JSON object")
        choices = getattr(response, "choices", None)
        if not choices:
            raise _InvalidResponse("no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)  # a chat completion; a completion has text
        content = getattr(message, "content", None) if message is not None else getattr(choice, "text", None)
        if getattr(choice, "finish_reason", None) == "length":
            self._count("truncated_replies")
            log.warning("teacher %r: a reply was cut off at the token limit (finish_reason=length); "
                        "raise setting max_tokens or tokens_per_pair", self.model)
        if content is None:
            self._count("empty_replies")
            return ""
        if not isinstance(content, str):
            raise _InvalidResponse("content is not text")
        return content
