"""The worked examples of the few-shot baseline: a seeded draw from the training table, never a test pair."""

from __future__ import annotations

import pandas as pd

from mt_assets.lib.data.text import sentence_key


def draw_examples(train: pd.DataFrame, test: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """`k` rows of `train` (pair_id, source, target) drawn with `seed`, in draw order; empty for k=0.

    Raises ValueError when `train` has fewer than `k` pairs (setting evaluation.fewshot_k), or when an
    example shares its pair_id, or its source or target sentence (lib.data.text.sentence_key), with a
    test pair: a model shown a test sentence's translation would score on what it was told."""
    if k == 0:
        return train.iloc[:0][["pair_id", "source", "target"]]
    if k > len(train):
        raise ValueError(f"evaluation.fewshot_k is {k} but train_A has {len(train)} pairs: lower the setting")
    examples = train.sample(n=k, random_state=seed)[["pair_id", "source", "target"]].reset_index(drop=True)
    check_not_from_test(examples, test)
    return examples


def check_not_from_test(examples: pd.DataFrame, test: pd.DataFrame) -> None:
    """Raise ValueError naming the examples that are test pairs, or share a sentence with one."""
    test_ids = set(test["pair_id"])
    test_keys = {sentence_key(t) for t in (*test["source"], *test["target"])}
    leaked = [row.pair_id for row in examples.itertuples()
              if row.pair_id in test_ids or sentence_key(row.source) in test_keys
              or sentence_key(row.target) in test_keys]
    if leaked:
        raise ValueError(f"few-shot examples {', '.join(leaked)} are, or share a sentence with, test_A pairs: "
                         "train_A and test_A overlap; materialize train_A and test_A again from one opus_sample")


def example_pairs(examples: pd.DataFrame) -> list[tuple[str, str]]:
    """The (source, target) pairs a prompt shows, in order."""
    return list(zip(examples["source"], examples["target"]))
