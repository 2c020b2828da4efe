"""Quality filters of synthetic pairs (``FilterConfig``, ``PairFilter``) and the contamination check
against test_A. Sentences are compared by the keys of ``lib.data.text``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from mt_assets.lib.data import langid
from mt_assets.lib.data.text import is_blank, near_key, normalize_text, sentence_key
from mt_assets.lib.data.validators import MAX_EXAMPLES, Finding
from mt_assets.lib.synth.prompt import iso639_1

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
    Duplicates are judged on the source sentence (exact: ``sentence_key``; near: ``near_key``);
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
        self.train_exact = set(map(sentence_key, train["source"]))
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
        exact = sentence_key(source)
        if exact in self.train_exact:
            return "duplicate_train_exact"
        if source_key and source_key in self.train_near:
            return "duplicate_train_near"
        if exact in self.seen_exact:
            return "duplicate_within_exact"
        if source_key and source_key in self.seen_near:
            return "duplicate_within_near"
        return None

    def check(self, source: str, target: str) -> str | None:
        """Why the (normalised) pair is dropped, or None if kept (and then remembered)."""
        source, target = normalize_text(source), normalize_text(target)
        reason = self._reason(source, target)
        if reason is None:
            self.seen_exact.add(sentence_key(source))
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
