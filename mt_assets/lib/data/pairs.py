"""The parallel-pair table: its columns, its pandera schema and its stable pair id.

Every data asset (opus_sample, train_A, test_A, synth_B, combined_C) is one of these tables.
The schema is declared once here; the Dagster layer turns it into a Dagster type so the UI shows
the columns and a wrong table fails naming the column.
"""

from __future__ import annotations

import hashlib
import pandas as pd
import pandera.pandas as pa

from mt_assets.lib.data.text import is_blank, normalize_text

PAIR_COLUMNS = ["pair_id", "source", "target", "source_lang", "target_lang", "origin"]


def pair_id(source: str, target: str) -> str:
    """A stable id for a pair: the first 16 hex digits of SHA-256 over the normalised texts."""
    digest = hashlib.sha256(f"{normalize_text(source)}\t{normalize_text(target)}".encode("utf-8"))
    return digest.hexdigest()[:16]


def _non_blank(series: pd.Series) -> pd.Series:
    return ~series.map(is_blank)


PairSchema = pa.DataFrameSchema(
    {
        "pair_id": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{16}$"), description="Stable id: SHA-256 of the normalised source and target"),
        "source": pa.Column(str, pa.Check(_non_blank, error="source is empty or whitespace"),
                            description="Source-language sentence"),
        "target": pa.Column(str, pa.Check(_non_blank, error="target is empty or whitespace"),
                            description="Target-language sentence"),
        "source_lang": pa.Column(str, pa.Check.str_matches(r"^[a-z]{2,3}$"),
                                 description="ISO 639 code of the source language"),
        "target_lang": pa.Column(str, pa.Check.str_matches(r"^[a-z]{2,3}$"),
                                 description="ISO 639 code of the target language"),
        "origin": pa.Column(str, description="Where the pair came from, e.g. opus-100:de-fr:test"),
    },
    name="PairTable",
    strict=False,
    coerce=False,
)
"""Columns every pair table has. Extra columns (topic, split) are allowed. Duplicate pairs are
not a schema error: the duplicate_pairs asset check reports them with examples."""


def make_pairs(sources, targets, source_lang: str, target_lang: str, origin: str, **extra) -> pd.DataFrame:
    """Build a pair table from aligned source/target sequences, computing pair ids."""
    frame = pd.DataFrame({"source": list(sources), "target": list(targets)})
    frame.insert(0, "pair_id", [pair_id(s, t) for s, t in zip(frame["source"], frame["target"])])
    frame["source_lang"] = source_lang
    frame["target_lang"] = target_lang
    frame["origin"] = origin
    for name, values in extra.items():
        frame[name] = values
    return frame
