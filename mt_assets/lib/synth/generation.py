"""Synthetic parallel data from a teacher: plan, cache, parse, filter, report. No Dagster here.

``generate_synthetic(teacher, train, test, config=..., cache_dir=...)`` returns ``(table, report)``:
a pair table (``PAIR_COLUMNS`` + ``topic``) of exactly ``config.target_size(len(train))`` pairs and a
flat dict of counts (``REPORT_KEYS``). How it works:

1. Plan. Request i is a pure function of (train_A, config, i): topic ``topics[i % len(topics)]``,
   few-shot examples sampled from train_A (sorted by pair id, seeded by (seed, i)), sampling
   seed ``config.seed + i``. Plans never look at test_A.
2. Cache. Each request's reply is stored under ``cache_dir`` in one JSON file named by the SHA-256
   of (teacher back end, model, sampling settings, messages, seed), written to a temporary file
   and renamed, so a crash loses at most the requests in flight. A request whose file exists is
   never sent again.
3. Send. Requests run in waves sized from the yield so far, on a thread pool of
   ``teacher.max_concurrency``; each worker caches its reply as soon as it arrives.
4. Parse strictly (``parse_reply``) and filter (``PairFilter``), in request order, until the
   target is reached; surplus pairs of the last request are dropped (and counted).
5. Out of requests (``config.max_requests``) before the target: ``SynthesisShortfall`` with the
   report.

Given the same cache contents the result is the same, however the run was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mt_assets.lib.data import langid
from mt_assets.lib.data.pairs import PAIR_COLUMNS, make_pairs
from mt_assets.lib.data.text import is_blank, near_key, normalize_text
from mt_assets.lib.synth.cache import RequestCache
from mt_assets.lib.synth.prompt import DEFAULT_TOPICS, build_messages, iso639_1
from mt_assets.lib.synth.teachers import ChatTeacher, OracleTeacher
from mt_assets.lib.data.validators import MAX_EXAMPLES, Finding

SYNTH_COLUMNS = [*PAIR_COLUMNS, "topic"]

FILTER_REASONS = (
    "empty",
    "contaminated",
    "too_long",
    "length_ratio",
    "wrong_language_source",
    "wrong_language_target",
    "duplicate_train_exact",
    "duplicate_train_near",
    "duplicate_within_exact",
    "duplicate_within_near",
)
"""Why a parsed pair is dropped, in the order the checks run; the first that applies counts."""

LENGTH_RATIO_SMOOTHING = 10
"""Characters added to both lengths before taking their ratio, so "Ja." / "Oui." is not an outlier."""


# --- parsing ---------------------------------------------------------------------------------

class MalformedReply(ValueError):
    """A reply that is not one JSON object ``{"pairs": [...]}`` (optionally in a ```json fence)."""


_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(?P<body>.*)\n[ \t]*```\Z", re.DOTALL)
_ITEM_KEYS = {"source", "target", "topic"}


def parse_reply(text: str) -> tuple[list[dict], int]:
    """The well-formed items of a teacher reply and the number of malformed items dropped.

    The reply must be exactly one JSON object ``{"pairs": [...]}`` (surrounding whitespace and a
    single ```json fence are tolerated, nothing else: no prose, no second object). Otherwise
    ``MalformedReply`` is raised. An item is well-formed when it is an object with exactly the keys
    source, target and topic, all strings; other items are counted as malformed. Item texts are
    data: nothing in them is interpreted.
    """
    if not isinstance(text, str):
        raise MalformedReply(f"reply is {type(text).__name__}, not text")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group("body").strip()
    if not body:
        raise MalformedReply("reply is empty")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise MalformedReply(f"reply is not one JSON object ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, dict) or set(data) != {"pairs"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise MalformedReply(f'reply must be an object with the single key "pairs", got {keys}')
    if not isinstance(data["pairs"], list):
        raise MalformedReply(f'"pairs" must be a list, got {type(data["pairs"]).__name__}')
    items, malformed = [], 0
    for item in data["pairs"]:
        if (isinstance(item, dict) and set(item) == _ITEM_KEYS
                and all(isinstance(item[k], str) for k in _ITEM_KEYS)):
            items.append({"source": item["source"], "target": item["target"], "topic": item["topic"]})
        else:
            malformed += 1
    return items, malformed


# --- text keys and checks --------------------------------------------------------------------

def length_ratio(source: str, target: str) -> float:
    """Longer over shorter character length, each plus ``LENGTH_RATIO_SMOOTHING``."""
    a, b = len(source) + LENGTH_RATIO_SMOOTHING, len(target) + LENGTH_RATIO_SMOOTHING
    return max(a, b) / min(a, b)


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the quality filters.

    ``max_length_ratio`` 2.5 flags none of the 10,000 Tatoeba German-French test pairs (their
    99.9th percentile is 1.8); raise it for pairs with very different scripts (e.g. de-zh).
    ``max_chars`` 400: Tatoeba's longest German sentence has 421 characters, its 99.9th
    percentile 211.
    """

    max_chars: int = 400
    max_length_ratio: float = 2.5
    check_language: bool = True
    language_confusers: tuple[str, ...] = langid.DEFAULT_CONFUSERS

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"filters.max_chars={self.max_chars} must be at least 1")
        if self.max_length_ratio < 1:
            raise ValueError(f"filters.max_length_ratio={self.max_length_ratio} must be at least 1")


def _texts_of(frame: pd.DataFrame) -> Iterable[str]:
    yield from frame["source"]
    yield from frame["target"]


class PairFilter:
    """The quality filters, applied one pair at a time in a fixed order (``FILTER_REASONS``).

    ``check(source, target)`` returns the reason a pair is dropped, or None when it is kept; kept
    pairs are remembered, so later repeats count as duplicates within the synthetic set.
    Duplicates are judged on the source sentence (exact: normalised text; near: ``near_key``);
    contamination on either text against either side of test_A (by ``near_key``).
    """

    def __init__(self, *, source_lang: str, target_lang: str, train: pd.DataFrame, test: pd.DataFrame,
                 config: FilterConfig = FilterConfig()):
        self.config = config
        self.source_lang = iso639_1(source_lang, "source_lang")
        self.target_lang = iso639_1(target_lang, "target_lang")
        self.candidates = langid.candidates_for(self.source_lang, self.target_lang,
                                                confusers=config.language_confusers)
        self.test_keys = {k for k in map(near_key, _texts_of(test)) if k}
        self.train_exact = {normalize_text(s) for s in train["source"]}
        self.train_near = {k for k in map(near_key, train["source"]) if k}
        self.seen_exact: set[str] = set()
        self.seen_near: set[str] = set()
        self.counts: Counter = Counter({reason: 0 for reason in FILTER_REASONS})
        self.examples: dict[str, list[dict]] = {}

    def _reason(self, source: str, target: str) -> str | None:
        cfg = self.config
        if is_blank(source) or is_blank(target):
            return "empty"
        source_key, target_key = near_key(source), near_key(target)
        if (source_key and source_key in self.test_keys) or (target_key and target_key in self.test_keys):
            return "contaminated"
        if len(source) > cfg.max_chars or len(target) > cfg.max_chars:
            return "too_long"
        if length_ratio(source, target) > cfg.max_length_ratio:
            return "length_ratio"
        if cfg.check_language:
            if not langid.is_language(source, self.source_lang, self.candidates):
                return "wrong_language_source"
            if not langid.is_language(target, self.target_lang, self.candidates):
                return "wrong_language_target"
        if source in self.train_exact:
            return "duplicate_train_exact"
        if source_key and source_key in self.train_near:
            return "duplicate_train_near"
        if source in self.seen_exact:
            return "duplicate_within_exact"
        if source_key and source_key in self.seen_near:
            return "duplicate_within_near"
        return None

    def check(self, source: str, target: str) -> str | None:
        """Why the (normalised) pair is dropped, or None if kept (and then remembered)."""
        source, target = normalize_text(source), normalize_text(target)
        reason = self._reason(source, target)
        if reason is None:
            self.seen_exact.add(source)
            key = near_key(source)
            if key:
                self.seen_near.add(key)
            return None
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 3:
            examples.append({"source": source[:200], "target": target[:200]})
        return reason


def contamination(table: pd.DataFrame, test: pd.DataFrame) -> Finding:
    """Rows of ``table`` whose source or target occurs on either side of ``test`` (by
    ``near_key``): the blocking check behind synth_B and combined_C."""
    test_keys = {k for k in map(near_key, _texts_of(test)) if k}
    def hit(text: str) -> bool:
        key = near_key(text)
        return bool(key) and key in test_keys
    mask = table["source"].map(hit) | table["target"].map(hit)
    flagged = table[mask]
    examples = flagged.head(MAX_EXAMPLES)[["pair_id", "source", "target"]].to_dict("records")
    return Finding(int(mask.sum()), len(table), examples)


def topic_distribution(table: pd.DataFrame) -> pd.DataFrame:
    """Pairs per topic: columns topic, pairs, share; most frequent first."""
    counts = table["topic"].fillna("(none)").value_counts(sort=False)
    frame = pd.DataFrame({"topic": counts.index.astype(str), "pairs": counts.to_numpy()})
    frame["share"] = (frame["pairs"] / max(1, len(table))).round(4)
    return frame.sort_values(["pairs", "topic"], ascending=[False, True]).reset_index(drop=True)


def combine_train_synth(train: pd.DataFrame, synth: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """combined_C: train_A then synth_B, columns ``SYNTH_COLUMNS`` (train rows keep their topic
    if they have one, else None). Synthetic rows repeating a train pair id are dropped, counted."""
    train_part = train.copy()
    if "topic" not in train_part.columns:
        train_part["topic"] = None
    repeated = synth["pair_id"].isin(set(train["pair_id"]))
    combined = pd.concat([train_part[SYNTH_COLUMNS], synth.loc[~repeated, SYNTH_COLUMNS]], ignore_index=True)
    report = {"train_rows": len(train), "synth_rows": len(synth),
              "synth_dropped_repeating_train": int(repeated.sum()), "rows": len(combined)}
    return combined, report


# --- configuration and planning -------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    """Settings of one synthetic-data run.

    ``size`` pairs (None: ``size_factor`` x len(train_A)) from at most ``max_requests`` requests
    (None: ``budget_factor`` x the requests needed if every pair were valid) of
    ``pairs_per_request`` pairs each.
    """

    size: int | None = None
    size_factor: float = 2.0
    pairs_per_request: int = 10
    max_requests: int | None = None
    budget_factor: float = 3.0
    topics: tuple[str, ...] = DEFAULT_TOPICS
    few_shot: int = 3
    seed: int = 0
    filters: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"synth size={self.size} must be at least 1 (or None for size_factor x train)")
        if self.size_factor <= 0:
            raise ValueError(f"synth size_factor={self.size_factor} must be positive")
        if self.pairs_per_request < 1:
            raise ValueError(f"synth pairs_per_request={self.pairs_per_request} must be at least 1")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"synth max_requests={self.max_requests} must be at least 1")
        if self.budget_factor < 1:
            raise ValueError(f"synth budget_factor={self.budget_factor} must be at least 1")
        if not self.topics or any(not str(t).strip() for t in self.topics):
            raise ValueError(f"synth topics {list(self.topics)} must be a non-empty list of non-empty names")
        if self.few_shot < 0:
            raise ValueError(f"synth few_shot={self.few_shot} must be >= 0")

    def target_size(self, train_rows: int) -> int:
        return self.size if self.size is not None else max(1, round(self.size_factor * train_rows))

    def request_budget(self, target: int) -> int:
        if self.max_requests is not None:
            return self.max_requests
        return max(1, math.ceil(self.budget_factor * math.ceil(target / self.pairs_per_request)))


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    topic: str
    seed: int
    examples: tuple[tuple[str, str], ...]
    messages: tuple[dict, ...]


class RequestPlanner:
    """Plans request i as a pure function of (train_A, config, i); see the module docstring."""

    def __init__(self, train: pd.DataFrame, config: SynthConfig, source_lang: str, target_lang: str):
        ordered = train.sort_values("pair_id", kind="stable")
        self.examples_pool = list(zip(ordered["source"], ordered["target"]))
        self.config, self.source_lang, self.target_lang = config, source_lang, target_lang

    def plan(self, index: int) -> PlannedRequest:
        """Request ``index``: its topic, few-shot examples (from train_A only) and seed."""
        config = self.config
        topic = config.topics[index % len(config.topics)]
        k = min(config.few_shot, len(self.examples_pool))
        rng = np.random.default_rng([config.seed, index])
        rows = sorted(rng.choice(len(self.examples_pool), size=k, replace=False).tolist()) if k else []
        examples = tuple(self.examples_pool[r] for r in rows)
        messages = build_messages(source_lang=self.source_lang, target_lang=self.target_lang, topic=topic,
                                  n=config.pairs_per_request, examples=examples)
        return PlannedRequest(index, topic, config.seed + index, examples, tuple(messages))


# --- orchestration -------------------------------------------------------------------------

class SynthesisShortfall(RuntimeError):
    """Fewer valid pairs than wanted when the request budget (or the oracle pool) ran out."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


REPORT_KEYS = (
    "backend", "model", "source_lang", "target_lang", "target_size", "rows",
    "pairs_per_request", "request_budget", "requests_processed", "requests_sent", "requests_cached",
    "requests_unprocessed", "replies_malformed", "items_received", "items_malformed",
    "topic_mismatch", *(f"filtered_{r}" for r in FILTER_REASONS), "filtered_total",
    "accepted", "surplus_dropped", "topic_distribution", "examples", "teacher_stats", "cache_dir",
)
"""Keys of the report dict; the oracle adds ``oracle_pool_rows``, ``oracle_excluded_pair_in_train_or_test``,
``oracle_excluded_text_in_train_or_test``, ``oracle_eligible``.

* requests_processed: requests whose reply was parsed and filtered, in order (0..k-1);
  requests_sent: answered by the teacher in this run; requests_cached: read from the cache;
  requests_unprocessed: fetched in the last wave but not needed.
* replies_malformed: whole replies not in the schema; items_malformed: items dropped by parsing;
  items_received: well-formed items; accepted + filtered_total == items_received.
* filtered_<reason>: per ``FILTER_REASONS``; surplus_dropped: kept pairs beyond the target.
* topic_distribution: {topic: rows}; examples: {reason: up to 3 dropped pairs or replies};
  teacher_stats: the teacher's counters during this run (attempts, retries, rate_limited,
  timeouts, connection_errors, http_<status>, invalid_responses, truncated_replies).
"""


def _single(frame: pd.DataFrame, column: str, name: str) -> str:
    values = sorted(set(frame[column]))
    if len(values) != 1:
        raise ValueError(f"{name} must have one {column}, found {values}; synthesise one language pair at a time")
    return values[0]


class _Run:
    """State of one generate_synthetic call: counts, kept rows, progress."""

    def __init__(self, teacher, train, test, config, source_lang, target_lang, progress, on_progress,
                 cache_dir):
        self.teacher, self.config = teacher, config
        self.source_lang, self.target_lang = source_lang, target_lang
        self.target = config.target_size(len(train))
        self.filter = PairFilter(source_lang=source_lang, target_lang=target_lang, train=train, test=test,
                                 config=config.filters)
        self.counts: Counter = Counter()
        self.topics_kept: Counter = Counter()
        self.rows: list[tuple[str, str, str, str]] = []  # source, target, topic, origin
        self.reply_examples: list[dict] = []
        self.on_progress = on_progress
        self.cache_dir = cache_dir
        self.stats_at_start = Counter(getattr(teacher, "stats", {}))
        self.bar = tqdm(total=self.target, unit="pair", disable=not progress, dynamic_ncols=True,
                        desc=f"synthetic pairs ({teacher.backend}:{teacher.model})")

    def snapshot(self) -> dict:
        return {"target_size": self.target, "accepted": len(self.rows), **{
            k: self.counts[k] for k in ("requests_processed", "requests_sent", "requests_cached")}}

    def notify(self) -> None:
        self.bar.set_postfix(sent=self.counts["requests_sent"], cached=self.counts["requests_cached"],
                             refresh=False)
        if self.on_progress is not None:
            self.on_progress(self.snapshot())

    def take(self, candidates: list[dict], planned_topic: str | None, origin_of) -> None:
        """Filter one request's candidates in order, keeping the good ones."""
        self.counts["requests_processed"] += 1
        for item in candidates:
            self.counts["items_received"] += 1
            topic = planned_topic if planned_topic is not None else item["topic"]
            if planned_topic is not None and item["topic"].strip().casefold() != planned_topic.casefold():
                self.counts["topic_mismatch"] += 1
            if self.filter.check(item["source"], item["target"]) is not None:
                continue
            if len(self.rows) >= self.target:
                self.counts["surplus_dropped"] += 1
                continue
            self.rows.append((normalize_text(item["source"]), normalize_text(item["target"]), topic,
                              origin_of(item)))
            self.topics_kept[topic] += 1
            self.bar.update(1)

    def report(self, budget: int) -> dict:
        counts = self.counts
        report = {
            "backend": self.teacher.backend,
            "model": self.teacher.model,
            "source_lang": self.source_lang,
            "target_lang": self.target_lang,
            "target_size": self.target,
            "rows": min(len(self.rows), self.target),
            "pairs_per_request": self.config.pairs_per_request,
            "request_budget": budget,
            "requests_processed": counts["requests_processed"],
            "requests_sent": counts["requests_sent"],
            "requests_cached": counts["requests_cached"],
            "requests_unprocessed": counts["requests_fetched"] - counts["requests_processed"],
            "replies_malformed": counts["replies_malformed"],
            "items_received": counts["items_received"],
            "items_malformed": counts["items_malformed"],
            "topic_mismatch": counts["topic_mismatch"],
        }
        for reason in FILTER_REASONS:
            report[f"filtered_{reason}"] = self.filter.counts[reason]
        report["filtered_total"] = sum(self.filter.counts.values())
        report["accepted"] = len(self.rows) + counts["surplus_dropped"]
        report["surplus_dropped"] = counts["surplus_dropped"]
        report["topic_distribution"] = dict(sorted(self.topics_kept.items()))
        report["examples"] = {**self.filter.examples,
                              **({"malformed_reply": self.reply_examples} if self.reply_examples else {})}
        stats = Counter(getattr(self.teacher, "stats", {}))
        stats.subtract(self.stats_at_start)
        report["teacher_stats"] = {k: v for k, v in sorted(stats.items()) if v}
        report["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        return report

    def table(self) -> pd.DataFrame:
        rows = self.rows[: self.target]
        frame = make_pairs([r[0] for r in rows], [r[1] for r in rows], self.source_lang, self.target_lang,
                           origin="", topic=[r[2] for r in rows])
        frame["origin"] = [r[3] for r in rows]
        return frame[SYNTH_COLUMNS]


def generate_synthetic(
    teacher: ChatTeacher | OracleTeacher,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    config: SynthConfig = SynthConfig(),
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_progress: Callable[[dict], None] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Synthetic pairs from ``teacher`` (see the module docstring): ``(table, report)``.

    ``train`` (train_A) supplies few-shot examples and the duplicates to avoid; ``test`` (test_A)
    only the sentences that must not appear. ``cache_dir`` is required for chat teachers (the
    oracle needs none: it is in-process and deterministic).
    ``on_progress(snapshot)`` is called after every request fetched or processed; an exception
    it raises stops the run (requests in flight still finish and are cached).
    """
    if train.empty:
        raise ValueError("train_A is empty: synthetic data needs train_A for few-shot examples and size")
    source_lang = _single(train, "source_lang", "train_A")
    target_lang = _single(train, "target_lang", "train_A")
    if not test.empty and (_single(test, "source_lang", "test_A"), _single(test, "target_lang", "test_A")) != (source_lang, target_lang):
        raise ValueError(f"test_A's languages differ from train_A's ({source_lang}-{target_lang})")
    if isinstance(teacher, OracleTeacher):
        return _from_oracle(teacher, train, test, config, source_lang, target_lang, progress, on_progress)
    if cache_dir is None:
        raise ValueError("cache_dir is required for a chat teacher: the per-request cache makes reruns resume")
    run = _Run(teacher, train, test, config, source_lang, target_lang, progress, on_progress, cache_dir)
    try:
        _chat_loop(run, teacher, train, config, RequestCache(cache_dir))
    finally:
        run.bar.close()
    return run.table(), run.report(config.request_budget(run.target))


def _from_oracle(teacher: OracleTeacher, train, test, config, source_lang, target_lang, progress,
                 on_progress) -> tuple[pd.DataFrame, dict]:
    run = _Run(teacher, train, test, config, source_lang, target_lang, progress, on_progress, None)
    pool = teacher.pairs(config.seed)
    n = config.pairs_per_request
    try:
        for start in range(0, len(pool), n):
            if len(run.rows) >= run.target:
                break
            chunk = pool.iloc[start:start + n]
            candidates = [{"source": s, "target": t, "topic": str(tp), "origin": o}
                          for s, t, tp, o in zip(chunk["source"], chunk["target"], chunk["topic"], chunk["origin"])]
            run.counts["requests_fetched"] += 1
            run.take(candidates, None, lambda item: item["origin"])
            run.notify()
    finally:
        run.bar.close()
    report = run.report(math.ceil(len(pool) / n))
    report.update({f"oracle_{k}": v for k, v in teacher.excluded.items()})
    if len(run.rows) < run.target:
        raise SynthesisShortfall(
            f"oracle teacher: only {len(run.rows)} valid pairs of {run.target} wanted; its pool has "
            f"{teacher.excluded['eligible']} pairs disjoint from train_A/test_A ({_describe(report)}). "
            "Use a larger held-out pool or a smaller synth size", report)
    return run.table(), report


def _describe(report: dict) -> str:
    keys = ["requests_processed", "replies_malformed", "items_malformed", "accepted",
            *(f"filtered_{r}" for r in FILTER_REASONS)]
    return ", ".join(f"{k}={report[k]}" for k in keys if report.get(k))


def _chat_loop(run: _Run, teacher: ChatTeacher, train: pd.DataFrame, config: SynthConfig,
               cache: RequestCache) -> None:
    identity = teacher.cache_identity()
    budget = config.request_budget(run.target)
    n = config.pairs_per_request
    origin = f"synthetic:{teacher.backend}:{teacher.model}"
    planner = RequestPlanner(train, config, run.source_lang, run.target_lang)
    next_index = 0
    while len(run.rows) < run.target and next_index < budget:
        missing = run.target - len(run.rows)
        processed = run.counts["requests_processed"]
        per_request = len(run.rows) / processed if processed and run.rows else n
        wave = min(budget - next_index, max(1, math.ceil(missing / per_request)))
        plans = [planner.plan(i) for i in range(next_index, next_index + wave)]
        next_index += wave
        replies = _fetch(run, teacher, identity, cache, plans)
        for plan in plans:
            if len(run.rows) >= run.target:
                break
            try:
                items, malformed = parse_reply(replies[plan.index])
            except MalformedReply as err:
                run.counts["requests_processed"] += 1
                run.counts["replies_malformed"] += 1
                if len(run.reply_examples) < 3:
                    run.reply_examples.append({"request": plan.index, "reason": str(err),
                                               "reply": replies[plan.index][:200]})
                run.notify()
                continue
            run.counts["items_malformed"] += malformed
            run.take(items, plan.topic, lambda item: origin)
            run.notify()
    if len(run.rows) < run.target:
        report = run.report(budget)
        raise SynthesisShortfall(
            f"synthetic data: {len(run.rows)} valid pairs of {run.target} wanted after spending the "
            f"request budget of {budget} requests ({_describe(report)}). Raise setting max_requests "
            f"(or budget_factor), lower size, or read the teacher's replies under {cache.directory}; "
            "answered requests stay cached", report)


def _fetch(run: _Run, teacher: ChatTeacher, identity: dict, cache: RequestCache,
           plans: list[PlannedRequest]) -> dict[int, str]:
    """Replies for ``plans``: from the cache, else from the teacher (concurrently, each cached as
    soon as it arrives). On any error, queued requests are cancelled, those in flight finish
    (and are cached), then the error propagates."""
    replies: dict[int, str] = {}
    todo: list[tuple[PlannedRequest, str]] = []
    for plan in plans:
        key = RequestCache.request_key(identity, plan.messages, plan.seed)
        cached = cache.get(key)
        run.counts["requests_fetched"] += 1
        if cached is not None:
            replies[plan.index] = cached
            run.counts["requests_cached"] += 1
        else:
            todo.append((plan, key))
    if not todo:
        return replies
    lock = threading.Lock()
    stop = threading.Event()  # set on the first failure: queued requests are then not sent

    def work(plan: PlannedRequest, key: str) -> str | None:
        if stop.is_set():
            return None
        try:
            reply = teacher.request(list(plan.messages), seed=plan.seed, n=run.config.pairs_per_request)
        except BaseException:
            stop.set()
            raise
        cache.put(key, reply, {"identity": identity, "index": plan.index, "topic": plan.topic,
                               "seed": plan.seed, "messages": list(plan.messages)})
        with lock:
            run.counts["requests_sent"] += 1
        return reply

    pool = ThreadPoolExecutor(max_workers=max(1, int(teacher.max_concurrency)), thread_name_prefix="teacher")
    futures: dict[Future, PlannedRequest] = {pool.submit(work, plan, key): plan for plan, key in todo}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                replies[futures[future].index] = future.result()
                run.notify()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    missing = [plan.index for plan, _ in todo if replies.get(plan.index) is None]
    if missing:  # cannot happen without an exception above; never process a gap silently
        raise RuntimeError(f"requests {missing} were skipped without an error being raised")
    return replies
