"""Pure validators behind the asset checks: each returns a `Finding` with a count and examples."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from mt_assets.lib.data.text import is_blank, normalize_text, sentence_key

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """How many rows a validator flagged, out of how many, with a few examples."""

    count: int
    total: int
    examples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0


def _finding(frame: pd.DataFrame, mask: pd.Series, total: int | None = None) -> Finding:
    flagged = frame[mask]
    examples = flagged.head(MAX_EXAMPLES)[["pair_id", "source", "target"]].to_dict("records")
    return Finding(int(mask.sum()), len(frame) if total is None else total, examples)


def blank_text(frame: pd.DataFrame) -> Finding:
    """Rows whose source or target is empty or only whitespace (or invisible characters)."""
    mask = frame["source"].map(is_blank) | frame["target"].map(is_blank)
    return _finding(frame, mask)


def duplicate_pairs(frame: pd.DataFrame) -> Finding:
    """Rows repeating an earlier row's normalised source and target."""
    key = frame["source"].map(normalize_text) + "\t" + frame["target"].map(normalize_text)
    return _finding(frame, key.duplicated())


def source_equals_target(frame: pd.DataFrame) -> Finding:
    """Rows whose normalised source equals their normalised target (untranslated copies)."""
    mask = frame["source"].map(sentence_key) == frame["target"].map(sentence_key)
    return _finding(frame, mask)


def overlap(train: pd.DataFrame, test: pd.DataFrame) -> Finding:
    """Test rows whose pair, or whose source sentence, also occurs in the training table."""
    train_ids = set(train["pair_id"])
    train_sources = set(train["source"].map(sentence_key))
    mask = test["pair_id"].isin(train_ids) | test["source"].map(sentence_key).isin(train_sources)
    return _finding(test, mask)


def size_shortfall(frame: pd.DataFrame, expected: int) -> Finding:
    """A finding of `expected - len(frame)` missing rows (0 when the size was reached)."""
    return Finding(max(0, expected - len(frame)), expected)
