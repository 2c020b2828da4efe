"""The oracle teacher: real pairs from a held-out pool, disjoint from train_A and test_A."""

from __future__ import annotations

import pandas as pd

from mt_assets.lib.data.pairs import PAIR_COLUMNS
from mt_assets.lib.data.text import sentence_key

ORACLE_TOPIC = "unspecified"


class OracleTeacher:
    """Serves real pairs from ``pool`` that are disjoint from ``train`` and ``test``.

    Removed from the pool (and counted in ``excluded``): pairs whose id is in train or test, and
    pairs whose source or target (normalised, case-folded) occurs on either side of train or
    test. ``pairs(seed)`` is the rest in a seeded random order, with a ``topic`` column (the pool's,
    else "unspecified") and origin ``synthetic:oracle:<pool origin>``. This is the
    perfect-teacher upper bound: real human translations, labelled as such.
    """

    backend = "oracle"

    def __init__(self, pool: pd.DataFrame, *, train: pd.DataFrame, test: pd.DataFrame):
        missing = [c for c in PAIR_COLUMNS if c not in pool.columns]
        if missing:
            raise ValueError(f"oracle pool lacks column(s) {missing}; it must be a pair table (lib.data.pairs)")
        if pool.empty:
            raise ValueError("oracle pool is empty: point the oracle at a held-out corpus with pairs")
        langs = {(s, t) for s, t in zip(pool["source_lang"], pool["target_lang"])}
        wanted = {(s, t) for s, t in zip(train["source_lang"], train["target_lang"])}
        if len(wanted) == 1 and langs != wanted:
            raise ValueError(f"oracle pool languages {sorted(langs)} differ from train_A's {sorted(wanted)}")
        taken_ids = set(train["pair_id"]) | set(test["pair_id"])
        taken_texts: set[str] = set()
        for frame in (train, test):
            for column in ("source", "target"):
                taken_texts.update(map(sentence_key, frame[column]))
        by_id = pool["pair_id"].isin(taken_ids)
        by_text = ~by_id & (
            pool["source"].map(sentence_key).isin(taken_texts)
            | pool["target"].map(sentence_key).isin(taken_texts)
        )
        self.excluded = {"pool_rows": len(pool), "excluded_pair_in_train_or_test": int(by_id.sum()),
                         "excluded_text_in_train_or_test": int(by_text.sum())}
        eligible = pool[~by_id & ~by_text].reset_index(drop=True)
        self.excluded["eligible"] = len(eligible)
        self._eligible = eligible
        origins = sorted(set(eligible["origin"])) or sorted(set(pool["origin"]))
        self.model = "+".join(origins)

    def __repr__(self) -> str:
        return f"OracleTeacher(pool={self.model!r}, eligible={len(self._eligible)})"

    def pairs(self, seed: int) -> pd.DataFrame:
        """Every eligible pool pair in a seeded order, as a pair table with ``topic``."""
        frame = self._eligible.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        topic = frame["topic"] if "topic" in frame.columns else ORACLE_TOPIC
        out = frame[PAIR_COLUMNS].copy()
        out["origin"] = "synthetic:oracle:" + frame["origin"].astype(str)
        out["topic"] = topic
        return out
