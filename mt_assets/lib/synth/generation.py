"""Synthetic parallel data from a teacher: the run that plans, caches, sends, parses, filters and
reports; and combined_C (train_A + synth_B). No Dagster here.

``generate_synthetic(teacher, train, test, config=..., cache_dir=...)`` returns ``(table, report)``:
a pair table (``PAIR_COLUMNS`` + ``topic``) of exactly ``config.target_size(len(train))`` pairs and a
flat dict of counts (``REPORT_KEYS``). How it works:

1. Plan (``planning``). Request i is a pure function of (train_A, config, i): topic ``topics[i % len(topics)]``
   (translate mode: pool sentence i, ``translate_mode``), few-shot examples sampled from train_A
   (seeded by (seed, i)), sampling seed ``config.seed + i``. Plans never look at test_A.
2. Cache (``cache``). Each reply is stored under ``cache_dir`` in one JSON file named by the SHA-256 of
   (back end, model, sampling settings, messages or mode + source + prompt, seed), written to a
   temporary file and renamed: a crash loses at most the requests in flight; a cached request is never sent again.
3. Send. Requests run in waves sized from the yield so far, on a thread pool of
   ``teacher.max_concurrency``; each worker caches its reply as soon as it arrives.
4. Parse strictly (``parsing.parse_reply``; translate mode ``parse_line``) and filter
   (``filters.PairFilter``), in request order, until the target is reached; surplus pairs of the
   last request are dropped (and counted).
5. Out of requests (``config.max_requests``) before the target: ``SynthesisShortfall`` with the report.

Given the same cache contents the result is the same, however the run was interrupted.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pandas as pd
from tqdm.auto import tqdm

from mt_assets.lib.data.pairs import PAIR_COLUMNS, make_pairs
from mt_assets.lib.data.text import normalize_text, sentence_key
from mt_assets.lib.synth.cache import RequestCache
from mt_assets.lib.synth.filters import FILTER_REASONS, PairFilter
from mt_assets.lib.data.languages import language_name
from mt_assets.lib.synth.parsing import MalformedReply, parse_line, parse_reply
from mt_assets.lib.synth.planning import PlannedRequest, RequestPlanner, SynthConfig
from mt_assets.lib.synth.translate_mode import SourcePool, TranslationPlanner, complete_in_batches
from mt_assets.lib.synth.teachers.base import ChatTeacher
from mt_assets.lib.synth.teachers.oracle import OracleTeacher

SYNTH_COLUMNS = [*PAIR_COLUMNS, "topic"]
"""Columns of synth_B and combined_C: a pair table plus the topic each pair was asked for."""


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


class SynthesisShortfall(RuntimeError):
    """Fewer valid pairs than wanted when the request budget (or the oracle pool) ran out."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


REPORT_KEYS = (
    "mode", "backend", "model", "source_lang", "target_lang", "target_size", "rows",
    "pairs_per_request", "request_budget", "requests_processed", "requests_sent", "requests_cached",
    "requests_unprocessed", "replies_malformed", "reply_lines_dropped", "items_received", "items_malformed",
    "topic_mismatch", *(f"filtered_{r}" for r in FILTER_REASONS), "filtered_total",
    "accepted", "surplus_dropped", "topic_distribution", "examples", "teacher_stats", "cache_dir",
)
"""Keys of the report dict; translate mode adds ``translate_mode.POOL_COUNTS``; the oracle adds ``oracle_pool_rows``,
``oracle_excluded_pair_in_train_or_test``, ``oracle_excluded_text_in_train_or_test``, ``oracle_eligible``.

* requests_processed: requests whose reply was parsed and filtered, in order (0..k-1);
  requests_sent: answered by the teacher in this run; requests_cached: read from the cache;
  requests_unprocessed: fetched in the last wave but not needed.
* replies_malformed: whole replies not in the schema (translate mode: empty, or only the label);
  reply_lines_dropped: translate mode, lines after a reply's first; items_malformed: items dropped by parsing;
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
            if planned_topic is not None and sentence_key(item["topic"]) != sentence_key(planned_topic):
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
            "mode": self.config.mode,
            "backend": self.teacher.backend,
            "model": self.teacher.model,
            "source_lang": self.source_lang,
            "target_lang": self.target_lang,
            "target_size": self.target,
            "rows": min(len(self.rows), self.target),
            "pairs_per_request": self.config.per_request,
            "request_budget": budget,
            "requests_processed": counts["requests_processed"],
            "requests_sent": counts["requests_sent"],
            "requests_cached": counts["requests_cached"],
            "requests_unprocessed": counts["requests_fetched"] - counts["requests_processed"],
            "replies_malformed": counts["replies_malformed"],
            "reply_lines_dropped": counts["reply_lines_dropped"],
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
    source_pool: SourcePool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Synthetic pairs from ``teacher`` (see the module docstring): ``(table, report)``.

    ``train`` (train_A) supplies few-shot examples and the duplicates to avoid; ``test`` (test_A)
    only the sentences that must not appear. ``cache_dir`` is required for chat teachers (the
    oracle needs none: it is in-process and deterministic). Translate mode (``config.mode``) needs
    ``source_pool`` (``translate_mode.eligible_sources``), with at least as many sentences as pairs
    are wanted; there the oracle serves the pool's reference translations.
    ``on_progress(snapshot)`` is called after every request fetched or processed; an exception
    it raises stops the run (requests in flight still finish and are cached).
    """
    if train.empty:
        raise ValueError("train_A is empty: synthetic data needs train_A for few-shot examples and size")
    source_lang = _single(train, "source_lang", "train_A")
    target_lang = _single(train, "target_lang", "train_A")
    if not test.empty and (_single(test, "source_lang", "test_A"), _single(test, "target_lang", "test_A")) != (source_lang, target_lang):
        raise ValueError(f"test_A's languages differ from train_A's ({source_lang}-{target_lang})")
    translate = config.mode == "translate"
    if translate:
        if source_pool is None:
            raise ValueError("synthesis mode translate needs setting synthesis.source_pool: a held-out corpus "
                             "whose source sentences the teacher translates")
        source_pool.require(config.target_size(len(train)))
    args = (train, test, config, source_lang, target_lang, progress, on_progress)
    if isinstance(teacher, OracleTeacher):
        if translate:
            eligible = len(source_pool.sentences)
            return _from_oracle(teacher, *args, source_pool.reference_table(), eligible, source_pool.counts)
        return _from_oracle(teacher, *args, teacher.pairs(config.seed), teacher.excluded["eligible"],
                            {f"oracle_{k}": v for k, v in teacher.excluded.items()})
    if cache_dir is None:
        raise ValueError("cache_dir is required for a chat teacher: the per-request cache makes reruns resume")
    run = _Run(teacher, train, test, config, source_lang, target_lang, progress, on_progress, cache_dir)
    planner = (TranslationPlanner(train, config, source_lang, target_lang, source_pool) if translate
               else RequestPlanner(train, config, source_lang, target_lang))
    budget = config.request_budget(run.target)
    if translate:
        budget = min(budget, len(source_pool.sentences))
    try:
        _chat_loop(run, teacher, planner, budget, RequestCache(cache_dir), source_pool)
    finally:
        run.bar.close()
    return run.table(), _with_pool(run.report(budget), source_pool)


