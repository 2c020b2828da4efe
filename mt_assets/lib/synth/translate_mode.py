"""Translate mode (sequence-level distillation): the pool of source sentences the teacher translates,
minus every sentence of train_A and test_A, and the plan of its requests.

Request i asks for the translation of pool sentence i (the pool in a seeded order), with
``few_shot`` train_A pairs as examples in a plain-text prompt (``prompt.build_translation_prompt``);
the reply's first line is the translation (``parsing.parse_line``). Each request yields at most one
pair, so the pool must hold at least as many usable sentences as pairs are wanted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mt_assets.lib.data.text import is_blank, near_key, normalize_text, sentence_key
from mt_assets.lib.synth.planning import PlannedRequest, RequestPlanner, SynthConfig
from mt_assets.lib.synth.prompt import build_translation_prompt

TRANSLATE_TOPIC = "translation"
"""The topic column of translate-mode rows (they were not asked for on a topic)."""
POOL_SETTING = "synthesis.source_pool"
POOL_COUNTS = ("pool_rows", "pool_skipped", "pool_blank", "pool_excluded_same_as_train_or_test",
               "pool_excluded_near_train_or_test", "pool_duplicates", "pool_eligible")
"""The pool's counts in synth_B's report: rows read; rows the corpus reader passed over (other
language pair, ...); blank; the same sentence (``sentence_key``) as a source or target of train_A or
test_A; a near-duplicate (``near_key``) of one; a repeat of an earlier pool sentence; the rest."""


@dataclass(frozen=True)
class SourcePool:
    """The eligible pool sentences in a seeded order, their reference translations (None where the
    pool is monolingual), where they come from, and the counts of ``POOL_COUNTS``."""

    sentences: tuple[str, ...]
    references: tuple[str | None, ...]
    origin: str
    counts: dict = field(default_factory=dict)

    def require(self, target: int) -> None:
        """A clear error when fewer sentences are eligible than pairs are wanted."""
        if len(self.sentences) >= target:
            return
        c = self.counts
        raise ValueError(
            f"setting {POOL_SETTING} ({self.origin}) has {len(self.sentences)} usable sentences but "
            f"synthesis needs {target} (one pair per sentence): of its {c['pool_rows']} rows, "
            f"{c['pool_excluded_same_as_train_or_test']} are sentences of train_A or test_A, "
            f"{c['pool_excluded_near_train_or_test']} near-duplicates of them, {c['pool_duplicates']} "
            f"repeats, {c['pool_blank']} blank and {c['pool_skipped']} passed over by the reader. Point "
            f"{POOL_SETTING} at a larger held-out corpus, or lower synthesis.size / size_factor")

    def reference_table(self) -> pd.DataFrame:
        """Pool sentences and references as the oracle serves them; an error without references."""
        if any(ref is None for ref in self.references):
            raise ValueError(
                f"the oracle teacher in translate mode serves the reference translations of setting "
                f"{POOL_SETTING}, but {self.origin} has no target side: use a parallel corpus there, or "
                "another teacher")
        return pd.DataFrame({"source": self.sentences, "target": self.references, "topic": TRANSLATE_TOPIC,
                             "origin": f"synthetic:oracle:{self.origin}"})


def eligible_sources(rows: Iterable[tuple[str, str | None]], train: pd.DataFrame, test: pd.DataFrame,
                     seed: int, origin: str, skipped: int = 0) -> SourcePool:
    """The pool's (source, reference or None) rows minus blank ones, repeats and every sentence of
    train_A and test_A (either side, as ``sentence_key`` or ``near_key``), normalised, in an order
    seeded by ``seed``; every exclusion is counted."""
    same: set[str] = set()
    near: set[str] = set()
    for frame in (train, test):
        for column in ("source", "target"):
            same.update(map(sentence_key, frame[column]))
            near.update(k for k in map(near_key, frame[column]) if k)
    counts: Counter = Counter(pool_skipped=skipped)
    kept: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for source, reference in rows:
        counts["pool_rows"] += 1
        text = normalize_text(source)
        key = sentence_key(text)
        if is_blank(text):
            counts["pool_blank"] += 1
        elif key in same:
            counts["pool_excluded_same_as_train_or_test"] += 1
        elif near_key(text) and near_key(text) in near:
            counts["pool_excluded_near_train_or_test"] += 1
        elif key in seen:
            counts["pool_duplicates"] += 1
        else:
            seen.add(key)
            kept.append((text, None if reference is None else normalize_text(reference)))
    order = np.random.default_rng(seed).permutation(len(kept))
    counts["pool_eligible"] = len(kept)
    return SourcePool(tuple(kept[i][0] for i in order), tuple(kept[i][1] for i in order), origin,
                      {k: int(counts[k]) for k in POOL_COUNTS})


class TranslationPlanner(RequestPlanner):
    """Plans translate-mode request i: pool sentence i with train_A examples, seed ``seed + i``."""

    def __init__(self, train: pd.DataFrame, config: SynthConfig, source_lang: str, target_lang: str,
                 pool: SourcePool):
        super().__init__(train, config, source_lang, target_lang)
        self.pool = pool

    def plan(self, index: int) -> PlannedRequest:
        source = self.pool.sentences[index]
        examples = self.examples(index)
        prompt, stop = build_translation_prompt(source_lang=self.source_lang, target_lang=self.target_lang,
                                                sentence=source, examples=examples)
        return PlannedRequest(index, TRANSLATE_TOPIC, self.config.seed + index, examples, (), source=source,
                              prompt=prompt, stop=tuple(stop))


COMPLETION_BATCH = 64
"""Translate-mode prompts a batching teacher answers at once (each batch's replies are cached as it ends)."""


def complete_in_batches(teacher, identity: dict, cache, todo: list[tuple[PlannedRequest, str]], counts: Counter,
                        notify) -> dict[int, str]:
    """Replies to translate-mode requests `todo` ((plan, cache key) pairs) from a teacher that completes
    many prompts in one call (``completes_in_batches``: the in-process model decoding greedily, where a
    request's seed changes nothing), COMPLETION_BATCH at a time, each reply cached as its batch ends."""
    replies = {}
    for start in range(0, len(todo), COMPLETION_BATCH):
        chunk = todo[start:start + COMPLETION_BATCH]
        texts = teacher.complete_many([plan.prompt for plan, _ in chunk], stop=list(chunk[0][0].stop))
        for (plan, key), text in zip(chunk, texts, strict=True):
            cache.put(key, text, plan.cache_record(identity))
            replies[plan.index] = text
        counts["requests_sent"] += len(chunk)
        notify()
    return replies
