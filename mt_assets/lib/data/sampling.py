"""Cleaning, de-duplication, seeded sampling and the seeded train/test split.

Everything a step removes is counted in its report; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import html
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from mt_assets.lib.data.corpus import LINE_BREAKS, CorpusError, RawPair
from mt_assets.lib.data.pairs import make_pairs, pair_id
from mt_assets.lib.data.text import is_blank, normalize_text, sentence_key

_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")
_MAX_UNESCAPES = 3
"""Entities are decoded until none is left, at most this often (OPUS has ``&amp;quot;``)."""


def clean_text(text: str, counts: Counter) -> str:
    """Remove NUL bytes and byte-order marks (left inside text when files are concatenated),
    decode HTML entities (OPUS has many: ``&quot;``, even ``&amp;quot;``), fold whitespace.

    Line breaks inside a sentence (a lone CR, form feed, U+2028, ...: readers split lines at LF
    only) become spaces, counted as ``line_breaks_replaced``."""
    if any(mark in text for mark in LINE_BREAKS):
        counts["line_breaks_replaced"] += 1
    if "\x00" in text:
        counts["nul_bytes_removed"] += 1
        text = text.replace("\x00", "")
    if "\ufeff" in text:
        counts["byte_order_marks_removed"] += 1
        text = text.replace("\ufeff", "")
    if "&" in text and _ENTITY.search(text):
        counts["html_entities_decoded"] += 1
        for _ in range(_MAX_UNESCAPES):
            text = html.unescape(text)
            if "&" not in text or not _ENTITY.search(text):
                break
    return normalize_text(text)


def clean_rows(rows: Iterable[RawPair], counts: Counter, exclude_ids: frozenset[str] = frozenset(),
               max_chars: int | None = None) -> Iterator[tuple[int, str, str]]:
    """Clean rows and yield ``(row, source, target)`` for the usable ones, counting the rest.

    Dropped (and counted): rows a reader skipped, pairs blank on either side, pairs whose source
    equals their target, excluded pair ids, pairs with a side longer than `max_chars` characters,
    and repeats of an earlier source sentence (so no test source can reappear in training with
    another translation).
    """
    seen_sources: set[int] = set()
    for raw in rows:
        counts["rows_read"] += 1
        if raw.skipped:
            counts[f"skipped: {raw.skipped}"] += 1
            continue
        source, target = clean_text(raw.source, counts), clean_text(raw.target, counts)
        if is_blank(source) or is_blank(target):
            counts["dropped: blank text"] += 1
            continue
        if source == target:
            counts["dropped: source identical to target"] += 1
            continue
        if max_chars is not None and max(len(source), len(target)) > max_chars:
            counts["dropped: longer than max_chars"] += 1
            continue
        if exclude_ids and pair_id(source, target) in exclude_ids:
            counts["dropped: excluded pair"] += 1
            continue
        key = int.from_bytes(hashlib.blake2b(sentence_key(source).encode(), digest_size=8).digest())
        if key in seen_sources:
            counts["dropped: repeated source sentence"] += 1
            continue
        seen_sources.add(key)
        counts["usable_pairs"] += 1
        yield raw.row, source, target


def all_pairs(rows: Iterable[RawPair], source_lang: str, target_lang: str, origin: str) -> tuple[pd.DataFrame, dict]:
    """Every usable pair of a corpus, cleaned like a sample, in corpus order."""
    counts: Counter = Counter()
    kept = list(clean_rows(rows, counts))
    return _table(kept, source_lang, target_lang, origin), dict(counts)


def sample_pairs(rows: Iterable[RawPair], size: int, seed: int, source_lang: str, target_lang: str,
                 origin: str, exclude_ids: frozenset[str] = frozenset(),
                 max_chars: int | None = None) -> tuple[pd.DataFrame, dict]:
    """A seeded uniform sample of `size` distinct, clean pairs (see `clean_rows`), in one pass.

    Reservoir sampling keeps memory at `size` rows plus one hash per distinct source, so a corpus
    of any length streams through. The result is in corpus order.
    """
    if size < 1:
        raise CorpusError(f"sample size must be at least 1, got {size} (setting experiment.sample_size)")
    rng = random.Random(seed)
    counts: Counter = Counter()
    reservoir: list[tuple[int, str, str]] = []
    for usable, row in enumerate(clean_rows(rows, counts, exclude_ids, max_chars), start=1):
        if len(reservoir) < size:
            reservoir.append(row)
        else:
            slot = rng.randrange(usable)
            if slot < size:
                reservoir[slot] = row
    counts.setdefault("usable_pairs", 0)
    if counts["usable_pairs"] < size:
        raise CorpusError(
            f"{origin} has only {counts['usable_pairs']} usable pairs after cleaning ({_describe(counts)}), but "
            f"the sample size is {size}: lower setting experiment.sample_size or use a larger corpus"
        )
    reservoir.sort()
    return _table(reservoir, source_lang, target_lang, origin), dict(counts)


def _table(rows: list[tuple[int, str, str]], source_lang: str, target_lang: str, origin: str) -> pd.DataFrame:
    return make_pairs([r[1] for r in rows], [r[2] for r in rows], source_lang, target_lang, origin,
                      corpus_row=[r[0] for r in rows])


def _describe(counts: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def split_train_test(sample: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded split; the test share is rounded and each side keeps at least one pair."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must be between 0 and 1, got {test_fraction} (setting experiment.test_fraction)")
    if len(sample) < 2:
        raise ValueError(f"cannot split {len(sample)} pair(s) into train and test; raise setting experiment.sample_size")
    order = np.random.default_rng(seed).permutation(len(sample))
    n_test = min(max(1, round(len(sample) * test_fraction)), len(sample) - 1)
    test = sample.iloc[np.sort(order[:n_test])].reset_index(drop=True)
    train = sample.iloc[np.sort(order[n_test:])].reset_index(drop=True)
    return train, test