def _with_pool(report: dict, source_pool: SourcePool | None) -> dict:
    return {**report, **(source_pool.counts if source_pool is not None else {})}


def _from_oracle(teacher: OracleTeacher, train, test, config, source_lang, target_lang, progress,
                 on_progress, pool: pd.DataFrame, eligible: int, extra: dict) -> tuple[pd.DataFrame, dict]:
    """Pairs of ``pool`` (the oracle's own, or in translate mode the source pool's references)
    through the filters, in order; ``extra`` joins the report."""
    run = _Run(teacher, train, test, config, source_lang, target_lang, progress, on_progress, None)
    n = config.per_request
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
    report = {**run.report(math.ceil(len(pool) / n)), **extra}
    if len(run.rows) < run.target:
        raise SynthesisShortfall(
            f"oracle teacher: only {len(run.rows)} valid pairs of {run.target} wanted; its pool has "
            f"{eligible} pairs disjoint from train_A/test_A ({_describe(report)}). "
            "Use a larger held-out pool or a smaller synth size", report)
    return run.table(), report


def _describe(report: dict) -> str:
    keys = ["requests_processed", "replies_malformed", "items_malformed", "accepted",
            *(f"filtered_{r}" for r in FILTER_REASONS)]
    return ", ".join(f"{k}={report[k]}" for k in keys if report.get(k))


def _candidates(run: _Run, plan: PlannedRequest, reply: str) -> list[dict]:
    """The items of one reply (``MalformedReply`` when there are none): JSON pairs in topics mode,
    the plan's source with the reply's first line in translate mode."""
    if plan.source is None:
        items, malformed = parse_reply(reply)
        run.counts["items_malformed"] += malformed
        return items
    line, dropped = parse_line(reply, language_name(run.target_lang, "target_lang"))
    run.counts["reply_lines_dropped"] += dropped
    return [{"source": plan.source, "target": line, "topic": plan.topic}]


def _chat_loop(run: _Run, teacher: ChatTeacher, planner: RequestPlanner, budget: int,
               cache: RequestCache, source_pool: SourcePool | None) -> None:
    identity = teacher.cache_identity()
    n = run.config.per_request
    origin = f"synthetic:{teacher.backend}:{teacher.model}"
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
                items = _candidates(run, plan, replies[plan.index])
            except MalformedReply as err:
                run.counts["requests_processed"] += 1
                run.counts["replies_malformed"] += 1
                if len(run.reply_examples) < 3:
                    run.reply_examples.append({"request": plan.index, "reason": str(err),
                                               "reply": replies[plan.index][:200]})
                run.notify()
                continue
            run.take(items, plan.topic, lambda item: origin)
            run.notify()
    if len(run.rows) < run.target:
        report = _with_pool(run.report(budget), source_pool)
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
        key = RequestCache.request_key(identity, plan.messages, plan.seed, **plan.cache_extra())
        cached = cache.get(key)
        run.counts["requests_fetched"] += 1
        if cached is not None:
            replies[plan.index] = cached
            run.counts["requests_cached"] += 1
        else:
            todo.append((plan, key))
    if not todo:
        return replies
    if getattr(teacher, "completes_in_batches", False) and all(plan.prompt is not None for plan, _ in todo):
        return {**replies, **complete_in_batches(teacher, identity, cache, todo, run.counts, run.notify)}
    lock = threading.Lock()
    stop = threading.Event()  # set on the first failure: queued requests are then not sent

    def work(plan: PlannedRequest, key: str) -> str | None:
        if stop.is_set():
            return None
        try:
            reply = plan.send(teacher, run.config.pairs_per_request)
        except BaseException:
            stop.set()
            raise
        cache.put(key, reply, plan.cache_record(identity))
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
